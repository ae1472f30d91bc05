"""A small procedural dataset in the ImageNet layout, so the demo needs no download.

Ten classes, each a shape drawn at a random place, size and angle over a
random textured background. Each class has its own hue family, so colour and
shape both carry the label (the demo must learn in minutes on a CPU). Every
image comes from np.random.default_rng([seed, split, class, index]): the same
call gives byte-identical files. `demo_store` generates and prepares it once
into a cache folder and returns the store's path.
"""
import colorsys
import math
import os

import numpy as np
from PIL import Image, ImageDraw

from alexnet_mp.config import IMAGE_SIZE
from alexnet_mp.data.prepare import prepare
from alexnet_mp.files import FolderLock, atomic_write

SHAPES = ("disc", "square", "triangle", "cross", "ring", "hstripes", "vstripes", "checker", "diagonal", "dots")
TRAIN_PER_CLASS, VAL_PER_CLASS = 120, 20       # the demo set: 1,200 training and 200 validation images


def _colour(rng, hue):
    h = (hue + rng.normal(0, 0.03)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _polygon(cx, cy, radius, sides, angle):
    return [(cx + radius * math.cos(angle + 2 * math.pi * k / sides),
             cy + radius * math.sin(angle + 2 * math.pi * k / sides)) for k in range(sides)]


def draw(shape, rng, hue):
    s = IMAGE_SIZE
    base = rng.integers(20, 110, size=3)
    noise = rng.normal(0, 12, size=(s // 8, s // 8, 3))
    background = np.clip(base + np.kron(noise, np.ones((8, 8, 1))), 0, 255).astype(np.uint8)
    img = Image.fromarray(background)
    d = ImageDraw.Draw(img)
    fg = _colour(rng, hue)
    cx, cy = rng.uniform(0.35, 0.65, size=2) * s
    r = rng.uniform(0.18, 0.3) * s
    angle = rng.uniform(0, 2 * math.pi)
    if shape == "disc":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif shape == "square":
        d.polygon(_polygon(cx, cy, r, 4, angle), fill=fg)
    elif shape == "triangle":
        d.polygon(_polygon(cx, cy, r, 3, angle), fill=fg)
    elif shape == "cross":
        w = r / 3
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fg)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fg)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fg, width=int(r / 3))
    elif shape in ("hstripes", "vstripes", "diagonal"):
        period = int(rng.integers(18, 34))
        for k in range(-s, 2 * s, period):
            if shape == "hstripes":
                d.rectangle([0, k, s, k + period // 2], fill=fg)
            elif shape == "vstripes":
                d.rectangle([k, 0, k + period // 2, s], fill=fg)
            else:
                d.line([(k, 0), (k + s, s)], fill=fg, width=period // 2)
    elif shape == "checker":
        cell = int(rng.integers(24, 44))
        for y in range(0, s, cell):
            for x in range(0, s, cell):
                if (x // cell + y // cell) % 2 == 0:
                    d.rectangle([x, y, x + cell - 1, y + cell - 1], fill=fg)
    elif shape == "dots":
        for _ in range(int(rng.integers(8, 16))):
            x, y, q = rng.uniform(0, s), rng.uniform(0, s), rng.uniform(8, 18)
            d.ellipse([x - q, y - q, x + q, y + q], fill=fg)
    return img


def generate(root, train_per_class=TRAIN_PER_CLASS, val_per_class=VAL_PER_CLASS, classes=len(SHAPES), seed=0):
    """Write root/{train,val}/<class>/*.JPEG; returns root. Existing identical files are kept."""
    if not 1 <= classes <= len(SHAPES):
        raise ValueError(f"classes={classes}: the demo set draws 1 to {len(SHAPES)} shape classes")
    for split_id, (split, count) in enumerate((("train", train_per_class), ("val", val_per_class))):
        for c in range(classes):
            folder = os.path.join(root, split, f"{c:02d}_{SHAPES[c]}")
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                path = os.path.join(folder, f"{split}_{c:02d}_{i:05d}.JPEG")
                if os.path.exists(path):
                    continue
                rng = np.random.default_rng([seed, split_id, c, i])
                image = draw(SHAPES[c], rng, hue=c / classes)
                atomic_write(path, lambda f: image.save(f, format="JPEG", quality=90))
    return root


def default_cache_dir():
    return os.environ.get("ALEXNET_MP_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "alexnet_mp"))


def demo_store_path(cache_dir):
    return os.path.join(cache_dir, "demo-store")


def demo_store(cache_dir=None, log=print):
    """The prepared demo store in `cache_dir` (made on first use); returns its path.

    Every process that needs it may call this at once (the ranks of a torchrun job):
    the first takes the cache's lock and makes the store, the others wait for it and
    find it made."""
    cache_dir = cache_dir or default_cache_dir()
    store = demo_store_path(cache_dir)
    if os.path.isfile(os.path.join(store, "train", "stats.npz")):
        return store
    os.makedirs(cache_dir, exist_ok=True)
    lock = FolderLock(cache_dir, "set another --cache-dir", record=False, wait=True)
    try:
        if not os.path.isfile(os.path.join(store, "train", "stats.npz")):
            log(f"no --data-path: generating the demo dataset into {cache_dir} (once)")
            src = generate(os.path.join(cache_dir, "demo-src"))
            prepare(src, store, workers=os.cpu_count() or 1, log=log)
    finally:
        lock.release()
    return store
