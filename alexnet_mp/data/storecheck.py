"""Every file of a prepared store checked when it opens, from sizes and headers.

A store damaged by a full disk, a copy cut short or a stray edit fails here,
with the file and the command that rebuilds it, not halfway through an epoch.
The layout is documented in `alexnet_mp.data` (its package docstring). Re-running tools/prepare_data.py
on the same source repairs a damaged split (`alexnet_mp.data.prepare` checks it the
same way and converts it again).
"""
import json
import os
import zipfile

import numpy as np

from alexnet_mp.errors import StoreError

IMAGE_BYTES = 256 * 256 * 3     # one stored image, data.SIZE x data.SIZE x 3 uint8
FORMATS = ("raw", "jpeg")
TODO, DONE, FAILED = 0, 1, 2    # status.u8 values
JPEG_SOI, JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
HEADER_SAMPLES = 64             # jpeg images whose markers are read at open (all would read the whole file)
# classes.json's record that every image was stored with its EXIF orientation applied
# (`images.upright`); a store prepared before that has none, and keeps working.
ORIENTED = "exif_orientation"


def _load_json(path):
    with open(path, "rb") as f:
        return json.loads(f.read())


def _checked_json(path, root):
    """A store's JSON file, or one line naming it and the command that rebuilds the store."""
    try:
        return _load_json(path)
    except ValueError as e:
        raise broken(path, f"is corrupt ({type(e).__name__})", root) from None


def rebuild(root):
    """The command that rebuilds the store at `root` (its source, when classes.json records it)."""
    src, flag = "SRC", ""
    try:
        meta = _load_json(os.path.join(root, "classes.json"))
        src = meta.get("source") or src
        # A split made by prepare's flags is made again only with them.
        if isinstance(meta.get("val_split"), dict):
            flag = f" --val-split {meta['val_split'].get('fraction')}"
        elif meta.get("no_val") is True:
            flag = " --no-val"
        given = meta.get("prepared_with") if isinstance(meta.get("prepared_with"), dict) else {}
        if given.get("format") not in (None, "raw"):
            flag += f" --format {given['format']}"
        flag += "".join(f" --{k} {given[k]}" for k in ("labels", "names") if given.get(k))
    except (OSError, ValueError, AttributeError):
        pass
    return f"`python tools/prepare_data.py {src} {root}{flag}`"


def broken(path, problem, root):
    error = StoreError(f"{path} {problem}: rebuild the store with {rebuild(root)}")
    error.problem = f"{path} {problem}"      # for prepare's own log, which is that rebuild
    return error


def read_classes(store):
    """classes.json: {"classes": [folder names], "names": {folder: human name}, "source": SRC,
    ORIENTED: true}."""
    path = os.path.join(store, "classes.json")
    if not os.path.isfile(path):
        if os.path.isdir(store) and any(os.path.isdir(os.path.join(store, d)) for d in os.listdir(store)):
            if not os.path.isfile(os.path.join(store, "train", "index.json")):
                raise StoreError(f"{store} is not a prepared store (no classes.json): prepare it with "
                                 f"`python tools/prepare_data.py {store} PREPARED_DIR`")
            raise broken(path, "is missing", store)
        raise StoreError(f"no prepared store at {store}: make one with "
                         f"`python tools/prepare_data.py IMAGE_DIR {store}`")
    meta = _checked_json(path, store)
    classes = meta.get("classes") if isinstance(meta, dict) else None
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)
            and isinstance(meta.get("names", {}), dict)):
        raise broken(path, "has no list of class names", store)
    return meta


def read_split(root, split, num_classes):
    """(index dict, status array) of one split, after checking every file against the others."""
    folder = os.path.join(root, split)
    index_path = os.path.join(folder, "index.json")
    if not os.path.isfile(index_path):
        raise StoreError(f"split '{split}' is missing from the store {root} (no {index_path}): "
                         f"prepare it again from a source that has a {split}/ folder"
                         + (", or with --val-split 0.1 to hold out a tenth of each class" if split == "val" else ""))
    index = _checked_json(index_path, root)
    files, labels = (index.get("files"), index.get("labels")) if isinstance(index, dict) else (None, None)
    if not (isinstance(files, list) and isinstance(labels, list) and len(files) == len(labels)
            and index.get("format", "raw") in FORMATS):
        raise broken(index_path, "is not a store index (files, labels, format)", root)
    if labels and not (all(isinstance(v, int) for v in labels) and 0 <= min(labels) and max(labels) < num_classes):
        raise broken(index_path, f"has labels outside the {num_classes} classes of classes.json", root)
    total = len(files)
    status_path = os.path.join(folder, "status.u8")
    _expect_size(status_path, total, f"{total} images", root)
    status = np.fromfile(status_path, dtype=np.uint8)
    if status.size and status.max() > FAILED:
        raise broken(status_path, f"holds the value {int(status.max())} (0, 1 or 2 expected)", root)
    if index.get("format", "raw") == "raw":
        _expect_size(os.path.join(folder, "images.u8"), total * IMAGE_BYTES, f"{total} images of 256x256x3", root)
    else:
        _check_jpeg(folder, root, status)
    return index, status


def _expect_size(path, size, what, root):
    if not os.path.isfile(path):
        raise broken(path, "is missing", root)
    found = os.path.getsize(path)
    if found != size:
        problem = "is truncated" if found < size else "is longer than expected"
        raise broken(path, f"{problem} ({found} bytes; {size} for {what})", root)


def _check_jpeg(folder, root, status):
    offsets_path, data_path = os.path.join(folder, "offsets.i64"), os.path.join(folder, "images.jpg")
    _expect_size(offsets_path, status.size * 16, f"{status.size} (offset, length) pairs", root)
    if not os.path.isfile(data_path):
        raise broken(data_path, "is missing", root)
    offsets = np.fromfile(offsets_path, np.int64).reshape(-1, 2)[status == DONE]
    size = os.path.getsize(data_path)
    start, length = offsets[:, 0], offsets[:, 1]
    bad = np.flatnonzero((start < 0) | (length < 4) | (start + length > size))
    if bad.size:
        raise broken(data_path, f"is truncated or out of step with offsets.i64 ({bad.size} images "
                                f"end past its {size} bytes)", root)
    if not len(offsets):
        return
    picks = np.unique(np.linspace(0, len(offsets) - 1, min(HEADER_SAMPLES, len(offsets))).astype(np.int64))
    with open(data_path, "rb") as f:
        for s, n in offsets[picks]:
            f.seek(int(s))
            head = f.read(2)
            f.seek(int(s + n - 2))
            if head != JPEG_SOI or f.read(2) != JPEG_EOI:
                raise broken(data_path, f"holds no JPEG image at byte {int(s)} (where offsets.i64 "
                                        f"points)", root)


def read_stats(root):
    """(mean image HxWx3 float64, eigenvalues (3,), eigenvectors (3, 3)) from train/stats.npz, checked."""
    path = os.path.join(root, "train", "stats.npz")
    if not os.path.isfile(path):
        raise StoreError(f"missing statistics {path}: re-run {rebuild(root)} "
                         f"with the training images to compute them")
    try:
        with np.load(path) as stats:
            mean, eigval, eigvec = stats["mean"], stats["eigval"], stats["eigvec"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise broken(path, f"is corrupt ({type(e).__name__})", root) from None
    if mean.shape != (256, 256, 3) or eigval.shape != (3,) or eigvec.shape != (3, 3) or \
            not all(np.isfinite(a).all() for a in (mean, eigval, eigvec)):
        raise broken(path, "holds statistics of the wrong shape or non-finite values", root)
    return mean, eigval, eigvec
