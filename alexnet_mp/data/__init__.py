"""Images in, batches out: the prepared store, its checks, the paper's crops, the loaders.

`images` reads an image file as §2 stores it; `layouts` recognises the datasets
users bring (with `sources` and `cifar`); `prepare` converts them into a store; `storecheck` checks every file of a store when it opens; `store`
reads one split; `transforms` are §4.1's crops and colour shift; `loader` the
resumable sampler and the workers; `demo_set` the built-in procedural set.

A store (made by `alexnet_mp.data.prepare`) holds, per split, every image at
256x256x3 in one file read through a memory map, in one of two formats (the
measurements behind them are in docs/data.md):

* raw: uint8 pixels, a sample is one contiguous 196,608-byte read with nothing
  to decode. Fastest, exact; about 250 GB for ImageNet's training set.
* jpeg: the 256x256 images re-encoded at quality 95, about 7x smaller, decoded
  per sample with torchvision.io.

Layout:

    STORE/classes.json            {"classes": [folder names], "names": {folder: human name},
                                   "source": SRC, "exif_orientation": true, "layout": what SRC was
                                   taken for, and where it applies: "val_split": {"fraction", "rule"}
                                   or "no_val": true; CIFAR-100's "coarse_classes": {fine: coarse}}
    STORE/<split>/images.u8       raw: N x 256 x 256 x 3, uint8, RGB
    STORE/<split>/images.jpg      jpeg: the encoded images back to back, in any order
    STORE/<split>/offsets.i64     jpeg: per image (byte offset, length)
    STORE/<split>/index.json      {"files": [...], "labels": [...], "format": "raw" | "jpeg"}
    STORE/<split>/status.u8       per image: 0 to do, 1 converted, 2 could not be decoded
    STORE/<split>/report.txt      the images that could not be decoded, with the reason
    STORE/train/stats.npz         mean image (float64) and the RGB PCA (0..1 units)
"""
