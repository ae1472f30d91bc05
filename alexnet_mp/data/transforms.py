"""The paper's crops for training and testing (§4.1), from 256x256 stored images.

Inputs are raw 0..255 RGB minus the training set's per-pixel mean image; no
division by a standard deviation (spec §2). `input_scale="unit"` (a failure
mode of re-implementations, opt-in for the study) instead divides by 255 and
standardises each channel with torchvision's ImageNet mean and std, as
torchvision's `ToTensor` + `Normalize` do; the crops, flips and PCA draws stay
the same, and the PCA shift is added to the raw pixels before the scaling.
"""
import numpy as np
import torch

from alexnet_mp.config import CROP, IMAGE_SIZE

SIZE = IMAGE_SIZE          # §2: images stored at 256x256
CENTER = 4                 # index of the centre crop among the ten


def ten_crop_offsets(size=CROP):
    """spec §4: four corners and the centre as (top, left), then the same five flipped.
    For the paper's 224: edge 32, centre 16. For Caffe's 227 (bvlc_alexnet): 29 and 14,
    the offsets Caffe's own centre crop and oversampling take."""
    edge = SIZE - size
    return ((0, 0), (0, edge), (edge, 0), (edge, edge), (edge // 2, edge // 2))


EDGE = SIZE - CROP         # 32: the last offset of a 224 crop in a 256 image
SPAN = EDGE + 1            # 33 offsets per axis (§4.1)
TEN_CROP_OFFSETS = ten_crop_offsets(CROP)


# torchvision's ImageNet statistics in 0..1 units (its references' Normalize): input_scale="unit".
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)


def _chw_mean(mean):
    return np.ascontiguousarray(np.asarray(mean, dtype=np.float32).transpose(2, 0, 1))


def input_scaling(mean, input_scale="raw"):
    """(CHW image to subtract from the raw pixels, per-channel factor to multiply by after, or None).

    raw (spec §2): the mean image, no factor. unit (failure mode): torchvision's
    x / 255 - m, divided by s, written as (x - 255 m) * 1 / (255 s).
    """
    if input_scale == "raw":
        return _chw_mean(mean), None
    if input_scale != "unit":
        raise ValueError(f"input_scale={input_scale!r}: choose 'raw' or 'unit'")
    offset = np.broadcast_to(255 * np.asarray(TORCHVISION_MEAN, np.float32)[:, None, None], (3, SIZE, SIZE))
    factor = (1.0 / (255 * np.asarray(TORCHVISION_STD, np.float64))).astype(np.float32)[:, None, None]
    return offset, factor


def _check_crop(size):
    if not 0 < size <= SIZE:
        raise ValueError(f"crop {size}: the crops are taken from {SIZE}x{SIZE} images; choose at most {SIZE}")
    return size


def crop(image, mean_chw, top, left, flip, out=None, size=CROP):
    """The size x size patch (224 by default) of (image - mean) at (top, left), flipped
    left-right if asked, float32 CHW.

    One pass: the uint8 HWC view and the CHW mean are read through strided views
    (transposed, flipped) and subtracted straight into a contiguous CHW buffer.
    """
    src = image[top:top + size, left:left + size].transpose(2, 0, 1)
    m = mean_chw[:, top:top + size, left:left + size]
    if flip:
        src, m = src[:, :, ::-1], m[:, :, ::-1]
    if out is None:
        out = np.empty((3, size, size), np.float32)
    np.subtract(src, m, out=out, dtype=np.float32)
    return out


class TrainTransform:
    """§4.1: random 224 crop (`crop`: the model config's), flip with p=0.5, mean image
    subtracted at the same crop and flip, and the PCA colour shift 255 * P (alpha * lambda),
    alpha ~ N(0, 0.1^2) drawn once per image per presentation (spec §2 for the units).

    Deterministic in (seed, epoch, sample index), so a resumed run sees the same
    crops, and independent across samples, workers and replicas.
    """

    def __init__(self, mean, eigval, eigvec, seed=0, pca_std=0.1, input_scale="raw", crop=CROP):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.mean_chw, self.factor = input_scaling(mean, input_scale)
        self.eigval, self.eigvec = np.asarray(eigval, np.float64), np.asarray(eigvec, np.float64)
        self.seed, self.pca_std, self.epoch = seed, pca_std, 0
        self.size = _check_crop(crop)
        self.span = SIZE - self.size + 1      # 33 offsets per axis for 224 (§4.1), 30 for 227

    def draw(self, index):
        """(top, left, flip, alpha) for one presentation of sample `index`."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        top, left = rng.integers(0, self.span, size=2)
        flip = bool(rng.random() < 0.5)
        alpha = rng.normal(0.0, self.pca_std, size=3)
        return int(top), int(left), flip, alpha

    def shift(self, alpha):
        return (255.0 * self.eigvec @ (alpha * self.eigval)).astype(np.float32)

    def __call__(self, image, index):
        top, left, flip, alpha = self.draw(index)
        patch = crop(image, self.mean_chw, top, left, flip, size=self.size)
        patch += self.shift(alpha)[:, None, None]
        if self.factor is not None:
            patch *= self.factor
        return torch.from_numpy(patch)


class EvalTransform:
    """§4: the centre crop (crops=1) or the ten crops (crops=10) of (image - mean), of side
    `crop` (the model config's), scaled as the training inputs were (`input_scale`)."""

    def __init__(self, mean, crops=1, input_scale="raw", crop=CROP):
        if crops not in (1, 10):
            raise ValueError(f"crops={crops}: choose 1 (centre) or 10 (corners, centre and flips)")
        (self.mean_chw, self.factor), self.crops = input_scaling(mean, input_scale), crops
        self.size = _check_crop(crop)
        self.offsets = ten_crop_offsets(self.size)

    def __call__(self, image, index=None):
        size = self.size
        if self.crops == 1:
            out = crop(image, self.mean_chw, *self.offsets[CENTER], False, size=size)
        else:
            out = np.empty((10, 3, size, size), np.float32)
            for i, (flip, (top, left)) in enumerate((f, o) for f in (False, True) for o in self.offsets):
                crop(image, self.mean_chw, top, left, flip, out=out[i], size=size)
        if self.factor is not None:
            out *= self.factor
        return torch.from_numpy(out)
