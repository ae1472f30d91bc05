"""Reading a prepared store, and the paper's crops for training and testing (§4.1).

A store (made by `alexnet_mp.prepare`) holds, per split, every image at
256x256x3 in one file read through a memory map, in one of two formats (the
README has the measurements behind them):

* raw: uint8 pixels, a sample is one contiguous 196,608-byte read with nothing
  to decode. Fastest, exact; about 250 GB for ImageNet's training set.
* jpeg: the 256x256 images re-encoded at quality 95, about 8x smaller, decoded
  per sample with torchvision.io.

Layout:

    STORE/classes.json            {"classes": [folder names], "names": {folder: human name}}
    STORE/<split>/images.u8       raw: N x 256 x 256 x 3, uint8, RGB
    STORE/<split>/images.jpg      jpeg: the encoded images back to back, in any order
    STORE/<split>/offsets.i64     jpeg: per image (byte offset, length)
    STORE/<split>/index.json      {"files": [...], "labels": [...], "format": "raw" | "jpeg"}
    STORE/<split>/status.u8       per image: 0 to do, 1 converted, 2 could not be decoded
    STORE/<split>/report.txt      the images that could not be decoded, with the reason
    STORE/train/stats.npz         mean image (float64) and the RGB PCA (0..1 units)

Inputs are raw 0..255 RGB minus the training set's per-pixel mean image; no
division by a standard deviation (spec §2). `input_scale="unit"` (a failure
mode of re-implementations, opt-in for the study) instead divides by 255 and
standardises each channel with torchvision's ImageNet mean and std, as
torchvision's `ToTensor` + `Normalize` do; the crops, flips and PCA draws stay
the same, and the PCA shift is added to the raw pixels before the scaling.
"""
import os
import signal
import warnings

import numpy as np
import torch

from .config import CROP, IMAGE_SIZE
from .rundir import close_inherited_locks
from .storecheck import DONE, StoreError, read_classes, read_split, read_stats  # noqa: F401 (re-exported)

try:
    # torchvision 0.29 marks its codecs deprecated in favour of torchcodec and warns
    # on every call, but its decoder is still the fastest here (README); PIL takes
    # over once it is gone.
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as _tv_decode_jpeg

    def decode_jpeg(data):
        return _tv_decode_jpeg(data, mode=ImageReadMode.RGB)
except ImportError:            # a torchvision without image codecs: PIL does it, slower
    def decode_jpeg(data):
        import io

        from PIL import Image
        with Image.open(io.BytesIO(data.numpy().tobytes())) as img:
            return torch.from_numpy(np.asarray(img.convert("RGB"))).permute(2, 0, 1)

SIZE = IMAGE_SIZE          # §2: images stored at 256x256
EDGE = SIZE - CROP         # 32: the last offset of a 224 crop in a 256 image
SPAN = EDGE + 1            # 33 offsets per axis (§4.1)
# spec §4: four corners and the centre as (top, left), then the same five flipped.
TEN_CROP_OFFSETS = ((0, 0), (0, EDGE), (EDGE, 0), (EDGE, EDGE), (EDGE // 2, EDGE // 2))
CENTER = 4                 # index of the centre crop among the ten


def load_stats(store):
    """(mean image HxWx3 float64, eigenvalues (3,), eigenvectors (3, 3) as columns)."""
    return read_stats(store)


class Store:
    """One split of a prepared store: `store[i]` is (256x256x3 uint8 array, label)."""

    def __init__(self, root, split):
        self.root, self.split = root, split
        self.classes = read_classes(root)["classes"]
        folder = os.path.join(root, split)
        index, status = read_split(root, split, len(self.classes))
        if (status == 0).any():
            raise StoreError(f"the store {root} is incomplete ({int((status == 0).sum())} images of "
                             f"'{split}' not converted): re-run tools/prepare_data.py to finish it")
        if not (status == DONE).any():
            raise StoreError(f"split '{split}' of the store {root} has no images ({len(status)} could not be "
                             f"decoded, listed in {os.path.join(folder, 'report.txt')}): add readable images "
                             f"to the source's {split}/ folder and re-run tools/prepare_data.py")
        self.slots = np.flatnonzero(status == DONE)
        self.files = [index["files"][s] for s in self.slots]
        self.labels = np.asarray(index["labels"], dtype=np.int64)[self.slots]
        self.format = index.get("format", "raw")
        self._folder, self._total = folder, len(status)
        self._images = self._offsets = None

    def __len__(self):
        return len(self.slots)

    @property
    def images(self):
        # Opened lazily so that each DataLoader worker maps the file itself.
        if self._images is None:
            if self.format == "raw":
                self._images = np.memmap(os.path.join(self._folder, "images.u8"), dtype=np.uint8, mode="r",
                                         shape=(self._total, SIZE, SIZE, 3))
            else:
                self._images = np.memmap(os.path.join(self._folder, "images.jpg"), dtype=np.uint8, mode="r")
                self._offsets = np.fromfile(os.path.join(self._folder, "offsets.i64"), np.int64).reshape(-1, 2)
        return self._images

    def read_slot(self, slot):
        """The 256x256x3 uint8 image stored in `slot` (of all files, converted or not)."""
        images = self.images
        if self.format == "raw":
            return images[slot]
        start, length = self._offsets[slot]
        encoded = torch.from_numpy(np.array(images[start:start + length]))
        return decode_jpeg(encoded).permute(1, 2, 0).numpy()

    def __getitem__(self, i):
        return self.read_slot(self.slots[i]), int(self.labels[i])

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_images"] = state["_offsets"] = None
        return state


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


def crop(image, mean_chw, top, left, flip, out=None):
    """The 224 patch of (image - mean) at (top, left), flipped left-right if asked, float32 CHW.

    One pass: the uint8 HWC view and the CHW mean are read through strided views
    (transposed, flipped) and subtracted straight into a contiguous CHW buffer.
    """
    src = image[top:top + CROP, left:left + CROP].transpose(2, 0, 1)
    m = mean_chw[:, top:top + CROP, left:left + CROP]
    if flip:
        src, m = src[:, :, ::-1], m[:, :, ::-1]
    if out is None:
        out = np.empty((3, CROP, CROP), np.float32)
    np.subtract(src, m, out=out, dtype=np.float32)
    return out


class TrainTransform:
    """§4.1: random 224 crop, flip with p=0.5, mean image subtracted at the same
    crop and flip, and the PCA colour shift 255 * P (alpha * lambda), alpha ~ N(0, 0.1^2)
    drawn once per image per presentation (spec §2 for the units).

    Deterministic in (seed, epoch, sample index), so a resumed run sees the same
    crops, and independent across samples, workers and replicas.
    """

    def __init__(self, mean, eigval, eigvec, seed=0, pca_std=0.1, input_scale="raw"):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.mean_chw, self.factor = input_scaling(mean, input_scale)
        self.eigval, self.eigvec = np.asarray(eigval, np.float64), np.asarray(eigvec, np.float64)
        self.seed, self.pca_std, self.epoch = seed, pca_std, 0

    def draw(self, index):
        """(top, left, flip, alpha) for one presentation of sample `index`."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        top, left = rng.integers(0, SPAN, size=2)
        flip = bool(rng.random() < 0.5)
        alpha = rng.normal(0.0, self.pca_std, size=3)
        return int(top), int(left), flip, alpha

    def shift(self, alpha):
        return (255.0 * self.eigvec @ (alpha * self.eigval)).astype(np.float32)

    def __call__(self, image, index):
        top, left, flip, alpha = self.draw(index)
        patch = crop(image, self.mean_chw, top, left, flip)
        patch += self.shift(alpha)[:, None, None]
        if self.factor is not None:
            patch *= self.factor
        return torch.from_numpy(patch)


class EvalTransform:
    """§4: the centre crop (crops=1) or the ten crops (crops=10) of (image - mean),
    scaled as the training inputs were (`input_scale`)."""

    def __init__(self, mean, crops=1, input_scale="raw"):
        if crops not in (1, 10):
            raise ValueError(f"crops={crops}: choose 1 (centre) or 10 (corners, centre and flips)")
        (self.mean_chw, self.factor), self.crops = input_scaling(mean, input_scale), crops

    def __call__(self, image, index=None):
        if self.crops == 1:
            out = crop(image, self.mean_chw, *TEN_CROP_OFFSETS[CENTER], False)
        else:
            out = np.empty((10, 3, CROP, CROP), np.float32)
            for i, (flip, (top, left)) in enumerate((f, o) for f in (False, True) for o in TEN_CROP_OFFSETS):
                crop(image, self.mean_chw, top, left, flip, out=out[i])
        if self.factor is not None:
            out *= self.factor
        return torch.from_numpy(out)


class StoreDataset(torch.utils.data.Dataset):
    def __init__(self, store, transform):
        self.store, self.transform = store, transform

    def __len__(self):
        return len(self.store)

    def __getitem__(self, i):
        image, label = self.store[i]
        return self.transform(image, i), label


class EpochSampler(torch.utils.data.Sampler):
    """This replica's share of an epoch, resumable part-way through.

    Training (shuffle=True): a permutation drawn from (seed, epoch), cut into
    global batches of `replicas * batch_size`; replica r takes the r-th slice of
    each. So R replicas at batch b see, step for step, exactly the images one
    process sees at batch R*b, and every replica runs the same number of steps
    (gradient averaging needs that). The tail that fills no global batch is
    left out of the epoch.
    Evaluation (shuffle=False): contiguous, uneven shards; every image exactly once.
    `start` skips the samples an interrupted run already consumed.
    """

    def __init__(self, size, replicas=1, replica=0, shuffle=True, seed=0, batch_size=1):
        self.size, self.replicas, self.replica = size, replicas, replica
        self.shuffle, self.seed, self.batch_size = shuffle, seed, batch_size
        self.epoch, self.start = 0, 0

    def indices(self):
        if not self.shuffle:
            lo, hi = self.replica * self.size // self.replicas, (self.replica + 1) * self.size // self.replicas
            return list(range(lo, hi))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        b, per_step = self.batch_size, self.batch_size * self.replicas
        return [i for s in range(0, self.size - per_step + 1, per_step)
                for i in order[s + self.replica * b:s + (self.replica + 1) * b]]

    def __iter__(self):
        return iter(self.indices()[self.start:])

    def __len__(self):
        return len(self.indices()) - self.start

    def state_dict(self):
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state):
        self.epoch, self.start, self.seed = state["epoch"], state["start"], state["seed"]


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _worker_init(worker_id):
    """DataLoader workers leave SIGTERM and SIGINT to the main process, which stops at
    its next log step and checkpoints: a scheduler's `kill -- -PGID` or a Ctrl-C reaches every
    process in the group, and a worker dying of it would abort the main process first."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)      # also drops one that arrived while blocked
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    close_inherited_locks()


class Loader(torch.utils.data.DataLoader):
    """A DataLoader whose workers start with SIGTERM and SIGINT blocked until `_worker_init`
    ignores them: no moment exists in which a worker can still die of one."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, worker_init_fn=_worker_init, **kwargs)

    def __iter__(self):
        if not self.num_workers:
            return super().__iter__()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)   # a fork inherits the mask
        try:
            return super().__iter__()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)   # one that came meanwhile is delivered now


def train_loader(store_root, batch_size, workers, seed=0, replicas=1, replica=0, pca_std=0.1, input_scale="raw",
                 pin_memory=False):
    store = Store(store_root, "train")
    mean, eigval, eigvec = load_stats(store_root)
    transform = TrainTransform(mean, eigval, eigvec, seed, pca_std, input_scale)
    sampler = EpochSampler(len(store), replicas, replica, shuffle=True, seed=seed, batch_size=batch_size)
    # Its own generator, so that starting an epoch never draws from torch's global
    # RNG (dropout's stream): a resumed run then reproduces an uninterrupted one.
    loader = Loader(StoreDataset(store, transform), batch_size=batch_size,
                    sampler=sampler, num_workers=workers, drop_last=True,
                    pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed))
    return loader, sampler, transform


def eval_loader(store_root, split, batch_size, workers, crops=1, replicas=1, replica=0, input_scale="raw",
                pin_memory=False):
    """Batches of (crops, label) in dataset order; pin_memory only for a CUDA consumer."""
    store = Store(store_root, split)
    mean, _, _ = load_stats(store_root)
    sampler = EpochSampler(len(store), replicas, replica, shuffle=False)
    loader = Loader(StoreDataset(store, EvalTransform(mean, crops, input_scale)), batch_size=batch_size,
                    sampler=sampler, num_workers=workers, pin_memory=pin_memory, generator=torch.Generator())
    return loader, sampler
