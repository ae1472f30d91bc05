"""Convert an image tree into a prepared store (layout in `alexnet_mp.data`).

§2: each image is rescaled so its shorter side is 256 (antialiased), then its
central 256x256 patch is kept, the right way up (its EXIF orientation applied,
recorded in classes.json). Nothing else is done to the stored pixels.

Sources: the layouts `alexnet_mp.data.layouts` recognises (ImageNet-style trees,
class folders with a held-out val split, Kaggle's ImageNet, TinyImageNet-200,
CIFAR-10/100). Class index = the sorted class keys, as torchvision's ImageFolder
numbers its folders.
"""
import contextlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import time

import numpy as np
from PIL import Image

from alexnet_mp.data import cifar
from alexnet_mp.data.images import IMAGE_EXTENSIONS, SIZE, image_to_256, to_256
from alexnet_mp.data.layouts import SourceOptions, read_source
from alexnet_mp.data.store import Store
from alexnet_mp.data.storecheck import DONE, FAILED, FORMATS, ORIENTED, TODO, read_split, read_stats, rebuild
from alexnet_mp.errors import StoreError
from alexnet_mp.files import atomic_write, claim, remove_stale_temps, write_json

CHUNK = 64
JPEG_QUALITY = 95          # with 4:4:4 chroma: colour matters to PCA and the mean image
SPLIT_FILES = ("index.json", "status.u8", "offsets.i64", "report.txt", "stats.npz")


def _convert(task):
    """Convert a chunk of images in a worker. raw: written into the shared memmap;
    jpeg: encoded here and handed back for the parent to append."""
    folder, root, total, fmt, items = task[:5]
    # The sixth field says how an item is read: an image file, or a CIFAR archive's row.
    kind = task[5] if len(task) > 5 else "files"
    images = None
    if fmt == "raw":
        images = np.memmap(os.path.join(folder, "images.u8"), dtype=np.uint8, mode="r+",
                           shape=(total, SIZE, SIZE, 3))
    out = []
    for slot, rel in items:
        try:
            pixels = image_to_256(cifar.image(root, rel)) if kind == "cifar" else to_256(os.path.join(root, rel))
        except Exception as e:         # any undecodable file is reported, not fatal
            out.append((slot, FAILED, f"{type(e).__name__}: {e}"))
            continue
        if images is not None:
            images[slot] = pixels
            out.append((slot, DONE, b""))
        else:
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
            out.append((slot, DONE, buf.getvalue()))
    if images is not None:
        images.flush()
    return out


def _leave_ctrl_c_to_the_parent():
    # A Ctrl-C reaches the whole process group; the parent stops the pool and says so
    # in one line, instead of every worker printing its own traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _workers(count, ordered=False):
    """A map over the tasks: a pool of `count` processes, or this process for one (a spawned
    worker would first spend seconds importing torch, for nothing). `ordered`: results in
    the tasks' order."""
    if count <= 1:
        yield map
        return
    with multiprocessing.get_context("spawn").Pool(count, initializer=_leave_ctrl_c_to_the_parent) as pool:
        yield pool.imap if ordered else pool.imap_unordered


def write_json_if_changed(path, data):
    """A re-run on a finished store writes nothing: not even the same bytes again."""
    try:
        with open(path, "rb") as f:
            if json.loads(f.read()) == data:
                return
    except (OSError, ValueError):
        pass
    write_json(path, data, indent=None)


def convert_split(src, files, labels, folder, workers, fmt="raw", log=print, kind="files"):
    """Convert one split; resumes from status.u8 and skips what is already done."""
    if fmt not in FORMATS:
        raise StoreError(f"unknown store format '{fmt}': choose one of {', '.join(FORMATS)}")
    os.makedirs(folder, exist_ok=True)
    remove_stale_temps(folder, SPLIT_FILES, all_of_them=True)     # prepare() holds the store's lock
    index_path, status_path = os.path.join(folder, "index.json"), os.path.join(folder, "status.u8")
    offsets_path = os.path.join(folder, "offsets.i64")
    index = {"files": files, "labels": labels, "format": fmt}
    fresh = _changed(folder, index, log)
    total = len(files)
    if fresh:
        # index.json goes first and comes back last: a rebuild cut short is seen as one next time.
        # At a link's target: the link stays, and the images go where it points (a bigger disk).
        for name in ("index.json", "images.u8", "images.jpg", "offsets.i64", "stats.npz"):
            if os.path.exists(os.path.realpath(os.path.join(folder, name))):
                os.remove(os.path.realpath(os.path.join(folder, name)))
        if fmt == "raw":
            images = os.path.realpath(os.path.join(folder, "images.u8"))
            _check_space(os.path.dirname(images), total * SIZE * SIZE * 3)
            with open(images, "wb") as f:
                f.truncate(total * SIZE * SIZE * 3)
        else:
            open(os.path.join(folder, "images.jpg"), "wb").close()
            np.zeros((total, 2), np.int64).tofile(offsets_path)
        np.zeros(total, np.uint8).tofile(status_path)
        write_json(index_path, index, indent=None)
    status = np.fromfile(status_path, dtype=np.uint8)
    offsets = np.fromfile(offsets_path, np.int64).reshape(-1, 2) if fmt == "jpeg" else None
    todo = [(int(s), files[s]) for s in np.flatnonzero(status == TODO)]
    if todo:
        tasks = [(folder, src, total, fmt, todo[i:i + CHUNK], kind) for i in range(0, len(todo), CHUNK)]
        start, done, failures = time.time(), 0, {}
        with _workers(workers) as convert, \
                open(os.path.join(folder, "images.jpg" if fmt == "jpeg" else "images.u8"), "ab") as packed:
            for results in convert(_convert, tasks):
                for slot, state, payload in results:
                    if state == FAILED:
                        failures[slot] = payload
                    elif offsets is not None:
                        offsets[slot] = (packed.tell(), len(payload))
                        packed.write(payload)
                    status[slot] = state
                # Bytes first, then where they are, then that they are done: a crash
                # between the steps leaves at worst unreferenced bytes, never a bad image.
                packed.flush()
                if offsets is not None:
                    atomic_write(offsets_path, offsets.tofile)
                atomic_write(status_path, status.tofile)
                done += len(results)
                rate = done / max(time.time() - start, 1e-9)
                log(f"  {folder}: {done}/{len(todo)} images, {rate:.0f} img/s, "
                    f"ETA {(len(todo) - done) / max(rate, 1e-9):.0f}s")
        _write_report(folder, files, failures, fresh)
    return status, bool(todo)


def _changed(folder, index, log):
    """Whether a split must be converted from scratch: new, another source or format, or damaged."""
    if not os.path.isfile(os.path.join(folder, "index.json")):
        return True
    try:
        old, _ = read_split(os.path.dirname(folder), os.path.basename(folder), max(index["labels"], default=0) + 1)
    except StoreError as e:
        log(f"{e.problem}; converting {folder} again")
        return True
    if old != index:
        log(f"{folder}: the source or --format changed since the last run; converting it again")
    return old != index


def _check_space(folder, size):
    """The raw images file is sparse until written, and workers write it through a memory
    map: on a full disk they would die of SIGBUS, halfway, so the space is checked first."""
    free = shutil.disk_usage(folder).free
    if free < size:
        raise StoreError(f"{folder} needs {size / 2**30:.2f} GiB for the raw images and {free / 2**30:.2f} GiB "
                         f"are free: free some space, choose another OUT, or pass --format jpeg (about 7x smaller)")


def _write_report(folder, files, failures, fresh):
    path = os.path.join(folder, "report.txt")
    old = {}
    if os.path.isfile(path) and not fresh:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            old = dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)
    old.update({files[s]: reason for s, reason in failures.items()})
    atomic_write(path, lambda f: f.writelines(f"{k}\t{v}\n" for k, v in sorted(old.items())), "w")


STATS_SPAN = 512           # images a worker sums at a time: fixed, so the sums do not depend on -j


def _partial_stats(task):
    """(sum of images, sum of RGB, sum of RGB outer products) over images [start, stop) of a split."""
    root, split, start, stop, chunk = task
    store = Store(root, split)
    total = np.zeros((SIZE, SIZE, 3), np.float64)
    s1, s2 = np.zeros(3), np.zeros((3, 3))
    for i in range(start, stop, chunk):
        block = np.stack([store[j][0] for j in range(i, min(i + chunk, stop))]).astype(np.float64)
        total += block.sum(axis=0)
        rgb = block.reshape(-1, 3) / 255.0
        s1 += rgb.sum(axis=0)
        s2 += rgb.T @ rgb
    return total, s1, s2


def compute_stats(root, split="train", chunk=32, workers=1):
    """Mean image (float64) and the RGB covariance's eigen-decomposition in 0..1 units,
    streamed over the converted images with memory bounded by `chunk` per worker. Spans of
    STATS_SPAN images are summed in parallel and added in order: the same figures at any -j."""
    count = len(Store(root, split))
    if not count:
        raise StoreError(f"{os.path.join(root, split)} has no converted images: statistics need at least "
                         f"one training image")
    spans = [(root, split, i, min(i + STATS_SPAN, count), chunk) for i in range(0, count, STATS_SPAN)]
    total = np.zeros((SIZE, SIZE, 3), np.float64)
    s1, s2 = np.zeros(3), np.zeros((3, 3))
    # A pool costs seconds to start (each worker imports torch): below 8 spans, one process is faster.
    with _workers(min(workers, len(spans)) if len(spans) >= 8 else 1, ordered=True) as each:
        for t, a, b in each(_partial_stats, spans):
            total += t
            s1 += a
            s2 += b
    n_pixels = count * SIZE * SIZE
    mu = s1 / n_pixels
    cov = s2 / n_pixels - np.outer(mu, mu)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]      # p1 has the largest eigenvalue
    return {"mean": total / count, "eigval": eigval[order], "eigvec": eigvec[:, order],
            "cov": cov, "count": np.int64(count)}


def _stats_readable(out):
    try:
        read_stats(out)
        return True
    except StoreError:
        return False


def _classes_record(out, source, src, opts, log):
    """classes.json's contents. A store that already holds images keeps its record of their
    orientation: one prepared before it was applied has none, and is told how to rebuild.
    The flags that shaped it are kept for the rebuild command a damaged store prints."""
    given = {"format": opts["fmt"], "labels": opts["labels_csv"], "names": opts["names_file"]}
    meta = {"classes": source.classes, "names": source.names, "source": os.path.abspath(src), ORIENTED: True,
            "layout": source.layout, **source.extra,
            "prepared_with": {k: (os.path.abspath(v) if v and k != "format" else v) for k, v in given.items()}}
    try:
        with open(os.path.join(out, "classes.json"), "rb") as f:
            old = json.loads(f.read())
    except (OSError, ValueError):
        old = None
    holds_images = any(os.path.isfile(os.path.join(out, split, "index.json")) for split in ("train", "val", "test"))
    if holds_images and not (isinstance(old, dict) and old.get(ORIENTED) is True):
        del meta[ORIENTED]      # its kept images, and so the store, are not all the right way up
        log(f"{out} was prepared before EXIF orientation was applied: its phone photos may be stored "
            f"sideways; to store them the right way up, remove {out} and run {rebuild(out)} again")
    return meta


def _remove_stale_splits(out, source, log):
    """Remove the splits of an earlier prepare that SRC no longer gives (another --val-split
    choice, a test/ folder gone): kept, they would hold training images, or labels by
    another class list. They are prepare's own output, made again from SRC if it gives them."""
    for split in sorted(os.listdir(out)):
        folder = os.path.join(out, split)
        if split in source.splits or not os.path.isfile(os.path.join(folder, "index.json")):
            continue
        for name in ("images.u8", "images.jpg"):       # a link's target, on the disk it points to
            path = os.path.join(folder, name)
            if os.path.islink(path) and os.path.isfile(os.path.realpath(path)):
                os.remove(os.path.realpath(path))
        shutil.rmtree(folder)
        log(f"removed {folder}: a split of an earlier prepare that {source.layout} does not give now")


def describe(source, src, log):
    """What SRC was taken for and where each split's labels came from; what was not read."""
    log(source.summary(src))
    if source.unused:
        log(f"not used: {', '.join(source.unused)}")
    if source.skipped:
        log(f"skipped {len(source.skipped)} entries that are not images in a class folder (not "
            f"{'/'.join(IMAGE_EXTENSIONS[:3])}..., or hidden), e.g. {source.skipped[0]}")


def prepare(src, out, workers=1, labels_csv=None, names_file=None, fmt="raw", log=print, val_split=None,
            no_val=False):
    """Convert SRC into the store OUT; returns {split: (converted, failed)}.

    `val_split`: hold out about this fraction of each class as val (class folders with
    no split); `no_val`: make a train-only store of them instead (an explicit choice).
    Re-running it on a finished store writes nothing; on one cut short or damaged,
    it converts what is missing. Two prepares on one OUT are refused (a lock)."""
    if fmt not in FORMATS:
        raise StoreError(f"unknown store format '{fmt}': choose one of {', '.join(FORMATS)}")
    source = read_source(src, out, SourceOptions(labels_csv, names_file, val_split, no_val))
    describe(source, src, log)
    lock = claim(out, ("classes.json",), "OUT", log, record=False)
    try:
        _remove_stale_splits(out, source, log)
        record = _classes_record(out, source, src, {"fmt": fmt, "labels_csv": labels_csv, "names_file": names_file},
                                 log)
        write_json_if_changed(os.path.join(out, "classes.json"), record)
        counts = {}
        for split, part in source.splits.items():
            folder = os.path.join(out, split)
            status, worked = convert_split(part.root, part.files, part.labels, folder, workers, fmt, log, part.kind)
            counts[split] = (int((status == DONE).sum()), int((status == FAILED).sum()))
            if split == "train" and (worked or not _stats_readable(out)):
                log("computing the mean image and RGB PCA over the training images ...")
                stats = compute_stats(out, workers=workers)
                atomic_write(os.path.join(folder, "stats.npz"), lambda f: np.savez(f, **stats))
    finally:
        lock.release()
    for split, (ok, bad) in counts.items():
        report = f" (listed in {os.path.join(out, split, 'report.txt')})" if bad else ""
        log(f"{split}: {ok} images converted, {bad} could not be decoded{report}")
    return counts
