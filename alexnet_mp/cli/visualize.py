"""See what the network learned: conv1 kernels per column, training curves, fc7 neighbours.

The code behind tools/visualize.py, whose docstring has the exact command lines.
"""
import sys

from alexnet_mp.cli import ArgumentParser, check_output_file, shown, tool
from alexnet_mp.errors import UsageError
from alexnet_mp.eval.visualize import curves_file, figure_formats, filters_file, image_formats, neighbours_file


def filters(args):
    per_column, scores = filters_file(args.checkpoint, args.out)
    for c, score in enumerate(per_column):
        print(f"column {c}: colour-specificity {score:.3f} (0 = greyscale kernels, 2/3 = one colour channel)")
    print(f"wrote {args.out}")
    return scores


def curves(args):
    curves_file(args.metrics, args.out, warn=lambda line: print(line, file=sys.stderr))
    print(f"wrote {args.out}")


def neighbours(args):
    idx, store = neighbours_file(args.checkpoint, args.data_path, args.query, args.out, args.k, args.batch_size,
                                 args.workers)
    for path, row in zip(args.query, idx):
        print(f"{shown(path)}: " + ", ".join(shown(store.files[i]) for i in row))
    print(f"wrote {args.out}")
    return idx


def parse_args(argv):
    p = ArgumentParser(description="Figures of a trained alexnet_mp checkpoint")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("filters", help="paper Figure 3: conv1 kernels per column")
    f.add_argument("--checkpoint", required=True)
    f.add_argument("--out", default="filters.png")
    c = sub.add_parser("curves", help="loss, error and learning rate against epoch")
    c.add_argument("--metrics", required=True)
    c.add_argument("--out", default="curves.png")
    n = sub.add_parser("neighbours", help="paper Figure 4: nearest training images in fc7")
    n.add_argument("--checkpoint", required=True)
    n.add_argument("--data-path", required=True)
    n.add_argument("--query", nargs="+", required=True)
    n.add_argument("--out", default="neighbours.png")
    n.add_argument("-k", type=int, default=6)
    n.add_argument("-b", "--batch-size", type=int, default=32)
    n.add_argument("-j", "--workers", type=int, default=0)
    return p.parse_args(argv)


def check_args(args):
    """Ranges and the output file, before a checkpoint is read: one line naming the fix."""
    for flag, name, low in (("-k", "k", 1), ("-b", "batch_size", 1), ("-j", "workers", 0)):
        if hasattr(args, name) and getattr(args, name) < low:
            raise UsageError(f"{flag} {getattr(args, name)} is out of range: it must be at least {low}")
    check_output_file(args.out, "--out", figure_formats() if args.command == "curves" else list(image_formats()))
    return args


@tool
def main(argv=None):
    args = check_args(parse_args(argv))
    {"filters": filters, "curves": curves, "neighbours": neighbours}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
