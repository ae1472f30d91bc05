"""The two-column AlexNet of Krizhevsky, Sutskever and Hinton (NIPS 2012), §3.

`ARCH` is the paper's Figure 2 as a table; every placement and every variant
is built from it and from a `ModelConfig`:

* `AlexNet`: all columns on one device. Layers that read only their own
  column (conv2, conv4, conv5) are grouped convolutions (groups = columns);
  layers that read both (conv3, fc6, fc7, fc8) are dense. Its `state_dict()` is
  the canonical checkpoint format.
* `ColumnNet`: each column's slice of every layer on its own device or process.
  An exchange object (see `alexnet_mp.exchange`) moves activations between the
  columns at conv3, fc6, fc7 and fc8 and nowhere else.

Canonical format: column c owns the c-th slice along dim 0 of conv1..fc7, and
every layer that reads both columns orders its inputs column 0 first. fc8 is
kept whole, as in the original code (spec §1).

The §3 ablations are fields of the config, never other towers: `columns=1` is
the one-GPU net of §3.2's footnote (the table's `1-GPU` widths), `lrn=False`
drops the LRN, `pool_size=2` pools with s = z = 2, `init="torch"` draws
PyTorch's default init instead of §5's.
"""
import math
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from .config import ConfigError, ModelConfig, check_placement
from .layers import ColumnLRN, ColumnStreams, PaperDropout


@dataclass(frozen=True)
class Layer:
    name: str
    kernel: int      # 0 for a fully connected layer
    stride: int
    pad: int
    maps: int        # per column of the paper's net; 0 = the class count, kept whole
    one_gpu: int     # §3.2 footnote: the one-GPU net's width (conv1-4 halved, conv5 and fc6/fc7 not)
    reads: str       # "image", "own" column only, or "both" columns
    lrn: bool        # conv -> ReLU -> LRN -> pool (§3.3, §3.4)
    pool: bool       # max-pool, window ModelConfig.pool_size, stride pool_stride (§3.4: 3 and 2)
    bias: float      # §5: 1 in conv2, conv4, conv5 and the hidden fc layers, 0 elsewhere
    dropout: bool    # §4.2: on the outputs of fc6 and fc7


ARCH = (
    #     name    kernel stride pad maps  1-GPU reads    LRN    pool   bias dropout
    Layer("conv1", 11,   4,    0,  48,   48,   "image", True,  True,  0.0, False),
    Layer("conv2", 5,    1,    2,  128,  128,  "own",   True,  True,  1.0, False),
    Layer("conv3", 3,    1,    1,  192,  192,  "both",  False, False, 0.0, False),
    Layer("conv4", 3,    1,    1,  192,  192,  "own",   False, False, 1.0, False),
    Layer("conv5", 3,    1,    1,  128,  256,  "own",   False, True,  1.0, False),
    Layer("fc6",   0,    0,    0,  2048, 4096, "both",  False, False, 1.0, True),
    Layer("fc7",   0,    0,    0,  2048, 4096, "both",  False, False, 1.0, True),
    Layer("fc8",   0,    0,    0,  0,    0,    "both",  False, False, 0.0, False),
)
COLUMNS = 2          # §3.2: the table's `maps` are per column of a net with this many
RGB = 3
HEAD = ARCH[-1]
COLUMN_LAYERS = ARCH[:-1]


def width(layer, columns):
    """Maps (neurons) per column of `layer` in a net of `columns` columns."""
    return layer.maps if columns == COLUMNS else layer.one_gpu


def conv1_pad(config):
    """Zeros added on the right and bottom of the crop before conv1.

    The original code takes 1 + ceil((crop - 11) / 4) = 55 positions on a 224
    crop: its last kernel hangs 3 pixels past the edge and reads zeros (spec §1).
    """
    first = ARCH[0]
    return -(config.crop - first.kernel) % first.stride


def map_sizes(config):
    """Side of each conv layer's output after its pool (what the next layer reads).

    Floor division, as torch pools: for the paper's crop this is 55 -> 27 after
    conv1, 27 -> 13 after conv2, 13 -> 6 after conv5, both for z = 3 and for
    z = 2 (§3.4: "output of the same size"); z = 2 reads no pixel twice and
    leaves the last row and column of 55, 27 and 13 unread.
    """
    size, sizes = config.crop + conv1_pad(config), {}
    for layer in ARCH:
        if not layer.kernel:
            break
        size = (size + 2 * layer.pad - layer.kernel) // layer.stride + 1
        if layer.pool:
            size = (size - config.pool_size) // config.pool_stride + 1
        if size < 1:
            raise ConfigError(f"a {config.crop} crop leaves no map after {layer.name} with pooling "
                              f"{config.pool_size}/{config.pool_stride}: use the paper's 3/2 or 2/2")
        sizes[layer.name] = size
    return sizes


def _fan_in(i, config):
    """Input channels (conv) or features (fc) that one column's slice of layer i reads."""
    layer = ARCH[i]
    if layer.reads == "image":
        return RGB
    prev = ARCH[i - 1]
    reads = width(prev, config.columns) * (config.columns if layer.reads == "both" else 1)
    if prev.kernel and not layer.kernel:          # the first fc layer reads the flattened maps
        reads *= map_sizes(config)[prev.name] ** 2
    return reads


def _config(config=None, num_classes=None, columns=None):
    config = config or ModelConfig()
    if num_classes is not None:
        config = replace(config, num_classes=num_classes)
    return replace(config, columns=columns) if columns is not None else config


def canonical_shapes(num_classes=None, columns=None, *, config=None):
    """Name -> shape of every tensor in the canonical state dict."""
    cfg = _config(config, num_classes, columns)
    shapes = {}
    for i, layer in enumerate(ARCH):
        out = cfg.num_classes if layer is HEAD else width(layer, cfg.columns) * cfg.columns
        kernel = (layer.kernel, layer.kernel) if layer.kernel else ()
        shapes[f"{layer.name}.weight"] = (out, _fan_in(i, cfg)) + kernel
        shapes[f"{layer.name}.bias"] = (out,)
    return shapes


def init_canonical_state(num_classes=None, std=None, seed=None, columns=None, *, config=None):
    """The full network's initial tensors, on the CPU, drawn once in a fixed order.

    Every placement slices these, so one seed starts every placement identically.
    `seed=None` draws from torch's global generator (`torch.manual_seed`).
    init="paper" (§5): weights ~ N(0, std^2), biases 1 or 0 as the table says.
    init="torch": PyTorch's default for Conv2d and Linear (kaiming_uniform with
    a = sqrt(5)): weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in
    per column as a grouped conv computes it.
    """
    cfg = _config(config, num_classes, columns)
    std = cfg.init_std if std is None else std
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    shapes = canonical_shapes(config=cfg)
    state = {}
    for layer in ARCH:
        w, b = f"{layer.name}.weight", f"{layer.name}.bias"
        if cfg.init == "torch":
            bound = 1.0 / math.sqrt(math.prod(shapes[w][1:]))
            state[w] = torch.empty(shapes[w]).uniform_(-bound, bound, generator=gen)
            state[b] = torch.empty(shapes[b]).uniform_(-bound, bound, generator=gen)
        else:
            state[w] = torch.randn(shapes[w], generator=gen).mul_(std)
            state[b] = torch.full(shapes[b], layer.bias)
    return state


def check_input(x, crop):
    if x.dim() != 4 or tuple(x.shape[1:]) != (RGB, crop, crop):
        raise ValueError(f"AlexNet takes (N, {RGB}, {crop}, {crop}) crops, got {tuple(x.shape)}: "
                         f"crop or resize the images to {crop}x{crop} (alexnet_mp.data does this)")
    return x


def pad_input(x, pad):
    # spec §1: conv1's last kernel hangs `pad` pixels past the right/bottom edge of
    # the crop, reading zeros; zero is the mean colour (conv1_pad).
    # Channels-last from here on: pooling and the per-column LRN run several times
    # faster with the channels of a pixel side by side in memory.
    return F.pad(x, (0, pad, 0, pad)).contiguous(memory_format=torch.channels_last)


PAPER_POOL = nn.MaxPool2d(ModelConfig.pool_size, ModelConfig.pool_stride)   # §3.4: z = 3, s = 2


def run_layer(layer, module, x, lrn, dropout, pool=PAPER_POOL):
    """One layer and what follows it: ReLU, then LRN, pool and dropout where the table says."""
    if x.dim() == 4 and not layer.kernel:
        x = x.flatten(1)
    x = module(x)
    if layer is HEAD:
        return x
    x = F.relu(x, inplace=True)     # conv and linear backward do not need their output
    if layer.lrn:
        x = lrn(x)
    if layer.pool:
        x = pool(x)
    if layer.dropout:
        x = dropout(x)
    return x


def _make_layer(i, config, held, groups, device):
    """Layer i holding `held` columns' worth of outputs; groups > 1 for own-column convs."""
    layer = ARCH[i]
    out = config.num_classes if layer is HEAD else width(layer, config.columns) * held
    fan_in = _fan_in(i, config) * groups
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


def columns_of(state):
    """The column count whose canonical shapes `state` has (bare state dicts carry no config), or None."""
    n = int(state["fc8.weight"].shape[0]) if "fc8.weight" in state else None
    for columns in (COLUMNS, 1):
        shapes = canonical_shapes(n, columns)
        if all(name in state and tuple(state[name].shape) == s for name, s in shapes.items()):
            return columns
    return None


def check_canonical(state, num_classes=None, columns=None, *, config=None):
    """One-line errors for a state dict that is not this network's canonical format."""
    cfg = _config(config, num_classes, columns)
    shapes = canonical_shapes(config=cfg)
    missing = sorted(set(shapes) - set(state))
    if missing:
        raise ValueError(f"checkpoint lacks {', '.join(missing[:3])}: it is not an alexnet_mp "
                         f"canonical state dict (save one with canonical_state_dict())")
    found = state["fc8.weight"].shape[0]
    if found != cfg.num_classes:
        raise ValueError(f"checkpoint has {found} classes but the model {cfg.num_classes}: "
                         f"build the model with num_classes={found} or train a new one")
    for name, shape in shapes.items():
        if tuple(state[name].shape) != shape:
            other = columns_of(state)
            fix = (f"it is the {other}-column net: build the model with ModelConfig(columns={other})"
                   if other not in (None, cfg.columns) else "it was saved by another architecture")
            raise ValueError(f"checkpoint tensor {name} has shape {tuple(state[name].shape)}, "
                             f"expected {shape}: {fix}")


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
        check_canonical(state, config=self.config)
        self.scatter_canonical(state, lambda p: p)

    def stream_state_dict(self):
        """The columns' dropout streams (every random draw the network makes), for exact resume."""
        return self.streams.state_dict()

    def load_stream_state_dict(self, state):
        self.streams.load_state_dict(state)

    def _finish(self, lrn_columns, seed, init, columns, replica=0):
        """LRN over `lrn_columns` channel groups per tensor (or none), pooling, the dropout
        streams of `columns` (seeded from (seed, replica, column)), and the init."""
        cfg = self.config
        self.lrn = ColumnLRN(lrn_columns, cfg.lrn_size, cfg.lrn_alpha, cfg.lrn_beta, cfg.lrn_k) \
            if cfg.lrn else nn.Identity()
        self.pool = nn.MaxPool2d(cfg.pool_size, cfg.pool_stride)
        self.streams = ColumnStreams(torch.initial_seed() if seed is None else seed, replica, columns)
        if init:
            self.load_canonical_state_dict(init_canonical_state(seed=seed, config=cfg))

    def _layers(self, x, layers, module_of):
        x = pad_input(check_input(x, self.config.crop), conv1_pad(self.config))
        for layer in layers:
            x = run_layer(layer, module_of(layer), x, self.lrn, self.dropout, self.pool)
        return x


class AlexNet(Canonical, nn.Module):
    """The grouped placement: every column on one device (§3.2 emulated with groups = columns).

    `AlexNet(num_classes=1000, seed=0)` is initialised per §5; `state_dict()` is
    the canonical checkpoint format that every placement saves and loads.
    `config=ModelConfig(columns=1, ...)` builds a §3 variant instead.
    """

    def __init__(self, num_classes=1000, *, seed=None, config=None, device=None, init=True):
        super().__init__()
        self.config = _config(config, num_classes)
        columns = self.config.columns
        for i, layer in enumerate(ARCH):
            groups = columns if layer.reads == "own" else 1
            setattr(self, layer.name, _make_layer(i, self.config, columns, groups, "meta"))
        # Built on "meta" and materialised empty: torch's default init would be overwritten anyway.
        _materialise(self, device or "cpu")
        self._finish(lrn_columns=columns, seed=seed, init=init, columns=tuple(range(columns)))
        self.dropout = PaperDropout(self.config.dropout, self.streams, tuple(range(columns)))

    def forward(self, x):
        return self._layers(x, ARCH, lambda layer: getattr(self, layer.name))

    def features(self, x):
        """fc7's output (the last hidden layer; Figure 4 compares these)."""
        return self._layers(x, COLUMN_LAYERS, lambda layer: getattr(self, layer.name))

    def map_canonical(self, get):
        """{canonical name: get(parameter)} on the CPU; `get` may read the grad or optimizer state."""
        return {name: get(p).detach().cpu() for name, p in self.named_parameters()}

    def scatter_canonical(self, state, target):
        """Copy each canonical tensor into target(parameter) (the parameter itself, or its state)."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                target(p).copy_(state[name])


class Column(nn.Module):
    """One column's slice of conv1..fc7 (its share of every layer's kernels and neurons)."""

    def __init__(self, index, device, config=None):
        super().__init__()
        self.index = index
        config = _config(config)
        for i, layer in enumerate(COLUMN_LAYERS):
            setattr(self, layer.name, _make_layer(i, config, 1, 1, "meta"))
        _materialise(self, device)


class ColumnNet(Canonical, nn.Module):
    """Columns on their own devices or processes; `exchange` joins them.

    `exchange.local_columns` lists (column index, device) held here,
    `exchange.head_device` hosts fc8, and `share`/`to_head`/`collect` move
    tensors between columns. Build it with `alexnet_mp.two_device_alexnet` or
    `alexnet_mp.rank_alexnet`.
    """

    def __init__(self, exchange, num_classes=1000, *, seed=None, config=None, init=True):
        super().__init__()
        self.config = _config(config, num_classes)
        check_placement(self.config.columns, "split")
        self.exchange = exchange
        self.columns = nn.ModuleList(Column(c, dev, self.config) for c, dev in exchange.local_columns)
        self.fc8 = _make_layer(len(ARCH) - 1, self.config, 1, 1, "meta")
        _materialise(self.fc8, exchange.head_device)
        self._finish(lrn_columns=1, seed=seed, init=init, columns=[c.index for c in self.columns],
                     replica=getattr(exchange, "replica", 0))
        for col in self.columns:
            col.dropout = PaperDropout(self.config.dropout, self.streams, (col.index,))

    def _columns_forward(self, x):
        x = pad_input(check_input(x, self.config.crop), conv1_pad(self.config))
        hs = [x.to(col.conv1.weight.device) for col in self.columns]
        for layer in COLUMN_LAYERS:
            if layer.reads == "both":
                hs = self.exchange.share(hs, layer.name)
            hs = [run_layer(layer, getattr(col, layer.name), h, self.lrn, col.dropout, self.pool)
                  for col, h in zip(self.columns, hs)]
        return self.exchange.to_head(hs, HEAD.name)

    def forward(self, x):
        return self.fc8(self._columns_forward(x))

    def features(self, x):
        return self._columns_forward(x)

    def _slices(self):
        """(canonical name, parameter, rows of the canonical tensor it holds) for every local parameter."""
        for col in self.columns:
            for layer in COLUMN_LAYERS:
                w = width(layer, self.config.columns)
                rows = slice(col.index * w, (col.index + 1) * w)
                for kind in ("weight", "bias"):
                    yield f"{layer.name}.{kind}", getattr(getattr(col, layer.name), kind), rows
        for kind in ("weight", "bias"):
            yield f"fc8.{kind}", getattr(self.fc8, kind), slice(None)

    def map_canonical(self, get):
        """{canonical name: get(parameter)}, the columns' slices gathered, on the CPU."""
        parts = {}
        for name, p, _ in self._slices():
            parts.setdefault(name, []).append(get(p).detach())
        return {name: self.exchange.collect(ts) if not name.startswith("fc8") else ts[0].cpu()
                for name, ts in parts.items()}

    def scatter_canonical(self, state, target):
        """Copy each local slice of the canonical tensors into target(parameter)."""
        with torch.no_grad():
            for name, p, rows in self._slices():
                target(p).copy_(state[name][rows])
