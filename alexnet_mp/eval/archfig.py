"""The paper's Figure 2, drawn from the architecture table (`alexnet_mp.model.arch.ARCH`).

`layout(config)` turns the table and a `ModelConfig` into boxes, one per layer and
column, each with the maps (kernels or neurons) that column computes, the side of
its maps, what follows it (LRN, pooling) and whether it reads both columns (where
the columns exchange: conv3, fc6, fc7, fc8). `draw` puts the boxes on a page. The
figure cannot drift from the code: it has no number of its own. The later departures are
drawn as the table builds them: BatchNorm as "BN" after each conv, the global-average-pool
head as conv5's maps averaged, then fc8 (`layers_of`).
"""
import math
import os
from dataclasses import dataclass

from alexnet_mp.files import atomic_write
from alexnet_mp.model.arch import HEAD, RGB, averages, class_split, conv1_pad, has_norm, layers_of, map_sizes, width

COLUMN_GAP = 2.6         # vertical distance between the two columns' rows
STEP = 1.7               # horizontal distance between layers
EXCHANGE = "tab:red"


@dataclass(frozen=True)
class Box:
    layer: str           # "input", "conv1" .. "fc8"
    column: int          # 0 (drawn on top, "GPU 0" of Figure 2) or 1; the input: -1 (both read it)
    maps: int            # kernels (conv), neurons (fc) or classes (fc8) this column computes
    side: int            # the side of its output maps, before pooling; 0 for a fully connected layer
    pooled: int          # the side after pooling (what the next layer reads); `side` where none
    kernel: str          # "11x11 s4"; "" for the input and the fully connected layers
    exchange: bool       # reads both columns' outputs (§3.2: the columns communicate here)
    lrn: str             # what normalises its output: "LRN" (§3.3), "BN" (batch_norm), both, or ""
    pool: str            # "max-pool 3/2" after it (§3.4), or ""
    x: float             # centre of the box on the page
    y: float
    w: float
    h: float
    average: bool = False    # its maps are averaged over their positions after pooling (the "gap" head)

    @property
    def label(self):
        size = f"{self.side}x{self.side}x{self.maps}" if self.side else f"{self.maps}"
        return f"{self.layer}\n{size}" + (f"\n{self.kernel}" if self.kernel else "")


def _extent(maps, side):
    """(width, height) on the page: a conv box's width grows with the log of its maps and its
    height with the root of its side; a fully connected layer is a bar as tall as log2(neurons)."""
    if not side:
        return 0.2, 0.25 + 0.1 * math.log2(max(maps, 1))
    return 0.15 + 0.045 * math.log2(max(maps, 1)), 0.25 + 0.55 * math.sqrt(side / 13)


def _row(column, columns):
    return (columns - 1 - 2 * column) * COLUMN_GAP / 2


def layout(config):
    """The boxes of Figure 2 for the network `config` describes, input first, then each
    layer's columns in order. Pure arithmetic on the table: no drawing, no torch."""
    columns, sides = config.columns, map_sizes(config)
    side = config.crop + conv1_pad(config)
    w, h = _extent(RGB, config.crop)
    boxes = [Box("input", -1, RGB, config.crop, config.crop, "", False, "", "", 0.0, 0.0, w, h)]
    for i, layer in enumerate(layers_of(config), start=1):
        if layer.kernel:
            conv = (side + 2 * layer.pad - layer.kernel) // layer.stride + 1
            kernel, side = f"{layer.kernel}x{layer.kernel} s{layer.stride}", sides[layer.name]
        else:
            conv, kernel = 0, ""
        lrn = ("LRN across columns" if config.lrn_across_columns else "LRN") if layer.lrn and config.lrn else ""
        lrn = ", ".join(n for n in ("BN" if has_norm(layer, config) else "", lrn) if n)
        pool = f"max-pool {config.pool_size}/{config.pool_stride}" if layer.pool else ""
        for c in range(columns):
            maps = class_split(config.num_classes)[c] if layer is HEAD and columns > 1 else \
                config.num_classes if layer is HEAD else width(layer, columns)
            w, h = _extent(maps, conv)
            exchange = layer.reads == "both" and columns > 1
            boxes.append(Box(layer.name, c, maps, conv, side if conv else 0, kernel, exchange,
                             lrn, pool, i * STEP, _row(c, columns), w, h, averages(layer, config)))
    return boxes


def _title(config):
    what = "the paper's two-column net" if config.columns == 2 else "the one-column net (§3.2's footnote)"
    pooling = f"pooling {config.pool_size}/{config.pool_stride}"
    changes = [s for s, on in (("no LRN", not config.lrn), (pooling, config.pool_size != 3 or config.pool_stride != 2),
                               (f"{config.crop} crop", config.crop != 224), ("BatchNorm", config.batch_norm),
                               ("global-average-pool head", config.head == "gap")) if on]
    return f"AlexNet (Krizhevsky et al. 2012, Figure 2): {what}" + (f", {', '.join(changes)}" if changes else "") + \
        f", {config.num_classes} classes"


def _links(ax, boxes):
    """Arrows from each box to the next layer's: straight within a column, crossing where
    the next layer reads both columns (red: the exchange)."""
    by_layer = {}
    for b in boxes:
        by_layer.setdefault(b.layer, []).append(b)
    names = list(by_layer)
    for prev, name in zip(names, names[1:]):
        for dst in by_layer[name]:
            for src in by_layer[prev]:
                if src.column in (-1, dst.column) or dst.exchange:
                    crossing = src.column not in (-1, dst.column)
                    ax.annotate("", (dst.x - dst.w / 2, dst.y), (src.x + src.w / 2, src.y),
                                arrowprops=dict(arrowstyle="->", lw=1.4 if crossing else 0.9,
                                                color=EXCHANGE if crossing else "0.35"))


def draw(boxes, config, out, fmt=None):
    """Figure 2 into `out` (a path or a binary file) in format `fmt` (from the extension if None)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    fig = Figure(figsize=(15, 3.2 + 1.6 * config.columns))
    ax = fig.add_subplot()
    for b in boxes:
        ax.add_patch(Rectangle((b.x - b.w / 2, b.y - b.h / 2), b.w, b.h, lw=1.2,
                               ec=EXCHANGE if b.exchange else "0.2", fc="#dce8f5" if b.side else "#f3e3c8"))
        ax.text(b.x, b.y + b.h / 2 + 0.08, b.label, ha="center", va="bottom", fontsize=8)
        notes = [n for n in (b.lrn, b.pool) if n]
        if b.pool and b.side:
            notes[-1] += f" -> {b.pooled}x{b.pooled}"
        if b.average:
            notes.append(f"mean over {b.pooled}x{b.pooled} -> {b.maps}")
        if notes:
            ax.text(b.x, b.y - b.h / 2 - 0.08, "\n".join(notes), ha="center", va="top", fontsize=7, color="0.25")
    _links(ax, boxes)
    first, last = boxes[0], boxes[-1]
    pad = conv1_pad(config)
    if pad:         # spec §1: conv1's last kernel reads 3 zero pixels past the crop's right and bottom edge
        ax.text(first.x, first.y - first.h / 2 - 0.08, f"zero-padded\nto {config.crop + pad}x{config.crop + pad}",
                ha="center", va="top", fontsize=7, color="0.25")
    ax.text(last.x + 0.45, 0.0, f"softmax\n{config.num_classes}\nclasses", ha="left", va="center", fontsize=8)
    for c in range(config.columns):
        ax.text(-0.9, _row(c, config.columns), f"column {c}", ha="right", va="center", fontsize=9, weight="bold")
    if config.columns > 1:
        ax.text(last.x, min(b.y - b.h / 2 for b in boxes) - 0.9,
                "red: the layer reads both columns (the columns exchange activations here)",
                ha="right", fontsize=8, color=EXCHANGE)
    ax.set_title(_title(config), fontsize=10)
    ax.set_xlim(-2.2, last.x + 1.4)
    top = max(b.y + b.h / 2 for b in boxes) + 0.8
    ax.set_ylim(min(b.y - b.h / 2 for b in boxes) - 1.2, top)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=100, format=fmt)


def arch_file(config, out):
    """Figure 2 of the network `config` describes into the file `out` (its type from the extension);
    returns the boxes drawn."""
    boxes = layout(config)
    atomic_write(out, lambda f: draw(boxes, config, f, os.path.splitext(out)[1][1:].lower()))
    return boxes
