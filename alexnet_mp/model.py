"""The two-column AlexNet of Krizhevsky, Sutskever and Hinton (NIPS 2012), §3.

`ARCH` is the paper's Figure 2 as a table; every placement is built from it:

* `AlexNet`: both columns on one device. Layers that read only their own
  column (conv2, conv4, conv5) are grouped convolutions (groups=2); layers that
  read both (conv3, fc6, fc7, fc8) are dense. Its `state_dict()` is the
  canonical checkpoint format.
* `ColumnNet`: each column's slice of every layer on its own device or process.
  An exchange object (see `alexnet_mp.exchange`) moves activations between the
  columns at conv3, fc6, fc7 and fc8 and nowhere else, and joins the columns'
  halves of the logits.

Canonical format: column c owns the c-th half along dim 0 of conv1..fc7, and
every layer that reads both columns orders its inputs column 0 first. fc8 is
one [num_classes, 4096] tensor, as in the original code (spec §1); `ColumnNet`
splits it as the paper's Figure 2 draws it: column 0 computes the first
ceil(n/2) classes, column 1 the rest (spec §1 allows either; same function).
So every parameter of a `ColumnNet` belongs to exactly one column, and the
replicas of one column can average gradients over one process group.
"""
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig
from .layers import ColumnLRN, ColumnStreams, PaperDropout


@dataclass(frozen=True)
class Layer:
    name: str
    kernel: int      # 0 for a fully connected layer
    stride: int
    pad: int
    maps: int        # per column; 0 = the class count, split by `class_split`
    reads: str       # "image", "own" column only, or "both" columns
    lrn: bool        # conv -> ReLU -> LRN -> pool (§3.3, §3.4)
    pool: bool       # overlapping max-pool, window 3, stride 2 (§3.4)
    bias: float      # §5: 1 in conv2, conv4, conv5 and the hidden fc layers, 0 elsewhere
    dropout: bool    # §4.2: on the outputs of fc6 and fc7


ARCH = (
    #     name    kernel stride pad maps  reads    LRN    pool   bias dropout
    Layer("conv1", 11,   4,    0,  48,   "image", True,  True,  0.0, False),
    Layer("conv2", 5,    1,    2,  128,  "own",   True,  True,  1.0, False),
    Layer("conv3", 3,    1,    1,  192,  "both",  False, False, 0.0, False),
    Layer("conv4", 3,    1,    1,  192,  "own",   False, False, 1.0, False),
    Layer("conv5", 3,    1,    1,  128,  "own",   False, True,  1.0, False),
    Layer("fc6",   0,    0,    0,  2048, "both",  False, False, 1.0, True),
    Layer("fc7",   0,    0,    0,  2048, "both",  False, False, 1.0, True),
    Layer("fc8",   0,    0,    0,  0,    "both",  False, False, 0.0, False),
)
HEAD = ARCH[-1]
COLUMN_LAYERS = ARCH[:-1]
# A 224 crop padded to 227 (spec §1) gives 55 -> 27 -> 13 -> 6 after the pools.
CONV1_PAD = 3
POOL5_SIZE = 6


def class_split(num_classes):
    """Classes each column's fc8 computes: column 0 the first ceil(n/2), column 1 the rest
    (Figure 2 splits fc8's 1000 outputs 500/500; an odd count leaves column 1 one fewer)."""
    first = (num_classes + 1) // 2
    return (first, num_classes - first)


def layer_rows(layer, num_classes):
    """Rows of the canonical tensor each column holds for `layer`, as (column 0's, column 1's)."""
    return class_split(num_classes) if layer is HEAD else (layer.maps, layer.maps)


def _in_per_column(i, columns):
    """Input channels/features one column's slice of layer i reads."""
    layer = ARCH[i]
    if layer.reads == "image":
        return 3
    prev = ARCH[i - 1]
    width = prev.maps * (columns if layer.reads == "both" else 1)
    return width * POOL5_SIZE * POOL5_SIZE if layer.name == "fc6" else width


def canonical_shapes(num_classes, columns=2):
    """Name -> shape of every tensor in the canonical state dict."""
    shapes = {}
    for i, layer in enumerate(ARCH):
        out = num_classes if layer is HEAD else layer.maps * columns
        fan_in = _in_per_column(i, columns)
        kernel = (layer.kernel, layer.kernel) if layer.kernel else ()
        shapes[f"{layer.name}.weight"] = (out, fan_in) + kernel
        shapes[f"{layer.name}.bias"] = (out,)
    return shapes


def init_canonical_state(num_classes=1000, std=0.01, seed=None, columns=2):
    """The full network's initial tensors, on the CPU, drawn once in a fixed order (§5).

    Every placement slices these, so one seed starts every placement identically.
    `seed=None` draws from torch's global generator (`torch.manual_seed`).
    """
    gen = None
    if seed is not None:
        gen = torch.Generator().manual_seed(seed)
    biases = {f"{layer.name}.bias": layer.bias for layer in ARCH}
    state = {}
    for name, shape in canonical_shapes(num_classes, columns).items():
        if name.endswith(".weight"):
            state[name] = torch.randn(shape, generator=gen).mul_(std)
        else:
            state[name] = torch.full(shape, biases[name])
    return state


def check_input(x, crop=224):
    if x.dim() != 4 or tuple(x.shape[1:]) != (3, crop, crop):
        raise ValueError(f"AlexNet takes (N, 3, {crop}, {crop}) crops, got {tuple(x.shape)}: "
                         f"crop or resize the images to {crop}x{crop} (alexnet_mp.data does this)")
    return x


def pad_input(x):
    # spec §1: the original code lets conv1's last kernel hang 3 pixels past the
    # right/bottom edge of a 224 crop, reading zeros; zero is the mean colour.
    # Channels-last from here on: pooling and the per-column LRN run several times
    # faster with the channels of a pixel side by side in memory.
    return F.pad(x, (0, CONV1_PAD, 0, CONV1_PAD)).contiguous(memory_format=torch.channels_last)


def run_layer(layer, module, x, lrn, dropout):
    """One layer and what follows it: ReLU, then LRN, pool and dropout where the table says."""
    if layer.name == "fc6":
        x = x.flatten(1)
    x = module(x)
    if layer is HEAD:
        return x
    x = F.relu(x, inplace=True)     # conv and linear backward do not need their output
    if layer.lrn:
        x = lrn(x)
    if layer.pool:
        x = F.max_pool2d(x, kernel_size=3, stride=2)
    if layer.dropout:
        x = dropout(x)
    return x


def _make_layer(i, columns, groups, classes, device):
    """Layer i holding `columns` columns' worth of outputs (`classes` of them for fc8);
    groups=2 for own-column convs."""
    layer = ARCH[i]
    out = classes if layer is HEAD else layer.maps * columns
    fan_in = _in_per_column(i, 2) * groups
    if layer.kernel:
        return nn.Conv2d(fan_in, out, layer.kernel, layer.stride, layer.pad, groups=groups, device=device)
    return nn.Linear(fan_in, out, device=device)


def _materialise(module, device):
    """Give a module built on "meta" empty parameters on `device`.

    Like `Module.to_empty`, but also under FakeTensorMode, which the tests use to
    place fake CUDA tensors on a machine without a GPU.
    """
    for sub in module.modules():
        for name, p in sub.named_parameters(recurse=False):
            setattr(sub, name, nn.Parameter(torch.empty_like(p, device=device)))


def _config(config, num_classes):
    config = config or ModelConfig()
    return replace(config, num_classes=num_classes) if num_classes is not None else config


def _lrn(config, columns):
    return ColumnLRN(columns, config.lrn_size, config.lrn_alpha, config.lrn_beta, config.lrn_k)


def check_canonical(state, num_classes, columns=2):
    """One-line errors for a state dict that is not this network's canonical format."""
    shapes = canonical_shapes(num_classes, columns)
    missing = sorted(set(shapes) - set(state))
    if missing:
        raise ValueError(f"checkpoint lacks {', '.join(missing[:3])}: it is not an alexnet_mp "
                         f"canonical state dict (save one with canonical_state_dict())")
    found = state["fc8.weight"].shape[0]
    if found != num_classes:
        raise ValueError(f"checkpoint has {found} classes but the model {num_classes}: "
                         f"build the model with num_classes={found} or train a new one")
    for name, shape in shapes.items():
        if tuple(state[name].shape) != shape:
            raise ValueError(f"checkpoint tensor {name} has shape {tuple(state[name].shape)}, "
                             f"expected {shape}: it was saved by another architecture")


class Canonical:
    """The checkpoint API every placement shares, built on its own `map_canonical`
    (gather into the canonical format) and `scatter_canonical` (slice out of it)."""

    def canonical_state_dict(self):
        """The full network's weights in the canonical format, on the CPU."""
        return self.map_canonical(lambda p: p)

    def canonical_grads(self):
        """Every parameter's gradient in the canonical format (zeros where there is none)."""
        return self.map_canonical(lambda p: torch.zeros_like(p) if p.grad is None else p.grad)

    def load_canonical_state_dict(self, state):
        check_canonical(state, self.config.num_classes)
        self.scatter_canonical(state, lambda p: p)

    def stream_state_dict(self):
        """The columns' dropout streams (every random draw the network makes), for exact resume."""
        return self.streams.state_dict()

    def load_stream_state_dict(self, state):
        self.streams.load_state_dict(state)

    def _finish(self, lrn_columns, seed, init, columns, replica=0):
        """LRN over `lrn_columns` channel groups per tensor, dropout drawing from the
        streams of `columns` (seeded from (seed, replica, column)), and the §5 init."""
        self.lrn = _lrn(self.config, lrn_columns)
        self.streams = ColumnStreams(torch.initial_seed() if seed is None else seed, replica, columns)
        if init:
            self.load_canonical_state_dict(
                init_canonical_state(self.config.num_classes, self.config.init_std, seed))


class AlexNet(Canonical, nn.Module):
    """The grouped placement: both columns on one device (§3.2 emulated with groups=2).

    `AlexNet(num_classes=1000, seed=0)` is initialised per §5; `state_dict()` is
    the canonical checkpoint format that every placement saves and loads.
    """

    def __init__(self, num_classes=1000, *, seed=None, config=None, device=None, init=True):
        super().__init__()
        self.config = _config(config, num_classes)
        for i, layer in enumerate(ARCH):
            groups = 2 if layer.reads == "own" else 1
            setattr(self, layer.name, _make_layer(i, 2, groups, self.config.num_classes, "meta"))
        # Built on "meta" and materialised empty: torch's default init would be overwritten anyway.
        _materialise(self, device or "cpu")
        self._finish(lrn_columns=2, seed=seed, init=init, columns=(0, 1))
        self.dropout = PaperDropout(self.config.dropout, self.streams, (0, 1))

    def forward(self, x):
        x = pad_input(check_input(x, self.config.crop))
        for layer in ARCH:
            x = run_layer(layer, getattr(self, layer.name), x, self.lrn, self.dropout)
        return x

    def features(self, x):
        """fc7's output (4096-d, the last hidden layer; Figure 4 compares these)."""
        x = pad_input(check_input(x, self.config.crop))
        for layer in COLUMN_LAYERS:
            x = run_layer(layer, getattr(self, layer.name), x, self.lrn, self.dropout)
        return x

    def map_canonical(self, get, writer_only=False):
        """{canonical name: get(parameter)} on the CPU; `get` may read the grad or optimizer state.
        One process holds everything, so it is the writer: `writer_only` changes nothing."""
        return {name: get(p).detach().cpu() for name, p in self.named_parameters()}

    def scatter_canonical(self, state, target):
        """Copy each canonical tensor into target(parameter) (the parameter itself, or its state)."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                target(p).copy_(state[name])



class Column(nn.Module):
    """One column's slice of every layer: its half of conv1..fc7's kernels and neurons,
    and its share of fc8's classes (`class_split`)."""

    def __init__(self, index, num_classes, device):
        super().__init__()
        self.index = index
        classes = class_split(num_classes)[index]
        for i, layer in enumerate(ARCH):
            setattr(self, layer.name, _make_layer(i, 1, 1, classes, "meta"))
        _materialise(self, device)


class ColumnNet(Canonical, nn.Module):
    """Columns on their own devices or processes; `exchange` joins them.

    `exchange.local_columns` lists (column index, device) held here;
    `share` gives every column both columns' activations before conv3, fc6, fc7
    and fc8, `join` puts the columns' halves of an output side by side, and
    `collect` gathers parameter slices into canonical tensors. Build it with
    `alexnet_mp.two_device_alexnet` or `alexnet_mp.rank_alexnet`.
    """

    def __init__(self, exchange, num_classes=1000, *, seed=None, config=None, init=True):
        super().__init__()
        self.config = _config(config, num_classes)
        self.exchange = exchange
        self.columns = nn.ModuleList(Column(c, self.config.num_classes, dev) for c, dev in exchange.local_columns)
        self._finish(lrn_columns=1, seed=seed, init=init, columns=[c.index for c in self.columns],
                     replica=getattr(exchange, "replica", 0))
        for col in self.columns:
            col.dropout = PaperDropout(self.config.dropout, self.streams, (col.index,))

    def _run(self, x, layers):
        x = pad_input(check_input(x, self.config.crop))
        hs = [x.to(col.conv1.weight.device) for col in self.columns]
        for layer in layers:
            if layer.reads == "both":
                hs = self.exchange.share(hs, layer.name)
            hs = [run_layer(layer, getattr(col, layer.name), h, self.lrn, col.dropout)
                  for col, h in zip(self.columns, hs)]
        return hs

    def forward(self, x):
        # Each column computed its own classes from all of fc7 (Figure 2); the loss needs them all.
        return self.exchange.join(self._run(x, ARCH), "logits", class_split(self.config.num_classes))

    def features(self, x):
        """fc7's output (4096-d, both columns' halves side by side)."""
        return self.exchange.join(self._run(x, COLUMN_LAYERS), "features", layer_rows(COLUMN_LAYERS[-1], 0))

    def _slices(self):
        """(canonical name, parameter, rows of the canonical tensor it holds, every column's
        row count) for every local parameter."""
        n = self.config.num_classes
        for col in self.columns:
            for layer in ARCH:
                sizes = layer_rows(layer, n)
                start = sum(sizes[:col.index])
                for kind in ("weight", "bias"):
                    yield (f"{layer.name}.{kind}", getattr(getattr(col, layer.name), kind),
                           slice(start, start + sizes[col.index]), sizes)

    def map_canonical(self, get, writer_only=False):
        """{canonical name: get(parameter)}, the columns' slices gathered, on the CPU.
        `writer_only`: only the process that writes checkpoints gathers (the others get None)."""
        parts, sizes = {}, {}
        for name, p, _, rows in self._slices():
            parts.setdefault(name, []).append(get(p).detach())
            sizes[name] = rows
        state = {name: self.exchange.collect(ts, sizes[name], writer_only) for name, ts in parts.items()}
        return None if any(t is None for t in state.values()) else state

    def scatter_canonical(self, state, target):
        """Copy each local slice of the canonical tensors into target(parameter)."""
        with torch.no_grad():
            for name, p, rows, _ in self._slices():
                target(p).copy_(state[name][rows])
