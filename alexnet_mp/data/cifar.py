"""CIFAR-10 and CIFAR-100 as their python archives hold them, read without torchvision.

The archives (cifar-10-batches-py/, cifar-100-python/) are Python 2 pickles of
dicts: `data` an N x 3072 uint8 array, each row the R, G and B planes of a 32x32
image in row-major order; `labels` (CIFAR-10) or `fine_labels` and
`coarse_labels` (CIFAR-100); the class names in `batches.meta` (`label_names`)
or `meta` (`fine_label_names`, `coarse_label_names`). torchvision's CIFAR
classes also check the official files' md5 sums, and so refuse the many sets
published in the same format; this reader checks shapes and labels instead.

A pickle runs whatever code it names when loaded, so the reader accepts only the
few numpy constructors that an array needs: a foreign pickle is refused unread.
A stored image is named `<pickle file>:<row>`, so the store's report and
predictions point at the row it came from.
"""
import codecs
import os
import pickle

import numpy as np
from PIL import Image

from alexnet_mp.errors import StoreError

ROW = 32 * 32 * 3
LAYOUTS = {
    # folder marker: (name, training files, val files, meta file, label key, names key)
    "batches.meta": ("CIFAR-10", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta",
                     "labels", "label_names"),
    "meta": ("CIFAR-100", ["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
}
# What an array's pickle names, and nothing else: numpy's reconstructors (Python 2's, and
# protocol 5's `_frombuffer`), the array and dtype types, and the codec that Python 3's
# protocol 2 writes bytes with (for the CIFAR-format sets others publish).
_SAFE = {"_reconstruct": np.array(0).__reduce__()[0], "ndarray": np.ndarray, "dtype": np.dtype,
         "_frombuffer": lambda buf, dtype, shape, order: np.frombuffer(buf, dtype).reshape(shape, order=order),
         "encode": codecs.encode}
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR archive never does")
        return _SAFE[name]


def _text(v):
    """A key or name as str: re-pickled archives carry bytes where CIFAR's carry str."""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def load(path):
    """The dict in one archive file, with str keys; any problem is one line naming the file."""
    try:
        with open(path, "rb") as f:
            # latin1: Python 2's byte strings come back as str, and numpy reads an array's
            # raw bytes from them (numpy's own advice for Python 2 pickles).
            data = _ArraysOnly(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise StoreError(f"{path} is not a readable CIFAR pickle ({type(e).__name__}: {e}): download the "
                         f"archive again, or check it is the python version of CIFAR") from None
    if not isinstance(data, dict):
        raise StoreError(f"{path} holds a {type(data).__name__}, not a CIFAR dict: pass the folder of the "
                         f"python version of CIFAR")
    return {_text(k): v for k, v in data.items()}


def detect(src):
    """The layout's row of LAYOUTS if `src` is a CIFAR python folder, else None; one with an
    archive file missing is an error naming it (not a tree of some other kind)."""
    for marker, row in LAYOUTS.items():
        files = [os.path.isfile(os.path.join(src, f)) for f in row[1] + row[2]]
        # CIFAR-100's "meta" is a common name: its folder is CIFAR's only with a train or test file too.
        if os.path.isfile(os.path.join(src, marker)) and (marker == "batches.meta" or any(files)):
            if not all(files):
                missing = (row[1] + row[2])[files.index(False)]
                raise StoreError(f"{src} is {row[0]}'s python archive without its file {missing}: extract the "
                                 f"archive again")
            return row
    return None


def _names(src, meta_file, key):
    meta = load(os.path.join(src, meta_file))
    names = meta.get(key)
    names = [_text(n) for n in names] if isinstance(names, list) else names
    if not (isinstance(names, list) and names and all(isinstance(n, str) and n for n in names)
            and len(set(names)) == len(names)):
        raise StoreError(f"{os.path.join(src, meta_file)} has no list of distinct names under '{key}': "
                         f"download the archive again")
    return names


def _labels(path, data, key, count):
    """The label list of one archive file, checked against its data and the class count."""
    images, labels = data.get("data"), data.get(key)
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 2
            and images.shape[1] == ROW and len(images)):
        shape = getattr(images, "shape", None)
        raise StoreError(f"{path}: 'data' is not an N x {ROW} uint8 array with N > 0 (found {shape}): download "
                         f"the archive again")
    if not (isinstance(labels, list) and len(labels) == len(images)
            and all(isinstance(v, int) and 0 <= v < count for v in labels)):
        raise StoreError(f"{path}: '{key}' is not {len(images)} labels in 0..{count - 1}: download the "
                         f"archive again")
    return labels


def scan(src):
    """(layout name, classes, {split: (files, labels)}, extra classes.json fields, files used).

    Classes are keyed by their names and sorted, as every other tree's folders are;
    CIFAR-100 keeps each fine class's coarse class in the store's metadata."""
    layout, train_files, val_files, meta_file, label_key, names_key = detect(src)
    names = _names(src, meta_file, names_key)
    classes = sorted(names)
    to_sorted = [classes.index(n) for n in names]
    splits, coarse = {}, {}
    # The coarse classes are kept where the archive has them; the fine labels alone make the store.
    coarse_names = (_names(src, meta_file, "coarse_label_names")
                    if layout == "CIFAR-100" and "coarse_label_names" in load(os.path.join(src, meta_file)) else None)
    for split, archive in (("train", train_files), ("val", val_files)):
        files, labels = [], []
        for name in archive:
            path = os.path.join(src, name)
            data = load(path)
            rows = _labels(path, data, label_key, len(names))
            files += [f"{name}:{i}" for i in range(len(rows))]
            labels += [to_sorted[v] for v in rows]
            if coarse_names and "coarse_labels" in data:
                for fine, big in zip(rows, _labels(path, data, "coarse_labels", len(coarse_names))):
                    coarse.setdefault(names[fine], coarse_names[big])
        splits[split] = (files, labels)
    extra = {"coarse_classes": coarse} if coarse else {}
    return layout, classes, splits, extra, [meta_file] + train_files + val_files


_cache = {}


def image(root, ref):
    """The 32x32 RGB image `ref` = `<archive file>:<row>` under `root`, as PIL reads a file.
    A worker converts many rows of one file: the last file read is kept."""
    name, _, row = ref.rpartition(":")
    path = os.path.join(root, name)
    if path not in _cache:
        _cache.clear()
        _cache[path] = load(path)["data"]
    planes = _cache[path][int(row)].reshape(3, 32, 32)
    return Image.fromarray(np.ascontiguousarray(planes.transpose(1, 2, 0)), "RGB")
