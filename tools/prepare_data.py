"""Convert an image tree into a prepared 256x256 store with its statistics (§2).

    python tools/prepare_data.py SRC OUT [-j N] [--labels CSV] [--names FILE] [--format raw|jpeg]
    alexnet-prepare ~/data/imagenet ~/data/imagenet-256 -j 16 --format jpeg --names LOC_synset_mapping.txt

SRC holds train/ and val/ (the ImageNet layout) or class folders directly.
A flat val/ folder needs --labels (a CSV of filename,class). A re-run resumes
and skips finished images. Undecodable files are listed in OUT/<split>/report.txt.
"""
import sys

from alexnet_mp.cli.prepare_data import main

if __name__ == "__main__":
    sys.exit(main())
