"""The pieces of a source tree that prepare reads: class folders, label files, a held-out split.

Each reader checks what it reads and names the file and line of any problem, so a
bad source is one line before the store is touched (`alexnet_mp.data.layouts`
calls them in the order a layout needs).
"""
import csv
import hashlib
import os

from alexnet_mp.data.images import IMAGE_EXTENSIONS
from alexnet_mp.errors import StoreError

# Kaggle's ImageNet val labels: `ImageId,PredictionString`, the ImageId without its
# extension, the string "wnid x0 y0 x1 y1 [wnid x0 ...]" (one box per object).
LOC_HEADER = ("imageid", "predictionstring")


def loose(root, where):
    """What lies in `root` beside its class folders (files, hidden or archiver folders), each
    named with `where` before it, for the not-used line."""
    classes = set(subfolders(root))
    return [os.path.join(where, e) + ("/" if os.path.isdir(os.path.join(root, e)) else "")
            for e in sorted(os.listdir(root)) if e not in classes]


def is_image(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def is_metadata(name):
    """A folder that a file browser or an archiver made, never a class: `.ipynb_checkpoints`,
    `.DS_Store`-style hidden entries, and the `__MACOSX` folder of a zip made on a Mac."""
    return name.startswith(".") or name == "__MACOSX"


def subfolders(root):
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not is_metadata(d))


def scan_folders(root):
    """(classes, files relative to root, labels, skipped) of an ImageFolder tree; `skipped`
    names what was not read inside the class folders: non-image files, and hidden or archiver
    folders (with a trailing /). `loose` names what lies beside them."""
    classes = subfolders(root)
    if not classes:
        raise StoreError(f"{root} has no class folders: expected {root}/<class>/<image> "
                         f"(or a flat folder with --labels CSV)")
    files, labels, skipped = [], [], []
    for label, name in enumerate(classes):
        found = 0
        # Links are followed, as torchvision's ImageFolder follows them: a class folder that
        # links in more images holds them.
        walked = []
        for dirpath, dirs, names in os.walk(os.path.join(root, name), followlinks=True):
            skipped += [os.path.relpath(os.path.join(dirpath, d), root) + "/" for d in dirs if is_metadata(d)]
            dirs[:] = [d for d in dirs if not is_metadata(d)]
            walked.append((dirpath, names))
        for dirpath, names in sorted(walked):
            for f in sorted(names):
                rel = os.path.relpath(os.path.join(dirpath, f), root)
                if is_image(f):
                    files.append(rel)
                    labels.append(label)
                    found += 1
                else:
                    skipped.append(rel)
        if not found:
            raise StoreError(f"class folder {os.path.join(root, name)} has no images: "
                             f"add images or remove the folder")
    return classes, files, labels, skipped


def text_lines(path, what):
    """(line number, text) of a UTF-8 file; a line that is not UTF-8 is an error naming it."""
    with open(path, "rb") as f:
        data = f.read()
    for n, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").splitlines(), 1):
        try:
            yield n, raw.decode("utf-8")
        except UnicodeDecodeError:
            raise StoreError(f"{path} line {n} is not UTF-8 text ({raw[:40]!r}): save the {what} "
                             f"as UTF-8") from None


def _image_named(root, stem):
    """The file in `root` whose name is `stem` plus an image extension, or None."""
    for ext in (".JPEG", ".jpeg", ".jpg", ".JPG", ".png", ".PNG"):
        if os.path.isfile(os.path.join(root, stem + ext)):
            return stem + ext
    return None


def _label_rows(labels_csv):
    """(line number, file name or None, class, raw line, is_loc) of a labels CSV: `filename,class`
    rows, or Kaggle's LOC_val_solution.csv (told apart by its header)."""
    loc = False
    for n, line in text_lines(labels_csv, "--labels CSV"):
        row = next(csv.reader([line]), [])
        if not row or not "".join(row).strip():
            continue
        if n == 1 and tuple(c.strip().lower() for c in row[:2]) == LOC_HEADER:
            loc = True
            continue
        if n == 1 and row[0].strip().lower() in ("filename", "file", "image"):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            yield n, None, None, line, loc
        else:
            yield n, row[0].strip(), row[1].split()[0] if loc else row[1].strip(), line, loc


def label_files(rows, classes, not_a_class, fix_missing):
    """(files, labels) from label rows (line number, where, name as written, class, the file found
    or None, its path): an unknown class, a missing file or a file listed twice is an error
    naming the row; `not_a_class(cls, name)` and `fix_missing` word the first two for the file."""
    index = {c: i for i, c in enumerate(classes)}
    files, labels, seen = [], [], {}
    for n, where, name, cls, found, path in rows:
        if cls not in index:
            raise StoreError(f"{where}: {not_a_class(cls, name)}")
        if found is None:
            raise StoreError(f"{where}: {path} does not exist: {fix_missing}")
        if found in seen:
            raise StoreError(f"{where}: {name} is listed again (first on line {seen[found]}): remove one row")
        seen[found] = n
        files.append(found)
        labels.append(index[cls])
    return files, labels


def scan_flat(root, labels_csv, classes):
    """Files of a flat folder labelled by a CSV of `filename,class` (or Kaggle's
    `ImageId,PredictionString`); a bad row is an error naming it."""
    def rows():
        for n, name, cls, line, loc in _label_rows(labels_csv):
            where = f"--labels {labels_csv} line {n}"
            if name is None:
                form = "'ImageId,PredictionString'" if loc else "'filename,class'"
                raise StoreError(f"{where} ({line.strip()!r}) is not a {form} row: fix or remove it")
            found = _image_named(root, name) if loc else (name if os.path.isfile(os.path.join(root, name)) else None)
            yield n, where, name, cls, found, os.path.join(root, name) + (".JPEG" if loc else "")

    files, labels = label_files(rows(), classes,
                                lambda cls, name: f"class '{cls}' of {name} is not a class folder of train/: fix "
                                                  f"the row, or check the CSV belongs to this tree",
                                "fix the file name or remove the row")
    if not files:
        raise StoreError(f"--labels {labels_csv} has no 'filename,class' rows: it must label the images "
                         f"in {root}")
    return files, labels


def unlabelled(root, files, where):
    """The not-used line for images in the flat folder `root` that no label row names, or None."""
    listed = set(files)
    left = sorted(f for f in os.listdir(root) if is_image(f) and f not in listed)
    return f"{len(left)} images in {where} with no label row (e.g. {left[0]})" if left else None


def read_names(names_file):
    """{folder: human name} from lines '<folder> <name>' (or tab-separated, or 'folder, name')."""
    names = {}
    for _, line in text_lines(names_file, "--names file"):
        parts = line.strip().split(None, 1) if "\t" not in line else line.strip().split("\t", 1)
        if len(parts) == 2:
            names[parts[0].rstrip(",")] = parts[1]
    return names


def holdout_share(rel):
    """Where the file at `rel` (relative to the class folders' parent) falls in [0, 1): the first
    8 bytes of its path's SHA-1. It depends on that path alone, so files added later never
    move an earlier one between train and val."""
    digest = hashlib.sha1(os.fsencode(rel)).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


HOLDOUT_RULE = ("val if the first 8 bytes of SHA-1(<class>/<file>, the path under the class folders' parent) "
                "/ 2^64 < fraction")


def hold_out(classes, files, labels, fraction, root):
    """(train files, train labels, val files, val labels): about `fraction` of each class to val
    by `holdout_share`; a class left with no image on either side is an error naming it."""
    if not 0 < fraction < 1:
        raise StoreError(f"--val-split {fraction} is outside (0, 1): pass a fraction such as 0.1")
    sides = {"train": ([], []), "val": ([], [])}
    for f, v in zip(files, labels):
        side = sides["val" if holdout_share(f) < fraction else "train"]
        side[0].append(f)
        side[1].append(v)
    for split, (_, got) in sides.items():
        missing = sorted(set(range(len(classes))) - set(got))
        if missing:
            c = classes[missing[0]]
            n = labels.count(missing[0])
            raise StoreError(f"--val-split {fraction} leaves class {c} ({n} images in "
                             f"{os.path.join(root, c)}) with no {split} image"
                             f"{'' if len(missing) == 1 else f' (and {len(missing) - 1} more classes)'}: "
                             f"{'raise' if split == 'val' else 'lower'} the fraction, or add images to it")
    return (*sides["train"], *sides["val"])
