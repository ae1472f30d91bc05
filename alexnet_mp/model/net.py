"""The two-column AlexNet of Krizhevsky, Sutskever and Hinton (NIPS 2012), §3.

`ARCH` (`alexnet_mp.model.arch`) is the paper's Figure 2 as a table; every placement
and every variant is built from it and from a `ModelConfig`:

* `AlexNet`: all columns on one device. Layers that read only their own
  column (conv2, conv4, conv5) are grouped convolutions (groups = columns);
  layers that read both (conv3, fc6, fc7, fc8) are dense. Its `state_dict()` is
  the canonical checkpoint format.
* `ColumnNet`: each column's slice of every layer on its own device or process.
  An exchange object (see `alexnet_mp.distributed.exchange`) moves activations between the
  columns at conv3, fc6, fc7 and fc8 and nowhere else, and joins the columns'
  halves of the logits.

Canonical format: column c owns the c-th slice along dim 0 of conv1..fc7, and
every layer that reads both columns orders its inputs column 0 first. fc8 is
one [num_classes, 4096] tensor, as in the original code (spec §1); `ColumnNet`
splits it as the paper's Figure 2 draws it: column 0 computes the first
ceil(n/2) classes, column 1 the rest (spec §1 allows either; same function).
So every parameter of a `ColumnNet` belongs to exactly one column, and the
replicas of one column can average gradients over one process group.

The §3 ablations are fields of the config, never other towers: `columns=1` is
the one-GPU net of §3.2's footnote (the table's `1-GPU` widths), `lrn=False`
drops the LRN, `pool_size=2` pools with s = z = 2, `init="torch"` draws
PyTorch's default init instead of §5's. `lrn_across_columns=True` (with
`lrn_k=1` and `crop=227`: Caffe's bvlc_alexnet, `alexnet_mp.caffe`) runs one LRN
window over all maps, across the columns; the grouped placement only.

Two later departures, opt-in, are fields too. `batch_norm=True`: a BatchNorm2d after
every convolution, before its ReLU. Its statistics are per channel, so the grouped
net's one BatchNorm2d over both columns' maps is already per column, and a `Column`
holds its own. `head="gap"`: after conv5's pooling each column averages its maps
over their positions, and fc8 (still split by classes in `ColumnNet`) reads both
columns' means: fc8 is then the only exchange after conv3.
"""
import torch
from torch import nn
from torch.nn import functional as F

from alexnet_mp.config import ModelConfig, check_placement
from alexnet_mp.model.arch import (HEAD, RGB, averages, check_canonical, class_split, conv1_pad, fan_in, has_norm,
                                   hidden_layers, init_canonical_state, layer_rows, layers_of, norm_name,
                                   resolve_config, width)
from alexnet_mp.model.batchnorm import ColumnBatchNorm
from alexnet_mp.model.layers import ColumnLRN, ColumnStreams, PaperDropout


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


def run_layer(layer, module, x, lrn, dropout, pool=PAPER_POOL, norm=None, average=False):
    """One layer and what follows it: BatchNorm (`norm`, if any), ReLU, then LRN, pool and dropout
    where the table says; `average`: then the mean of each map over its positions (the "gap" head)."""
    if x.dim() == 4 and not layer.kernel:
        x = x.flatten(1)
    x = module(x)
    if layer is HEAD:
        return x
    if norm is not None:
        x = norm(x)
    x = F.relu(x, inplace=True)     # conv, linear and BatchNorm backward do not need their output
    if layer.lrn:
        x = lrn(x)
    if layer.pool:
        x = pool(x)
    if average:
        x = x.mean((2, 3))
    if layer.dropout:
        x = dropout(x)
    return x


def _make_layer(layer, config, held, groups, device, classes=None):
    """`layer` holding `held` columns' worth of outputs (`classes` of fc8's, all by default);
    groups > 1 for own-column convs."""
    if layer is HEAD:
        out = config.num_classes if classes is None else classes
    else:
        out = width(layer, config.columns) * held
    reads = fan_in(layer, config) * groups
    if layer.kernel:
        return nn.Conv2d(reads, out, layer.kernel, layer.stride, layer.pad, groups=groups, device=device)
    return nn.Linear(reads, out, device=device)


def _add_layers(holder, config, held, classes=None):
    """`holder`'s modules, on "meta": each layer of `config`'s network, and its BatchNorm (over the
    `held` columns' maps) where `config.batch_norm` asks for one."""
    for layer in layers_of(config):
        groups = config.columns if layer.reads == "own" and held > 1 else 1
        setattr(holder, layer.name, _make_layer(layer, config, held, groups, "meta", classes))
        if has_norm(layer, config):
            setattr(holder, norm_name(layer), ColumnBatchNorm(width(layer, config.columns) * held, device="meta"))


def _materialise(module, device):
    """Give a module built on "meta" empty parameters and buffers on `device`.

    Like `Module.to_empty`, but also under FakeTensorMode, which the tests use to
    place fake CUDA tensors on a machine without a GPU.
    """
    for sub in module.modules():
        for name, p in sub.named_parameters(recurse=False):
            setattr(sub, name, nn.Parameter(torch.empty_like(p, device=device)))
        for name, b in sub.named_buffers(recurse=False):
            setattr(sub, name, torch.empty_like(b, device=device))


class Canonical:
    """The checkpoint API every placement shares, built on its own `map_canonical`
    (gather into the canonical format) and `scatter_canonical` (slice out of it)."""

    def canonical_state_dict(self, writer_only=False):
        """The full network's weights (and BatchNorm's running statistics) in the canonical format,
        on the CPU; `writer_only` as `map_canonical` takes it."""
        return self.map_canonical(lambda p: p, writer_only, buffers=True)

    def canonical_grads(self):
        """Every parameter's gradient in the canonical format (zeros where there is none)."""
        return self.map_canonical(lambda p: torch.zeros_like(p) if p.grad is None else p.grad)

    def load_canonical_state_dict(self, state):
        check_canonical(state, config=self.config)
        self.scatter_canonical(state, lambda p: p, buffers=True)

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

    def _layers(self, x, layers):
        x = pad_input(check_input(x, self.config.crop), conv1_pad(self.config))
        for layer in layers:
            x = run_layer(layer, getattr(self, layer.name), x, self.lrn, self.dropout, self.pool,
                          getattr(self, norm_name(layer), None), averages(layer, self.config))
        return x


class AlexNet(Canonical, nn.Module):
    """The grouped placement: every column on one device (§3.2 emulated with groups = columns).

    `AlexNet(num_classes=1000, seed=0)` is initialised per §5; `state_dict()` is
    the canonical checkpoint format that every placement saves and loads.
    `config=ModelConfig(columns=1, ...)` builds a §3 variant instead.
    """

    def __init__(self, num_classes=1000, *, seed=None, config=None, device=None, init=True):
        super().__init__()
        self.config = resolve_config(config, num_classes)
        columns = self.config.columns
        _add_layers(self, self.config, columns)
        # Built on "meta" and materialised empty: torch's default init would be overwritten anyway.
        _materialise(self, device or "cpu")
        # spec §1: each column normalises its own maps; Caffe's bvlc_alexnet normalises all maps as one group.
        lrn_columns = 1 if self.config.lrn_across_columns else columns
        self._finish(lrn_columns=lrn_columns, seed=seed, init=init, columns=tuple(range(columns)))
        self.dropout = PaperDropout(self.config.dropout, self.streams, tuple(range(columns)))

    def forward(self, x):
        return self._layers(x, layers_of(self.config))

    def features(self, x):
        """The last hidden layer's output: fc7's (Figure 4 compares these), or for the "gap" head
        conv5's pooled maps averaged over their positions."""
        return self._layers(x, hidden_layers(self.config))

    def _tensors(self, buffers):
        yield from self.named_parameters()
        if buffers:
            yield from self.named_buffers()

    def map_canonical(self, get, writer_only=False, buffers=False):
        """{canonical name: get(parameter)} on the CPU; `get` may read the grad or optimizer state.
        `buffers`: BatchNorm's running statistics too, as they are. One process holds everything,
        so it is the writer: `writer_only` changes nothing."""
        return {name: (get(t) if isinstance(t, nn.Parameter) else t).detach().cpu()
                for name, t in self._tensors(buffers)}

    def scatter_canonical(self, state, target, buffers=False):
        """Copy each canonical tensor into target(parameter) (the parameter itself, or its state);
        `buffers`: BatchNorm's running statistics too."""
        with torch.no_grad():
            for name, t in self._tensors(buffers):
                (target(t) if isinstance(t, nn.Parameter) else t).copy_(state[name])


class Column(nn.Module):
    """One column's slice of every layer: its share of conv1..fc7's kernels and neurons,
    and its share of fc8's classes (`class_split`)."""

    def __init__(self, index, device, config=None):
        super().__init__()
        self.index = index
        config = resolve_config(config)
        _add_layers(self, config, 1, class_split(config.num_classes)[index])
        _materialise(self, device)


class ColumnNet(Canonical, nn.Module):
    """Columns on their own devices or processes; `exchange` joins them.

    `exchange.local_columns` lists (column index, device) held here;
    `share` gives every column both columns' activations before conv3, fc6, fc7
    and fc8, `join` puts the columns' halves of an output side by side, and
    `collect` gathers parameter slices into canonical tensors. Build it with
    `alexnet_mp.two_device_alexnet` or `alexnet_mp.rank_alexnet` (`alexnet_mp.distributed.placement`).
    """

    def __init__(self, exchange, num_classes=1000, *, seed=None, config=None, init=True):
        super().__init__()
        self.config = resolve_config(config, num_classes)
        check_placement(self.config.columns, "split", self.config.lrn_across_columns)
        self.exchange = exchange
        self.columns = nn.ModuleList(Column(c, dev, self.config) for c, dev in exchange.local_columns)
        self._finish(lrn_columns=1, seed=seed, init=init, columns=[c.index for c in self.columns],
                     replica=getattr(exchange, "replica", 0))
        for col in self.columns:
            col.dropout = PaperDropout(self.config.dropout, self.streams, (col.index,))

    def _run(self, x, layers):
        x = pad_input(check_input(x, self.config.crop), conv1_pad(self.config))
        hs = [x.to(col.conv1.weight.device) for col in self.columns]
        for layer in layers:
            if layer.reads == "both":
                hs = self.exchange.share(hs, layer.name)
            hs = [run_layer(layer, getattr(col, layer.name), h, self.lrn, col.dropout, self.pool,
                            getattr(col, norm_name(layer), None), averages(layer, self.config))
                  for col, h in zip(self.columns, hs)]
        return hs

    def forward(self, x):
        # Each column computed its own classes from all of fc7 (Figure 2); the loss needs them all.
        return self.exchange.join(self._run(x, layers_of(self.config)), "logits", layer_rows(HEAD, self.config))

    def features(self, x):
        """The last hidden layer's output, both columns' halves side by side: fc7's, or for the
        "gap" head conv5's pooled maps averaged over their positions."""
        hidden = hidden_layers(self.config)
        return self.exchange.join(self._run(x, hidden), "features", layer_rows(hidden[-1], self.config))

    def _slices(self, buffers=False):
        """(canonical name, tensor, rows of the canonical tensor it holds, every column's row count)
        for every local parameter, and with `buffers` every BatchNorm running statistic."""
        for col in self.columns:
            for layer in layers_of(self.config):
                sizes = layer_rows(layer, self.config)
                start = sum(sizes[:col.index])
                rows = slice(start, start + sizes[col.index])
                names = (layer.name, norm_name(layer)) if has_norm(layer, self.config) else (layer.name,)
                for prefix in names:
                    module = getattr(col, prefix)
                    tensors = list(module.named_parameters()) + (list(module.named_buffers()) if buffers else [])
                    for kind, t in tensors:
                        yield f"{prefix}.{kind}", t, rows, sizes

    def map_canonical(self, get, writer_only=False, buffers=False):
        """{canonical name: get(parameter)}, the columns' slices gathered, on the CPU; `buffers`:
        BatchNorm's running statistics too, as they are (in data parallel, replica 0's: see
        `alexnet_mp.distributed.parallel`). `writer_only`: only the process that writes
        checkpoints gathers (the others get None)."""
        parts, sizes = {}, {}
        for name, t, _, rows in self._slices(buffers):
            parts.setdefault(name, []).append((get(t) if isinstance(t, nn.Parameter) else t).detach())
            sizes[name] = rows
        state = {name: self.exchange.collect(ts, sizes[name], writer_only) for name, ts in parts.items()}
        return None if any(t is None for t in state.values()) else state

    def scatter_canonical(self, state, target, buffers=False):
        """Copy each local slice of the canonical tensors into target(parameter); `buffers`: and
        into each BatchNorm running statistic."""
        with torch.no_grad():
            for name, t, rows, _ in self._slices(buffers):
                (target(t) if isinstance(t, nn.Parameter) else t).copy_(state[name][rows])
