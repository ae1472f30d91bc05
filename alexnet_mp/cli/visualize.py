"""See what the network learned: conv1 kernels per column, training curves, fc7 neighbours.

The code behind tools/visualize.py, whose docstring has the exact command lines.
"""
import argparse
import os
import sys

import numpy as np
import torch

from alexnet_mp import viz
from alexnet_mp.cli import tool
from alexnet_mp.data import EvalTransform, Store, StoreDataset
from alexnet_mp.errors import UsageError
from alexnet_mp.inference import load_for_inference
from alexnet_mp.placement import input_device
from alexnet_mp.prepare import to_256


def filters(args):
    model, _, _, _ = load_for_inference(args.checkpoint)
    w = model.canonical_state_dict()["conv1.weight"].numpy()
    columns = model.config.columns
    viz.filters_grid(w, columns).save(args.out)
    scores = viz.colour_specificity(w)
    per_column = len(w) // columns
    for c in range(columns):
        print(f"column {c}: colour-specificity {scores[per_column * c:per_column * (c + 1)].mean():.3f} "
              f"(0 = greyscale kernels, 2/3 = one colour channel)")
    print(f"wrote {args.out}")
    return scores


def curves(args):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("curves needs matplotlib: pip install 'alexnet_mp[viz]' (or pip install matplotlib)")
    if not os.path.isfile(args.metrics):
        raise UsageError(f"no metrics file at {args.metrics}: pass the metrics.jsonl in a training --output-dir")
    viz.curves_figure(viz.read_metrics(args.metrics), args.out)
    print(f"wrote {args.out}")


def neighbours(args):
    model, _, _, mean = load_for_inference(args.checkpoint, args.data_path, need_mean=True)
    store = Store(args.data_path, "train")
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
    viz.neighbours_grid(queries, [[store[i][0] for i in row] for row in idx]).save(args.out)
    for path, row in zip(args.query, idx):
        print(f"{path}: " + ", ".join(store.files[i] for i in row))
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
        from PIL import Image
        Image.fromarray(np.asarray(val[i][0])).save(path)
        queries.append(path)
    main(["filters", "--checkpoint", ckpt, "--out", os.path.join(fig, "filters.png")])
    main(["curves", "--metrics", os.path.join(out, "metrics.jsonl"), "--out", os.path.join(fig, "curves.png")])
    main(["neighbours", "--checkpoint", ckpt, "--data-path", store, "--out", os.path.join(fig, "neighbours.png"),
          "--query"] + queries)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Figures of a trained alexnet_mp checkpoint")
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


@tool
def main(argv=None):
    args = parse_args(argv)
    {"filters": filters, "curves": curves, "neighbours": neighbours}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
