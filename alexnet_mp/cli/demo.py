"""The demo: train on the built-in procedural dataset, ten-crop evaluate, draw the figures.

The code behind tools/demo.py, whose docstring has the exact command lines.
"""
import os
import sys

from alexnet_mp.cli import ArgumentParser, check_at_least, tool
from alexnet_mp.demo import DemoOptions, run_demo


def parse_args(argv):
    p = ArgumentParser(description="Train, evaluate and visualise on the built-in demo set")
    p.add_argument("--output-dir", default="runs/demo")
    p.add_argument("--cache-dir", default=None, help="where the demo set is generated (default: ~/.cache/alexnet_mp)")
    p.add_argument("-j", "--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--epochs", type=int, help="override the preset's epoch count (a quicker smoke run)")
    p.add_argument("--budget-minutes", type=float, default=10.0,
                   help="fit the demo to this wall time: fewer epochs on a slow machine (0: the whole preset)")
    args = p.parse_args(argv)
    check_at_least(("-j", args.workers, 0))
    if args.epochs is not None:
        check_at_least(("--epochs", args.epochs, 1))
    check_at_least(("--budget-minutes", args.budget_minutes, 0))
    return args


@tool
def main(argv=None):
    args = parse_args(argv)
    run_demo(DemoOptions(args.output_dir, args.cache_dir, args.workers, args.epochs, args.budget_minutes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
