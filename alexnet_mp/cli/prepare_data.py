"""Convert an image tree into a prepared 256x256 store with its statistics (§2).

The code behind tools/prepare_data.py, whose docstring has the exact command lines.
"""
import os
import sys

from alexnet_mp.cli import ArgumentParser, check_at_least, tool
from alexnet_mp.data.prepare import prepare


def parse_args(argv):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", help="train/ and val/ (or valid/) of class folders, class folders with --val-split, "
                               "Kaggle's ImageNet, TinyImageNet-200, or a CIFAR-10/100 python folder")
    p.add_argument("out", help="folder for the prepared store")
    p.add_argument("-j", "--workers", type=int, default=os.cpu_count(), help="conversion processes")
    p.add_argument("--labels", help="CSV of filename,class (or Kaggle's LOC_val_solution.csv) for a flat "
                                    "val/ folder")
    p.add_argument("--names", help="file of '<folder> <human name>' lines, kept with the class list")
    p.add_argument("--format", choices=("raw", "jpeg"), default="raw",
                   help="raw: uint8 pixels, fastest and exact (196 KB/image); "
                        "jpeg: quality-95 JPEG, about 7x smaller (for ImageNet-sized sets)")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--val-split", type=float, metavar="F",
                       help="class folders with no val split: hold out about a fraction F of each class, "
                            "chosen by a hash of each file's path (files added later never move)")
    split.add_argument("--no-val", action="store_true",
                       help="class folders with no val split: make a train-only store")
    args = p.parse_args(argv)
    check_at_least(("-j", args.workers, 1))
    return args


@tool
def main(argv=None):
    args = parse_args(argv)
    prepare(args.src, args.out, args.workers, args.labels, args.names, args.format, val_split=args.val_split,
            no_val=args.no_val)
    return 0


if __name__ == "__main__":
    sys.exit(main())
