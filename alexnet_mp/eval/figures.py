"""Figures: conv1 kernels per column (paper Figure 3), fc7 neighbours (Figure 4), curves.
(The global-average-pool head has no fc7: its neighbours are in its pooled conv5 features.)

Grids are composed with PIL alone; only the training curves need matplotlib.
"""
import numpy as np
import torch
from PIL import Image, ImageDraw

from alexnet_mp.model.arch import ARCH, COLUMNS

KERNELS_PER_ROW = 16     # Figure 3 shows each column's 48 kernels as 3 rows of 16
SCALE, PAD, GAP = 4, 2, 12
CAPTION = 14             # pixels of the line under the neighbours grid


def kernel_tile(k):
    """One 3xKxK kernel as a KxKx3 uint8 image, contrast-normalised on its own."""
    k = np.asarray(k, dtype=np.float64).transpose(1, 2, 0)
    lo, hi = k.min(), k.max()
    return np.round(255 * (k - lo) / (hi - lo if hi > lo else 1.0)).astype(np.uint8)


def kernel_position(column, j, size=ARCH[0].kernel, per_column=ARCH[0].maps):
    """Top-left pixel of column `column`'s kernel j in the filters grid."""
    cell = size * SCALE + PAD
    rows = -(-per_column // KERNELS_PER_ROW)
    block_height = PAD + rows * cell
    return PAD + (j % KERNELS_PER_ROW) * cell, column * (block_height + GAP) + PAD + (j // KERNELS_PER_ROW) * cell


def filters_grid(conv1_weight, columns=COLUMNS):
    """The conv1 kernels, one block per column: the paper's 96 as two blocks of 48,
    column 0 above, column 1 below (the one-column net's 48: one block)."""
    w = np.asarray(conv1_weight)
    per_column, size = w.shape[0] // columns, w.shape[-1]
    cell = size * SCALE + PAD
    rows = -(-per_column // KERNELS_PER_ROW)
    width = PAD + KERNELS_PER_ROW * cell
    height = columns * (PAD + rows * cell) + (columns - 1) * GAP
    canvas = np.full((height, width, 3), 255, np.uint8)
    for column in range(columns):
        for j in range(per_column):
            tile = kernel_tile(w[column * per_column + j]).repeat(SCALE, 0).repeat(SCALE, 1)
            x, y = kernel_position(column, j, size, per_column)
            canvas[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    return Image.fromarray(canvas)


def colour_specificity(kernels):
    """Per kernel: the share of its variance across RGB rather than in its greyscale pattern.

    0 for a grey kernel (R = G = B); 2/3 for a pattern in one channel only; up to 1.
    """
    k = np.asarray(kernels, dtype=np.float64)
    grey = k.mean(axis=1, keepdims=True)
    across = ((k - grey) ** 2).sum(axis=(1, 2, 3))
    total = ((k - k.mean(axis=(1, 2, 3), keepdims=True)) ** 2).sum(axis=(1, 2, 3))
    return across / np.maximum(total, 1e-30)


def feature_space(config):
    """The features `model.features` returns, in words, for the neighbours figure's caption."""
    if config.head == "gap":
        return "pooled conv5 features (each map's mean; the gap head has no fc7)"
    return "fc7 features (Figure 4)"


@torch.no_grad()
def nearest(model, queries, loader, device, k=6):
    """(distances, indices) of each query's k nearest training images in the space of
    `model.features` (fc7; pooled conv5 for the "gap" head: `feature_space`).

    `queries` is (Q, 3, crop, crop); the loader's images stream past in batches and
    only the k best per query are kept, so memory does not grow with the data.
    """
    model.eval()
    q = model.features(queries.to(device)).double().cpu()
    best_d = torch.full((len(q), k), float("inf"), dtype=torch.float64)
    best_i = torch.full((len(q), k), -1, dtype=torch.long)
    offset = 0
    for images, _ in loader:
        f = model.features(images.to(device)).double().cpu()
        d = torch.cdist(q, f)
        idx = torch.arange(offset, offset + len(f)).expand(len(q), -1)
        all_d, all_i = torch.cat([best_d, d], 1), torch.cat([best_i, idx], 1)
        order = all_d.argsort(dim=1, stable=True)[:, :k]
        best_d, best_i = all_d.gather(1, order), all_i.gather(1, order)
        offset += len(f)
    return best_d.numpy(), best_i.numpy()


def neighbours_grid(query_images, neighbour_images, size=96, caption=None):
    """One row per query: the query, a gap, then its neighbours (uint8 HxWx3 arrays); `caption`,
    if given, on a line below them."""
    cols = 1 + max(len(n) for n in neighbour_images)
    rows_height = PAD + len(query_images) * (size + PAD)
    canvas = Image.new("RGB", (PAD + cols * (size + PAD) + GAP, rows_height + (CAPTION if caption else 0)), "white")
    if caption:
        ImageDraw.Draw(canvas).text((PAD, rows_height), caption, fill="black")
    for r, (q, ns) in enumerate(zip(query_images, neighbour_images)):
        y = PAD + r * (size + PAD)
        canvas.paste(Image.fromarray(q).resize((size, size)), (PAD, y))
        for c, n in enumerate(ns):
            canvas.paste(Image.fromarray(n).resize((size, size)), (PAD + GAP + (c + 1) * (size + PAD), y))
    return canvas


def curves_figure(records, out, fmt=None):
    """Loss, train and val top-1/top-5 error, the learning rate, and (where the records carry
    the health figures) each layer's fraction of dead ReLU units, against epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = [r for r in records if "val_top1_err" not in r]
    epochs = [r for r in records if "val_top1_err" in r]
    per_epoch = max((r["step"] for r in epochs[:1]), default=1) / max(epochs[0]["epoch"] + 1, 1) if epochs else 1

    def x(r):
        return r["step"] / per_epoch
    healthy = [r for r in steps if r.get("health")]
    fig, axes = plt.subplots(1, 4 if healthy else 3, figsize=(16 if healthy else 12, 3.2))
    axes[0].plot([x(r) for r in steps], [r["loss"] for r in steps], lw=1)
    axes[0].set(title="training loss", xlabel="epoch")
    for key, style in (("top1_err", "-"), ("top5_err", "--")):
        axes[1].plot([x(r) for r in steps], [r[f"train_{key}"] for r in steps], style, lw=1, label=f"train {key}")
        axes[1].plot([r["epoch"] + 1 for r in epochs], [r[f"val_{key}"] for r in epochs], style,
                     marker="o", label=f"val {key}")
    axes[1].set(title="error", xlabel="epoch", ylim=(0, 1))
    axes[1].legend(fontsize=7)
    axes[2].plot([x(r) for r in steps], [r["lr"] for r in steps])
    axes[2].set(title="learning rate", xlabel="epoch", yscale="log")
    if healthy:
        for layer in healthy[0]["health"]:
            axes[3].plot([x(r) for r in healthy], [r["health"][layer]["dead"] for r in healthy], lw=1, label=layer)
        axes[3].set(title="dead ReLU units (fraction)", xlabel="epoch", ylim=(-0.02, 1.02))
        axes[3].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=80, format=fmt)
    plt.close(fig)
