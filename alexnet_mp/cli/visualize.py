"""See what the network learned: conv1 kernels per column, training curves, fc7 neighbours.

The code behind tools/visualize.py, whose docstring has the exact command lines.
"""
import sys

from alexnet_mp.checkpoint import load, model_config
from alexnet_mp.cli import (PAPER_MODEL, ArgumentParser, add_device_flag, add_variant_flags, check_output_file, shown,
                            tool)
from alexnet_mp.config import ModelConfig
from alexnet_mp.distributed.placement import one_device
from alexnet_mp.errors import UsageError
from alexnet_mp.eval.archfig import arch_file
from alexnet_mp.eval.visualize import curves_file, figure_formats, filters_file, image_formats, neighbours_file

# train's variant flags, as (flag, attribute, the paper's value): the network `arch` draws without --checkpoint.
VARIANT_FLAGS = (("--columns", "columns", PAPER_MODEL.columns), ("--no-lrn", "lrn", PAPER_MODEL.lrn),
                 ("--pool", "pool", PAPER_MODEL.pool_size), ("--input-scale", "input_scale", PAPER_MODEL.input_scale),
                 ("--init", "init", PAPER_MODEL.init), ("--batch-norm", "batch_norm", PAPER_MODEL.batch_norm),
                 ("--head", "head", PAPER_MODEL.head))


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
    device = one_device(args.device, warn=lambda line: print(line, file=sys.stderr)) if args.device else None
    idx, store = neighbours_file(args.checkpoint, args.data_path, args.query, args.out, args.k, args.batch_size,
                                 args.workers, device)
    for path, row in zip(args.query, idx):
        print(f"{shown(path)}: " + ", ".join(shown(store.files[i]) for i in row))
    print(f"wrote {args.out}")
    return idx


def arch_config(args):
    """The network to draw: the checkpoint's (its saved config), or the paper's with train's variant flags."""
    if args.checkpoint is None:
        return ModelConfig(columns=args.columns, lrn=args.lrn, pool_size=args.pool, input_scale=args.input_scale,
                           init=args.init, batch_norm=args.batch_norm, head=args.head)
    given = [flag for flag, name, paper in VARIANT_FLAGS if getattr(args, name) != paper]
    if given:
        raise UsageError(f"--checkpoint {args.checkpoint} draws the network it holds: drop {', '.join(given)}, "
                         f"or drop --checkpoint to draw the variant those flags make")
    return model_config(load(args.checkpoint))


def arch(args):
    config = arch_config(args)
    boxes = arch_file(config, args.out)
    print(f"{config.columns} column(s), {len(boxes) - 1} layer boxes, {config.num_classes} classes")
    print(f"wrote {args.out}")
    return boxes


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
    add_device_flag(n)
    a = sub.add_parser("arch", help="paper Figure 2: the architecture, drawn from the table the code builds from")
    a.add_argument("--out", default="arch.png")
    a.add_argument("--checkpoint", help="draw the network this checkpoint holds (default: the paper's, or the "
                                        "variant the flags below make)")
    add_variant_flags(a)
    return p.parse_args(argv)


def check_args(args):
    """Ranges and the output file, before a checkpoint is read: one line naming the fix."""
    for flag, name, low in (("-k", "k", 1), ("-b", "batch_size", 1), ("-j", "workers", 0)):
        if hasattr(args, name) and getattr(args, name) < low:
            raise UsageError(f"{flag} {getattr(args, name)} is out of range: it must be at least {low}")
    check_output_file(args.out, "--out", figure_formats() if args.command in ("curves", "arch")
                      else list(image_formats()))
    return args


@tool
def main(argv=None):
    args = check_args(parse_args(argv))
    {"filters": filters, "curves": curves, "neighbours": neighbours, "arch": arch}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
