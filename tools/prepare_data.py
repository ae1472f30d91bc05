"""Convert an image tree into a prepared 256x256 store with its statistics (§2).

    python tools/prepare_data.py SRC OUT [-j N] [--labels CSV] [--names FILE] [--format raw|jpeg]
    alexnet-prepare ~/data/imagenet ~/data/imagenet-256 -j 16 --format jpeg --names LOC_synset_mapping.txt

SRC holds train/ and val/ (the ImageNet layout) or class folders directly.
A flat val/ folder needs --labels (a CSV of filename,class). A re-run resumes
and skips finished images. Undecodable files are listed in OUT/<split>/report.txt.
"""
import argparse
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from alexnet_mp.data import StoreError  # noqa: E402
from alexnet_mp.prepare import prepare  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", help="image tree: train/<class>/*, val/<class>/* (or class folders)")
    p.add_argument("out", help="folder for the prepared store")
    p.add_argument("-j", "--workers", type=int, default=os.cpu_count(), help="conversion processes")
    p.add_argument("--labels", help="CSV of filename,class for a flat val/ folder")
    p.add_argument("--names", help="file of '<folder> <human name>' lines, kept with the class list")
    p.add_argument("--format", choices=("raw", "jpeg"), default="raw",
                   help="raw: uint8 pixels, fastest and exact (196 KB/image); "
                        "jpeg: quality-95 JPEG, ~8x smaller (for ImageNet-sized sets)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        prepare(args.src, args.out, max(1, args.workers), args.labels, args.names, args.format)
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
