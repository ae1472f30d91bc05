"""The datasets users bring, recognised from their files, as a list of images per split.

`read_source` looks at SRC and takes it for one of these, in this order:

* CIFAR-10 / CIFAR-100, the python archives (`alexnet_mp.data.cifar`);
* Kaggle's ImageNet: `ILSVRC/Data/CLS-LOC/{train,val,test}` beside `LOC_val_solution.csv`
  and `LOC_synset_mapping.txt` (SRC its top folder, or CLS-LOC itself);
* TinyImageNet-200: `wnids.txt`, `words.txt`, `train/<wnid>/images/`, `val/images/` with
  `val/val_annotations.txt`;
* an ImageNet-style tree: `train/<class>/`, and `val/`, `valid/` or `validation/` (class
  folders, or flat with a labels CSV); a `test/` of class folders is a third split;
* class folders with no split, which need `--val-split F` (or `--no-val`).

Every problem is found here, before the store is touched, and every top-level entry
that is not read is named in what prepare prints: nothing is dropped silently.
Class keys are folder names (or wnids, or CIFAR's names), sorted, as torchvision's
ImageFolder numbers them.
"""
import os
from dataclasses import dataclass, field

from alexnet_mp.data import cifar
from alexnet_mp.data.images import IMAGE_EXTENSIONS
from alexnet_mp.data.sources import (HOLDOUT_RULE, hold_out, is_image, label_files, loose, read_names,
                                     scan_flat, scan_folders, subfolders, text_lines, unlabelled)
from alexnet_mp.errors import StoreError

VAL_FOLDERS = ("val", "valid", "validation")
LOC_SOLUTION, LOC_NAMES = "LOC_val_solution.csv", "LOC_synset_mapping.txt"
CLS_LOC = os.path.join("ILSVRC", "Data", "CLS-LOC")


@dataclass
class Split:
    root: str                   # the folder the files are relative to
    files: list
    labels: list
    kind: str = "files"         # "files": image files; "cifar": `<archive>:<row>` rows of a CIFAR pickle


@dataclass
class Source:
    layout: str                 # what SRC was taken for, in words
    classes: list
    splits: dict                # {split: Split}
    labels_from: dict           # {split: where its labels came from, in words}
    names: dict = field(default_factory=dict)
    unused: list = field(default_factory=list)      # "entry (why)", for the user
    extra: dict = field(default_factory=dict)       # more fields for classes.json
    skipped: list = field(default_factory=list)     # non-image files inside the class folders

    def summary(self, src):
        said = "; ".join(f"{split}: {how}" for split, how in self.labels_from.items())
        return f"{src}: read as {self.layout}, {len(self.classes)} classes; {said}"


@dataclass
class SourceOptions:
    """How to read SRC, from prepare's flags."""
    labels_csv: str = None      # --labels: the labels of a flat val/ folder
    names_file: str = None      # --names: human names of the classes
    val_split: float = None     # --val-split: hold out this fraction of each class
    no_val: bool = False        # --no-val: a train-only store, on purpose


def read_source(src, out, opts=SourceOptions()):
    """The `Source` that SRC is, every problem found before OUT is touched."""
    if not os.path.isdir(src):
        what = "is a file, not a folder" if os.path.exists(src) else "does not exist"
        raise StoreError(f"source folder {src} {what}: pass the folder holding train/ (and val/), "
                         f"class folders, or a CIFAR or TinyImageNet folder")
    inside = os.path.relpath(os.path.realpath(out), os.path.realpath(src))
    beside = inside.split(os.sep)[0]
    # Beside train/ and val/ a store is never read; anywhere else in SRC, a re-run would take it for images.
    if not inside.startswith(os.pardir) and (not os.path.isdir(os.path.join(src, "train")) or inside == os.curdir
                                             or beside in ("train", "test", "images") + VAL_FOLDERS):
        raise StoreError(f"OUT {out} is inside the source tree {src}: a re-run would read its files as "
                         f"images; choose an OUT outside {src}")
    if opts.val_split is not None and opts.no_val:
        raise StoreError("--val-split and --no-val contradict each other: pass one of them")
    if opts.val_split is not None and not 0 < opts.val_split < 1:
        raise StoreError(f"--val-split {opts.val_split} is outside (0, 1): pass a fraction such as 0.1")
    for reader in (_cifar, _kaggle_imagenet, _tiny_imagenet, _split_tree, _class_folders):
        source = reader(src, opts)
        if source is not None:
            break
    if opts.names_file:
        source.names = read_names(opts.names_file)
        source.labels_from["names"] = f"--names {opts.names_file}"
    source.names = {c: source.names[c] for c in source.classes if c in source.names}
    out_name = os.path.basename(os.path.normpath(out))
    source.unused = [u for u in source.unused if os.path.basename(u.split(" (")[0]) != out_name]   # the store itself
    source.unused = [u for u in source.unused if u]
    return source


def _own_val(layout, opts):
    """A layout that has its val split takes neither --val-split nor --no-val."""
    for flag, given in (("--val-split", opts.val_split is not None), ("--no-val", opts.no_val)):
        if given:
            raise StoreError(f"{flag}: this {layout} has its own val split: drop {flag}")


def _unused(top, used, why=None):
    """Top-level entries of `top` that were not read, each with why where known."""
    why = why or {}
    return [f"{e} ({why[e]})" if e in why else e for e in sorted(os.listdir(top)) if e not in used]


def _cifar(src, opts):
    top = src
    if cifar.detect(src) is None:
        inner = [d for d in ("cifar-10-batches-py", "cifar-100-python") if os.path.isdir(os.path.join(src, d))]
        if not inner or cifar.detect(os.path.join(src, inner[0])) is None:
            return None
        src = os.path.join(src, inner[0])
    _own_val("CIFAR archive", opts)
    layout, classes, splits, extra, used = cifar.scan(src)
    return Source(f"{layout} (python archive)", classes,
                  {s: Split(src, f, v, kind="cifar") for s, (f, v) in splits.items()},
                  {"train": f"{', '.join(used[1:-1])} with the names of {used[0]}", "val": used[-1]},
                  unused=_unused(top, used if top == src else {os.path.basename(src)}), extra=extra)


def _beside(name, *folders):
    """`name` in the first of `folders` that has it, or None."""
    return next((os.path.join(f, name) for f in folders if os.path.isfile(os.path.join(f, name))), None)


def _kaggle_imagenet(src, opts):
    if os.path.isdir(os.path.join(src, CLS_LOC)):
        top, root = src, os.path.join(src, CLS_LOC)
    elif os.path.basename(os.path.normpath(src)) == "CLS-LOC" and os.path.isdir(os.path.join(src, "train")):
        up = os.path.normpath(os.path.join(src, os.pardir, os.pardir, os.pardir))
        # Kaggle's top folder, where CLS-LOC still sits in it; else the CLS-LOC folder alone.
        inside = os.path.realpath(os.path.join(up, CLS_LOC)) == os.path.realpath(src)
        top, root = (up if inside else src), src
    else:
        return None
    solution, mapping = opts.labels_csv or _beside(LOC_SOLUTION, top, root), _beside(LOC_NAMES, top, root)
    if solution is None:
        raise StoreError(f"{root} is Kaggle's ImageNet, and {os.path.join(top, LOC_SOLUTION)} is missing: "
                         f"put it there, or pass it with --labels")
    _own_val("Kaggle ImageNet", opts)
    classes, files, labels, skipped = scan_folders(os.path.join(root, "train"))
    vroot = os.path.join(root, "val")
    vfiles, vlabels = scan_flat(vroot, solution, classes)
    names = read_names(mapping) if mapping else {}
    gap = unlabelled(vroot, vfiles, "val/")
    prefix = CLS_LOC if top != root else ""
    gap = [gap] if gap else []
    gap += [os.path.join(prefix, e) for e in loose(os.path.join(root, "train"), "train")]
    unused = [os.path.join(prefix, e) for e in _unused(root, {"train", "val", LOC_SOLUTION, LOC_NAMES},
                                                       {"test": "unlabelled"})]
    if top != root:
        used = {os.path.basename(p) for p in (solution, mapping) if p and os.path.dirname(p) == top}
        unused += _unused(top, used | {"ILSVRC"}) + [os.path.join("ILSVRC", e) for e in
                                                    sorted(os.listdir(os.path.join(top, "ILSVRC"))) if e != "Data"]
    return Source("Kaggle's ImageNet (ILSVRC/Data/CLS-LOC)", classes,
                  {"train": Split(os.path.join(root, "train"), files, labels), "val": Split(vroot, vfiles, vlabels)},
                  {"train": "train/<wnid>/ folders", "val": solution,
                   "names": mapping or f"none ({LOC_NAMES} not found; pass it with --names)"},
                  names=names, unused=unused + gap, skipped=skipped)


def _tiny_imagenet(src, opts):
    annotations = os.path.join(src, "val", "val_annotations.txt")
    marks = {"wnids.txt": os.path.join(src, "wnids.txt"), "val/val_annotations.txt": annotations}
    found = [name for name, path in marks.items() if os.path.isfile(path)]
    if not found:
        return None
    if len(found) < len(marks):
        missing = next(name for name in marks if name not in found)
        raise StoreError(f"{src} looks like TinyImageNet-200 ({found[0]}) but has no {missing}: restore the "
                         f"folder as it was downloaded")
    _own_val("TinyImageNet", opts)
    wnids = [line.strip() for _, line in text_lines(os.path.join(src, "wnids.txt"), "wnids.txt") if line.strip()]
    classes, files, labels, skipped = scan_folders(os.path.join(src, "train"))
    if sorted(set(wnids)) != classes:
        extra, missing = sorted(set(classes) - set(wnids)), sorted(set(wnids) - set(classes))
        what = (f"train/ has folders not in wnids.txt ({', '.join(extra[:3])})" if extra
                else f"wnids.txt lists classes with no train/ folder ({', '.join(missing[:3])})")
        raise StoreError(f"{src}: {what}: restore the TinyImageNet folder as it was downloaded")
    vfiles, vlabels = _tiny_val(os.path.join(src, "val"), annotations, classes)
    gap = unlabelled(os.path.join(src, "val", "images"), [f[len("images/"):] for f in vfiles], "val/images/")
    boxes = [s for s in skipped if s.endswith("_boxes.txt")]
    words = os.path.join(src, "words.txt")
    names = read_names(words) if os.path.isfile(words) else {}
    unused = _unused(src, {"train", "val", "wnids.txt", "words.txt"}, {"test": "unlabelled"})
    if boxes:
        unused.append(f"train/<wnid>/<wnid>_boxes.txt ({len(boxes)} box files)")
    if gap:
        unused.append(gap)
    unused += loose(os.path.join(src, "train"), "train")
    return Source("TinyImageNet-200", classes,
                  {"train": Split(os.path.join(src, "train"), files, labels),
                   "val": Split(os.path.join(src, "val"), vfiles, vlabels)},
                  {"train": "train/<wnid>/images/ (classes from wnids.txt)", "val": annotations,
                   "names": words if names else "none (words.txt not found; pass it with --names)"},
                  names=names, unused=unused, skipped=[s for s in skipped if s not in boxes])


def _tiny_val(vroot, annotations, classes):
    """val/images/ labelled by val_annotations.txt (`file<TAB>wnid<TAB>x0 y0 x1 y1`)."""
    def rows():
        for n, line in text_lines(annotations, "val_annotations.txt"):
            parts = line.split("\t") if "\t" in line else line.split()
            if not line.strip():
                continue
            where = f"{annotations} line {n}"
            if len(parts) < 2:
                raise StoreError(f"{where} ({line.strip()!r}) is not a 'file<TAB>wnid<TAB>box' row: fix or "
                                 f"remove it")
            name = os.path.join("images", parts[0].strip())
            found = name if os.path.isfile(os.path.join(vroot, name)) else None
            yield n, where, parts[0].strip(), parts[1].strip(), found, os.path.join(vroot, name)

    files, labels = label_files(rows(), classes,
                                lambda wnid, _: f"{wnid} is not a class of wnids.txt: fix the row, or restore the "
                                                f"folder as it was downloaded",
                                "restore the file or remove the row")
    if not files:
        raise StoreError(f"{annotations} labels no images: restore the TinyImageNet folder as downloaded")
    return files, labels


def _val_folder(src):
    found = [d for d in VAL_FOLDERS if os.path.isdir(os.path.join(src, d))]
    if len(found) > 1:
        raise StoreError(f"{src} has both {found[0]}/ and {found[1]}/: keep the one that is the "
                         f"validation set (move the other out of {src})")
    return found[0] if found else None


def _split_tree(src, opts):
    train_root = os.path.join(src, "train")
    if not os.path.isdir(train_root):
        return None
    classes, files, labels, skipped = scan_folders(train_root)
    val = _val_folder(src)
    used, why, splits, said = {"train"}, {}, {}, {"train": "train/<class>/ folders"}
    if val is None:
        if opts.labels_csv:
            raise StoreError(f"--labels {opts.labels_csv} labels a flat val/ folder, and {src} has none: "
                             f"put the validation images in {os.path.join(src, 'val')}, or drop --labels")
        splits, said = _no_val_split(src, train_root, classes, files, labels, opts, "train/")
    else:
        _own_val(f"tree with {val}/", opts)
        used.add(val)
        splits["train"] = Split(train_root, files, labels)
        splits["val"], said["val"] = _labelled(os.path.join(src, val), classes, opts.labels_csv, skipped, val)
    test = os.path.join(src, "test")
    if os.path.isdir(test):
        folders = subfolders(test)
        if folders and set(folders) <= set(classes):
            splits["test"], said["test"] = _labelled(test, classes, None, skipped, "test")
            used.add("test")
        else:
            why["test"] = "unlabelled" if not folders else "its folders are not train/'s classes"
    unused = _unused(src, used, why) + [e for d in sorted(used) if subfolders(os.path.join(src, d))
                                        for e in loose(os.path.join(src, d), d)]
    return Source(f"an ImageNet-style tree (train/{f', {val}/' if val else ''}"
                  f"{', test/' if 'test' in splits else ''})", classes, splits, said, unused=unused,
                  skipped=skipped, extra=_holdout_record(opts) if val is None else {})


def _labelled(root, classes, labels_csv, skipped, name):
    """(Split, where its labels came from) of a val or test folder: class folders, or flat with a CSV."""
    folders = subfolders(root)
    if not folders:
        if not any(is_image(f) for f in os.listdir(root)):
            raise StoreError(f"{root} holds no images: put the {name} images in it (in class folders), or "
                             f"remove it" + (" and pass --val-split 0.1 to hold out part of train/"
                                             if name in VAL_FOLDERS else ""))
        if not labels_csv:
            raise StoreError(f"{root} has no class folders: pass --labels CSV (rows filename,class, or "
                             f"Kaggle's {LOC_SOLUTION}) to label its images")
        files, labels = scan_flat(root, labels_csv, classes)
        gap = unlabelled(root, files, f"{name}/")
        return Split(root, files, labels), labels_csv + (f"; not used: {gap}" if gap else "")
    if labels_csv:
        raise StoreError(f"--labels {labels_csv} labels a flat {name}/ folder, and {root} has class folders: "
                         f"drop --labels")
    vclasses, files, labels, vskipped = scan_folders(root)
    skipped += [os.path.join(name, s) for s in vskipped]
    unknown = sorted(set(vclasses) - set(classes))
    if unknown:
        raise StoreError(f"{root} has class folders not in train/: {', '.join(unknown[:3])}: "
                         f"remove them or add them to train/")
    remap = [classes.index(c) for c in vclasses]
    return Split(root, files, [remap[v] for v in labels]), f"{name}/<class>/ folders"


def _no_val_split(src, root, classes, files, labels, opts, where):
    """({split: Split}, {split: said}) of class folders with no val: held out, train-only, or an error."""
    if opts.val_split is not None:
        tfiles, tlabels, vfiles, vlabels = hold_out(classes, files, labels, opts.val_split, root)
        said = f"{where}<class>/ folders, val: --val-split {opts.val_split:g} of each class (by a hash of the path)"
        return {"train": Split(root, tfiles, tlabels), "val": Split(root, vfiles, vlabels)}, \
            {"train": said.split(", val: ")[0], "val": said.split(", val: ")[1]}
    if opts.no_val:
        return {"train": Split(root, files, labels)}, {"train": f"{where}<class>/ folders", "val": "none (--no-val)"}
    raise StoreError(f"{src} has no validation split: pass --val-split 0.1 to hold out about a tenth of each "
                     f"class, or --no-val for a train-only store")


def _holdout_record(opts):
    """classes.json's record of how a tree with no val split was split (the rebuild command repeats it)."""
    if opts.no_val:
        return {"no_val": True}
    return {"val_split": {"fraction": opts.val_split, "rule": HOLDOUT_RULE}} if opts.val_split else {}


def _class_folders(src, opts):
    folders = subfolders(src)
    if not folders:
        images = [f for f in os.listdir(src) if is_image(f)]
        hint = (f"{len(images)} images lie directly in it: put each class's images in a folder of its own"
                if images else f"expected {src}/<class>/<image> ({'/'.join(IMAGE_EXTENSIONS[:3])}...), "
                               f"train/ and val/, or a CIFAR, TinyImageNet or Kaggle ImageNet folder")
        raise StoreError(f"{src} has no class folders: {hint}")
    if opts.labels_csv:
        raise StoreError(f"--labels {opts.labels_csv} labels a flat val/ folder, and {src} holds class "
                         f"folders with no split: drop --labels")
    classes, files, labels, skipped = scan_folders(src)
    splits, said = _no_val_split(src, src, classes, files, labels, opts, "")
    return Source("class folders with no split", classes, splits, said, skipped=skipped,
                  unused=loose(src, ""), extra=_holdout_record(opts))
