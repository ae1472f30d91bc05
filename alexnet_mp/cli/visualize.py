"""See what the network learned: conv1 kernels per column, training curves, fc7 neighbours.

The code behind tools/visualize.py, whose docstring has the exact command lines.
"""
import os
import sys

import numpy as np
import torch
from PIL import Image

from alexnet_mp import viz
from alexnet_mp.atomic import atomic_write
from alexnet_mp.cli import ArgumentParser, check_output_file, shown, tool
from alexnet_mp.data import EvalTransform, Store, StoreDataset
from alexnet_mp.errors import UsageError
from alexnet_mp.inference import load_for_inference
from alexnet_mp.placement import input_device
from alexnet_mp.prepare import to_256
from alexnet_mp.rundir import read_records


COMMON = (".png", ".jpg", ".jpeg", ".pdf", ".svg", ".tif", ".bmp", ".webp")     # named first in messages


def _common_first(extensions):
    return sorted(extensions, key=lambda e: (COMMON.index(e) if e in COMMON else len(COMMON), e))


def image_formats():
    """{'.png': 'PNG', ...}: the file types PIL can write, the common ones first."""
    Image.init()
    formats = {ext: fmt for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
    return {ext: formats[ext] for ext in _common_first(formats)}


def save_image(img, path):
    fmt = image_formats()[os.path.splitext(path)[1].lower()]
    atomic_write(path, lambda f: img.save(f, format=fmt))


def filters(args):
    model, _, _, _ = load_for_inference(args.checkpoint)
    w = model.canonical_state_dict()["conv1.weight"].numpy()
    columns = model.config.columns
    save_image(viz.filters_grid(w, columns), args.out)
    scores = viz.colour_specificity(w)
    per_column = len(w) // columns
    for c in range(columns):
        print(f"column {c}: colour-specificity {scores[per_column * c:per_column * (c + 1)].mean():.3f} "
              f"(0 = greyscale kernels, 2/3 = one colour channel)")
    print(f"wrote {args.out}")
    return scores


def figure_formats():
    try:
        import matplotlib
    except ImportError:
        raise UsageError("curves needs matplotlib: pip install 'alexnet_mp[viz]' (or pip install matplotlib)")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    return _common_first("." + ext for ext in Figure().canvas.get_supported_filetypes())


def curves(args):
    if not os.path.isfile(args.metrics):
        raise UsageError(f"no metrics file at {args.metrics}: pass the metrics.jsonl in a training --output-dir")
    records = read_records(args.metrics, warn=lambda line: print(line, file=sys.stderr))
    if not records:
        raise UsageError(f"{args.metrics} holds no records yet: plot it after the first logged step "
                         f"(every --print-freq steps)")
    ext = os.path.splitext(args.out)[1].lower()
    atomic_write(args.out, lambda f: viz.curves_figure(records, f, ext[1:]))
    print(f"wrote {args.out}")


def neighbours(args):
    model, _, _, mean = load_for_inference(args.checkpoint, args.data_path, need_mean=True)
    store = Store(args.data_path, "train")
    if args.k > len(store):
        raise UsageError(f"-k {args.k} is more than the {len(store)} training images of {args.data_path}: "
                         f"lower -k")
    centre = EvalTransform(mean, crops=1, input_scale=model.config.input_scale)
    queries = []
    for path in args.query:
        try:
            queries.append(to_256(path))
        except Exception as e:
            raise UsageError(f"cannot read query image {path} ({type(e).__name__}): pass a JPEG or PNG file")
    q = torch.stack([centre(img) for img in queries])
    loader = torch.utils.data.DataLoader(StoreDataset(store, centre), batch_size=args.batch_size,
                                         num_workers=args.workers)
    _, idx = viz.nearest(model, q, loader, input_device(model), k=args.k)
    save_image(viz.neighbours_grid(queries, [[store[i][0] for i in row] for row in idx]), args.out)
    for path, row in zip(args.query, idx):
        print(f"{shown(path)}: " + ", ".join(shown(store.files[i]) for i in row))
    print(f"wrote {args.out}")
    return idx


def demo_figures(out, store):
    """The three figures of a demo run, into <out>/figures/."""
    fig = os.path.join(out, "figures")
    os.makedirs(fig, exist_ok=True)
    ckpt = os.path.join(out, "model_best.pt")
    val = Store(store, "val")
    queries = []
    for c in range(0, len(val.classes), 3):
        i = int(np.flatnonzero(val.labels == c)[0])
        path = os.path.join(fig, f"query_{c}.png")
        Image.fromarray(np.asarray(val[i][0])).save(path)
        queries.append(path)
    main(["filters", "--checkpoint", ckpt, "--out", os.path.join(fig, "filters.png")])
    main(["curves", "--metrics", os.path.join(out, "metrics.jsonl"), "--out", os.path.join(fig, "curves.png")])
    main(["neighbours", "--checkpoint", ckpt, "--data-path", store, "--out", os.path.join(fig, "neighbours.png"),
          "--query"] + queries)


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
