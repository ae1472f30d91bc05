"""How long prepare takes (issue 26): images per second per worker, draft decoding, a kill's cost.

(i) One worker's per-image work on JPEGs made here: ImageNet's usual 500x375 and
multi-megapixel photos (ImageNet holds some): the decode alone, `to_256` (§2's
rescale and centre crop), the same with Pillow's `Image.draft` (the JPEG decoder
scales by 1/2, 1/4 or 1/8 in the DCT domain, keeping the shorter side at least
512 or 256), and the whole path of a worker, `prepare._convert`, with its raw
write or its JPEG re-encode. (ii) What draft does to the stored 256x256 pixels
against `to_256`'s, beside what the jpeg store's own re-encode does to them (a
loss the project already accepts as an option). (iii) `prepare()` end to end at
-j 1 and -j 2 on a small tree: pool start, the parent's bookkeeping, the
statistics. (iv) The parent's bookkeeping per chunk at ImageNet's size: it
rewrites status.u8 (and offsets.i64) whole after every chunk of CHUNK images.
(v) A prepare killed (SIGKILL to its process group) mid-split, then run again:
the images converted but not yet recorded are converted again.
"""
import io
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw

from alexnet_mp.bench.timing import timed
from alexnet_mp.data.images import SIZE, to_256, to_rgb, upright
from alexnet_mp.data.prepare import CHUNK, _convert, compute_stats, prepare
from alexnet_mp.data.storecheck import DONE, TODO
from alexnet_mp.files import atomic_write

IMAGENET_TRAIN = 1281167
SOURCE_QUALITY = 90
DRAFTS = (512, 256)                      # the decoded shorter side is kept at least this
FULL_SETS = {(500, 375): 64, (3000, 2000): 6, (4000, 3000): 6}
QUICK_SETS = {(500, 375): 4, (3000, 2000): 1}
PROGRESS = re.compile(r"(\d+)/(\d+) images")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _upsample(a, size):
    return np.asarray(Image.fromarray(a, "F").resize(size, Image.Resampling.BICUBIC))


def _field(w, h, rng, amp, decay, finest=0):
    """Noise with a power-law spectrum, as natural images have: each octave, from a few
    pixels across down to 2**finest, upsampled and added at `decay` times the amplitude."""
    top = max(finest, int(np.log2(min(w, h) / 3)))
    f = amp * rng.standard_normal((-(-h >> top), -(-w >> top))).astype(np.float32)
    for k in range(top - 1, finest - 1, -1):
        amp *= decay
        size = (-(-w >> k), -(-h >> k))
        f = _upsample(f, size) + amp * rng.standard_normal(size[::-1]).astype(np.float32)
    return f if finest == 0 else _upsample(f, (w, h))


def photo(w, h, rng):
    """A photo-like RGB image: textured background (fine luminance detail, coarse colour,
    as a camera's chroma is), a few sharp-edged textured objects, sensor noise. At quality 90
    a 500x375 one is about 90 KB and a 4000x3000 one about 4 MB, as real photos are."""
    lum = _field(w, h, rng, 30, 0.86)
    c1, c2 = (_field(w, h, rng, 25, 0.6, finest=3) for _ in range(2))
    base = np.stack([lum + c1, lum - 0.5 * (c1 + c2), lum + c2], -1) + rng.uniform(60, 180, 3).astype(np.float32)
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.05, 0.3) * w, rng.uniform(0.05, 0.3) * h
        t, r = np.linspace(0, 2 * np.pi, 14, endpoint=False), rng.uniform(0.6, 1, 14)
        draw.polygon(list(zip(x0 + rx * r * np.cos(t), y0 + ry * r * np.sin(t))), fill=255)
    obj = 0.7 * lum[..., None] + rng.uniform(20, 235, 3).astype(np.float32)
    m = np.asarray(mask, np.float32)[..., None] / 255
    rgb = base * (1 - m) + obj * m + rng.normal(0, 2, (h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def write_photos(folder, size, count, rng, first=0):
    """`count` JPEGs of `size` at quality 90 in `folder`; their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(first, first + count):
        paths.append(os.path.join(folder, f"{i:05d}.JPEG"))
        photo(*size, rng).save(paths[-1], quality=SOURCE_QUALITY)
    return paths


def to_256_draft(path, shorter=None):
    """`to_256`, the JPEG decoded at the coarsest of 1/8, 1/4, 1/2 that keeps its shorter
    side >= `shorter`. The resize reads the drafted image through the box that maps it onto
    the full one, so sizes and crop are to_256's; only the decoder's scaling differs.
    shorter=None: no draft, to_256's pixels exactly (a test pins this copy to it). An EXIF
    turn swaps the full size with the pixels; the box is not turned (exact where the
    sides divide by the scale)."""
    with Image.open(path) as img:
        full = img.size
        scale = 1 if shorter is None or img.format != "JPEG" else draft_scale(full, shorter)
        if scale > 1:
            img.draft("RGB", (full[0] // scale, full[1] // scale))
        img = to_rgb(upright(img))
    w, h = img.size
    if scale > 1:
        w, h = full if (w > h) == (full[0] > full[1]) else full[::-1]
    box = None if scale == 1 else (0, 0, w / scale, h / scale)
    size = (SIZE, int(SIZE * h / w)) if w <= h else (int(SIZE * w / h), SIZE)
    img = img.resize(size, Image.Resampling.BILINEAR, box=box)
    left, top = int(round((size[0] - SIZE) / 2.0)), int(round((size[1] - SIZE) / 2.0))
    return np.asarray(img.crop((left, top, left + SIZE, top + SIZE)), dtype=np.uint8)


def draft_scale(size, shorter):
    """The coarsest of JPEG's DCT scalings, 1/8, 1/4, 1/2, that keeps the shorter side >= `shorter`."""
    return next(s for s in (8, 4, 2, 1) if s == 1 or min(size) // s >= shorter)


def difference(refs, others):
    """Mean and max absolute difference and PSNR (dB, pooled over the set; and the worst image's)."""
    d = [np.abs(a.astype(np.int64) - b.astype(np.int64)) for a, b in zip(refs, others)]
    mse = [float(np.mean(x.astype(np.float64) ** 2)) for x in d]

    def psnr(m):
        return None if m == 0 else float(10 * np.log10(255.0 ** 2 / m))     # None: identical
    return {"mean_abs": float(np.mean([x.mean() for x in d])), "max_abs": int(max(x.max() for x in d)),
            "psnr_db": psnr(float(np.mean(mse))), "worst_image_psnr_db": psnr(max(mse))}


def _decode(path):
    with Image.open(path) as img:
        img.load()


def _worker(folder, root, rels, fmt):
    """One worker's path over the files, chunk by chunk as prepare hands them out."""
    items = list(enumerate(rels))
    tasks = [(folder, root, len(rels), fmt, items[i:i + CHUNK]) for i in range(0, len(items), CHUNK)]
    return lambda: [out for task in tasks for out in _convert(task)]


def per_image(sets, repeats, workdir, rng):
    """(i) and (ii) for each {(w, h): count}: seconds and img/s of each step, and the draft's
    pixel difference, with the jpeg store's re-encode as the yardstick."""
    result = {}
    for (w, h), count in sets.items():
        name = f"{w}x{h}"
        root = os.path.join(workdir, name)
        paths = write_photos(os.path.join(root, "src"), (w, h), count, rng)
        rels = [os.path.relpath(p, root) for p in paths]
        out = os.path.join(root, "out")
        os.makedirs(out)
        with open(os.path.join(out, "images.u8"), "wb") as f:
            f.truncate(count * SIZE * SIZE * 3)
        fns = {"decode": lambda: [_decode(p) for p in paths], "to_256": lambda: [to_256(p) for p in paths]}
        for s in DRAFTS:
            fns[f"draft>={s}"] = lambda s=s: [to_256_draft(p, s) for p in paths]
        fns["worker raw"] = _worker(out, root, rels, "raw")
        fns["worker jpeg"] = _worker(out, root, rels, "jpeg")
        times = dict(zip(fns, timed(list(fns.values()), repeats)))
        ref = [to_256(p) for p in paths]
        encoded = [b for _, _, b in fns["worker jpeg"]()]       # slot order: one task after another
        stored = [np.asarray(Image.open(io.BytesIO(b))) for b in encoded]
        result[name] = {
            "images": count, "file_kb": float(np.mean([os.path.getsize(p) for p in paths]) / 1024),
            "seconds": {k: list(t) for k, t in times.items()},
            "img_per_s": {k: [count / t for t in ts] for k, ts in times.items()},
            "draft": {str(s): dict(difference(ref, [to_256_draft(p, s) for p in paths]),
                                   scale=draft_scale((w, h), s)) for s in DRAFTS},
            "jpeg_store_q95": difference(ref, stored),
            "jpeg_bytes_per_image": float(np.mean([len(b) for b in encoded]))}
    return result


def bookkeeping(repeats, workdir, n=IMAGENET_TRAIN):
    """(iv) Seconds of the parent's per-chunk writes for a split of `n` images: status.u8 (raw
    and jpeg) and offsets.i64 (jpeg), each rewritten whole through atomic_write."""
    status, offsets = np.zeros(n, np.uint8), np.zeros((n, 2), np.int64)
    paths = [os.path.join(workdir, name) for name in ("status.u8", "offsets.i64")]
    t_status, t_offsets = timed([lambda: atomic_write(paths[0], status.tofile),
                                 lambda: atomic_write(paths[1], offsets.tofile)], repeats)
    chunks = -(-n // CHUNK)
    return {"images": n, "chunks": chunks, "status_write_s": list(t_status), "offsets_write_s": list(t_offsets),
            "parent_s_raw": chunks * t_status[0], "parent_s_jpeg": chunks * (t_status[0] + t_offsets[0])}


def _tree(src, count, rng, classes=2, val=2):
    """An ImageNet-style tree of 500x375 JPEGs: train/ with `count` images, val/ with `val` per
    class; returns the number of val images."""
    for c in range(classes):
        write_photos(os.path.join(src, "train", f"c{c}"), (500, 375), count // classes, rng, first=c * count)
        write_photos(os.path.join(src, "val", f"c{c}"), (500, 375), val, rng, first=c * count + count)
    return classes * val


def end_to_end(count, repeats, workdir, rng):
    """(iii) prepare() on a tree of `count` 500x375 training JPEGs (and a few val), raw and jpeg,
    -j 1 and -j 2, each call into a new OUT; the log's times give the training split's
    conversion (pool start included) and its first chunk; the statistics are timed apart."""
    src = os.path.join(workdir, "tree")
    val = _tree(src, count, rng)
    runs, fns = {}, []
    for fmt in ("raw", "jpeg"):
        for j in (1, 2):
            marks = runs.setdefault(f"{fmt} -j {j}", [])

            def call(fmt=fmt, j=j, marks=marks):
                out = os.path.join(workdir, f"{fmt}{len(os.listdir(workdir))}")
                t0, seen = time.perf_counter(), {}

                def log(line):
                    key = "stats" if "computing the mean" in line else \
                        "first" if PROGRESS.search(line) and f"{os.sep}train:" in line else line
                    seen.setdefault(key, time.perf_counter() - t0)
                prepare(src, out, workers=j, fmt=fmt, log=log)
                marks.append(seen)
                shutil.rmtree(out)
            fns.append(call)
    totals = timed(fns, repeats, warmup=0)
    stores = {fmt: os.path.join(workdir, f"store-{fmt}") for fmt in ("raw", "jpeg")}
    for fmt, out in stores.items():
        prepare(src, out, workers=1, fmt=fmt, log=lambda *a: None)
    stats = dict(zip(stores, timed([lambda out=out: compute_stats(out) for out in stores.values()], repeats)))
    result = {}
    for (name, marks), total in zip(runs.items(), totals):
        convert = sorted(m["stats"] for m in marks)
        fmt = name.split()[0]
        result[name] = {"images": count, "val_images": val, "total_s": list(total),
                        "convert_s": convert[len(convert) // 2], "first_chunk_s": min(m["first"] for m in marks),
                        "stats_s": list(stats[fmt]), "stats_img_per_s": count / stats[fmt][0]}
        result[name]["convert_img_per_s"] = count / result[name]["convert_s"]
    return result


def _count_done(path):
    try:
        return int((np.fromfile(path, np.uint8) == DONE).sum())
    except (OSError, ValueError):
        return 0


def kill_cost(count, workers, workdir, rng):
    """(v) alexnet-prepare (tools/prepare_data.py) on `count` 500x375 training JPEGs, killed with
    SIGKILL (its whole process group, workers too) once status.u8 shows a third done, then again.
    Converted but not recorded: slots still to do whose pixels the workers had written."""
    src, out = os.path.join(workdir, "tree"), os.path.join(workdir, "out")
    _tree(src, count, rng)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "alexnet_mp.cli.prepare_data", src, out, "-j", str(workers)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    status_path = os.path.join(out, "train", "status.u8")
    while proc.poll() is None and _count_done(status_path) < count // 3:
        time.sleep(0.005)          # polling the file: the kill lands whenever progress shows
    finished = proc.poll() is not None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    status = np.fromfile(status_path, np.uint8)
    pixels = np.memmap(os.path.join(out, "train", "images.u8"), np.uint8, "r", shape=(count, SIZE * SIZE * 3))
    unrecorded = int(sum(pixels[s].any() for s in np.flatnonzero(status == TODO)))
    del pixels
    lines = []
    t = time.perf_counter()
    prepare(src, out, workers=workers, log=lines.append)
    rerun_s = time.perf_counter() - t
    todo = [int(m.group(2)) for m in map(PROGRESS.search, lines) if m and f"{os.sep}train:" in m.string]
    return {"images": count, "workers": workers, "chunk": CHUNK, "finished_before_kill": finished,
            "recorded_at_kill": int((status == DONE).sum()), "converted_not_recorded": unrecorded,
            "rerun_converted": todo[-1] if todo else 0, "rerun_s": rerun_s, "bound": workers * CHUNK}


def machine():
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return {"cpu_count": os.cpu_count(), "processor": platform.processor(), "model_name": model,
            "platform": platform.platform(), "python": platform.python_version(),
            "pillow": Image.__version__, "numpy": np.__version__}


def imagenet_estimate(per, e2e, books, workers=16):
    """Hours for ImageNet's training set at -j `workers`, ASSUMING one worker's rate on 500x375
    files holds for each of them (cores enough, disk read not the bound)."""
    rate = {fmt: per["500x375"]["img_per_s"][f"worker {fmt}"][0] for fmt in ("raw", "jpeg")}
    stats = {fmt: e2e[f"{fmt} -j 1"]["stats_img_per_s"] for fmt in ("raw", "jpeg")}
    return {fmt: {"workers": workers, "per_worker_img_per_s": rate[fmt],
                  "convert_h": IMAGENET_TRAIN / (workers * rate[fmt]) / 3600,
                  "stats_img_per_s": stats[fmt], "stats_h": IMAGENET_TRAIN / stats[fmt] / 3600,
                  "parent_bookkeeping_h": books[f"parent_s_{fmt}"] / 3600,
                  "disk_gb": IMAGENET_TRAIN * (SIZE * SIZE * 3 if fmt == "raw" else
                                               per["500x375"]["jpeg_bytes_per_image"]) / 1e9}
            for fmt in ("raw", "jpeg")}


def bench_prepare(args, device=None):
    """The whole section; `device` is not used (prepare runs on the CPU)."""
    quick = args.quick
    repeats = 1 if quick else args.repeats
    rng = np.random.default_rng(0)
    res = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M %Z"), "repeats": repeats,
           "source_quality": SOURCE_QUALITY, "chunk": CHUNK}
    with tempfile.TemporaryDirectory() as d:
        for sub in ("per", "e2e", "books", "kill"):
            os.makedirs(os.path.join(d, sub))
        res["per_image"] = per_image(QUICK_SETS if quick else FULL_SETS, repeats, os.path.join(d, "per"), rng)
        res["bookkeeping"] = bookkeeping(repeats, os.path.join(d, "books"))
        res["end_to_end"] = end_to_end(16 if quick else 128, repeats if quick else min(repeats, 3),
                                       os.path.join(d, "e2e"), rng)
        res["kill"] = kill_cost(3 * CHUNK if quick else 10 * CHUNK, 2, os.path.join(d, "kill"), rng)
    if "500x375" in res["per_image"]:
        res["imagenet"] = imagenet_estimate(res["per_image"], res["end_to_end"], res["bookkeeping"])
    return res
