"""Reading a prepared store: one split's images by index, decoded if it is a jpeg store.

Every file is checked when a split opens (`alexnet_mp.data.storecheck`).
"""
import os
import warnings

import numpy as np
import torch

from alexnet_mp.config import IMAGE_SIZE
from alexnet_mp.data.storecheck import DONE, read_classes, read_split
from alexnet_mp.errors import StoreError

try:
    # torchvision 0.29 marks its codecs deprecated in favour of torchcodec and warns
    # on every call, but its decoder is still the fastest here (docs/data.md); PIL takes
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


class StoreDataset(torch.utils.data.Dataset):
    def __init__(self, store, transform):
        self.store, self.transform = store, transform

    def __len__(self):
        return len(self.store)

    def __getitem__(self, i):
        image, label = self.store[i]
        return self.transform(image, i), label
