"""Convert an image tree into a prepared 256x256 store with its statistics (§2).

    python tools/prepare_data.py SRC OUT [-j N] [--format raw|jpeg] [--val-split F | --no-val]
                                 [--labels CSV] [--names FILE]
    python tools/prepare_data.py ~/data/insects ~/data/insects-256 --val-split 0.1
    python tools/prepare_data.py ~/data/imagenet-object-localization-challenge ~/data/imagenet-256 -j 16 --format jpeg
    python tools/prepare_data.py ~/data/tiny-imagenet-200 ~/data/tiny-256
    python tools/prepare_data.py ~/data/cifar-10-batches-py ~/data/cifar10-256

SRC is recognised from its files (alexnet_mp.data.layouts): train/ with val/,
valid/ or validation/ (and a labelled test/); class folders with no split, which
need --val-split F or --no-val; Kaggle's ImageNet; TinyImageNet-200; CIFAR-10/100's
python archives. It prints what it took SRC for and names what it did not read.
A flat val/ folder needs --labels (a CSV of filename,class). A re-run resumes
and skips finished images. Undecodable files are listed in OUT/<split>/report.txt.
"""
import sys

from alexnet_mp.cli.prepare_data import main

if __name__ == "__main__":
    sys.exit(main())
