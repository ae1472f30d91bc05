"""An image file as the paper stores it (§2): RGB, shorter side 256, the central 256x256.

Every image that enters (prepare, predict, the neighbours query) is read by `to_256`,
the right way up: a phone stores a portrait photo's pixels landscape, with an EXIF
Orientation tag that tells a viewer to turn them (README: deviations).
"""
import numpy as np
from PIL import Image, ImageOps

from alexnet_mp.config import IMAGE_SIZE

SIZE = IMAGE_SIZE
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
GREY_16 = ("I;16", "I;16L", "I;16B", "I;16N", "I")    # "I": how older Pillows open 16-bit greyscale PNGs


def to_rgb(img):
    """RGB uint8. 16-bit greyscale keeps its high byte (v >> 8), as Pillow itself reduces
    16-bit RGB(A) PNGs; its convert("RGB") would clip every value above 255 to white."""
    if img.mode in GREY_16:
        high = np.asarray(img).astype(np.int64) >> 8
        img = Image.fromarray(high.clip(0, 255).astype(np.uint8), "L")
    return img.convert("RGB")      # CMYK, greyscale, palette, PNG-behind-a-.JPEG alike


def upright(img):
    """`img` as a viewer shows it: its EXIF Orientation (turns and mirrors) applied, in place."""
    ImageOps.exif_transpose(img, in_place=True)
    return img


def to_256(path):
    """§2: shorter side to 256 with an antialiasing filter, then the central 256x256, RGB uint8."""
    with Image.open(path) as img:
        return image_to_256(to_rgb(upright(img)))


def image_to_256(img):
    """`to_256` of an RGB image already in memory (CIFAR's 32x32 rows are enlarged the same way)."""
    w, h = img.size
    # Sizes and offsets round as torchvision's Resize(256) + CenterCrop(256) do.
    size = (SIZE, int(SIZE * h / w)) if w <= h else (int(SIZE * w / h), SIZE)
    img = img.resize(size, Image.Resampling.BILINEAR)   # PIL widens the filter when shrinking
    left, top = int(round((size[0] - SIZE) / 2.0)), int(round((size[1] - SIZE) / 2.0))
    return np.asarray(img.crop((left, top, left + SIZE, top + SIZE)), dtype=np.uint8)
