"""Convert an image tree into a prepared 256x256 store with its statistics (§2).

The code behind tools/prepare_data.py, whose docstring has the exact command lines.
"""
import os
import sys

from alexnet_mp.cli import ArgumentParser, check_at_least, tool
from alexnet_mp.data.prepare import prepare


def parse_args(argv):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", help="image tree: train/<class>/*, val/<class>/* (or class folders)")
    p.add_argument("out", help="folder for the prepared store")
    p.add_argument("-j", "--workers", type=int, default=os.cpu_count(), help="conversion processes")
    p.add_argument("--labels", help="CSV of filename,class for a flat val/ folder")
    p.add_argument("--names", help="file of '<folder> <human name>' lines, kept with the class list")
    p.add_argument("--format", choices=("raw", "jpeg"), default="raw",
                   help="raw: uint8 pixels, fastest and exact (196 KB/image); "
                        "jpeg: quality-95 JPEG, ~8x smaller (for ImageNet-sized sets)")
    args = p.parse_args(argv)
    check_at_least(("-j", args.workers, 1))
    return args


@tool
def main(argv=None):
    args = parse_args(argv)
    prepare(args.src, args.out, args.workers, args.labels, args.names, args.format)
    return 0


if __name__ == "__main__":
    sys.exit(main())
