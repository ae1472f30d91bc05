"""The paper's Figure 2 as a table (`ARCH`), and what it fixes: every layer's width in
each variant, map sizes, the canonical tensor shapes, the initial weights, and which
rows of each canonical tensor a column holds. `alexnet_mp.model.net` builds the networks.

Two opt-in departures are fields of `ModelConfig`, not other tables: `batch_norm` adds a
BatchNorm2d after each convolution (canonical names `conv1_bn.weight`, `.bias`,
`.running_mean`, `.running_var`, sliced by column like the conv's bias), and `head="gap"`
keeps the table's rows conv1..conv5 and fc8 (`layers_of`), fc8 reading one mean per conv5 map.
"""
import math
from dataclasses import dataclass, replace

import torch

from alexnet_mp.config import ModelConfig
from alexnet_mp.errors import ConfigError


@dataclass(frozen=True)
class Layer:
    name: str
    kernel: int      # 0 for a fully connected layer
    stride: int
    pad: int
    maps: int        # per column of the paper's net; 0 = the class count, split by `class_split`
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
CONV5 = ARCH[4]
# BatchNorm's tensors in the canonical format. Not its `num_batches_tracked`: with a fixed
# momentum torch never reads the count (ColumnBatchNorm drops it), so it carries nothing.
NORM_PARAMETERS = ("weight", "bias")
NORM_BUFFERS = ("running_mean", "running_var")


def layers_of(config):
    """The table's rows the network of `config` has, in order: all eight for Figure 2's head;
    conv1..conv5 and fc8 for the global-average-pool head."""
    if config.head == "gap":
        return tuple(layer for layer in ARCH if layer.kernel) + (HEAD,)
    return ARCH


def hidden_layers(config):
    """The layers each column computes before the head: conv1..fc7, or conv1..conv5 for "gap"."""
    return layers_of(config)[:-1]


def averages(layer, config):
    """Whether each column's maps are averaged over their positions after `layer` (and its pool):
    conv5 with the "gap" head, before the columns exchange, so they share 128 numbers each, not maps."""
    return layer is CONV5 and config.head == "gap"


def norm_name(layer):
    """The canonical prefix of `layer`'s BatchNorm (ModelConfig.batch_norm: after every conv)."""
    return f"{layer.name}_bn"


def has_norm(layer, config):
    return bool(config.batch_norm and layer.kernel)


def width(layer, columns):
    """Maps (neurons) per column of `layer` in a net of `columns` columns."""
    return layer.maps if columns == COLUMNS else layer.one_gpu


def class_split(num_classes):
    """Classes each column's fc8 computes in the split placements: column 0 the first
    ceil(n/2), column 1 the rest (Figure 2 splits fc8's 1000 outputs 500/500; an odd
    count leaves column 1 one fewer)."""
    first = (num_classes + 1) // 2
    return (first, num_classes - first)


def layer_rows(layer, config):
    """Rows of the canonical tensor each column of a split placement holds for `layer`."""
    if layer is HEAD:
        return class_split(config.num_classes)
    return (width(layer, config.columns),) * config.columns


def conv1_pad(config):
    """Zeros added on the right and bottom of the crop before conv1.

    The original code takes 1 + ceil((crop - 11) / 4) = 55 positions on a 224
    crop: its last kernel hangs 3 pixels past the edge and reads zeros (spec §1).
    """
    first = ARCH[0]
    return -(config.crop - first.kernel) % first.stride


def map_sizes(config, ceil=False):
    """Side of each conv layer's output after its pool (what the next layer reads).

    Floor division, as torch pools: for the paper's crop this is 55 -> 27 after
    conv1, 27 -> 13 after conv2, 13 -> 6 after conv5, both for z = 3 and for
    z = 2 (§3.4: "output of the same size"); z = 2 reads no pixel twice and
    leaves the last row and column of 55, 27 and 13 unread. `ceil`: as Caffe
    pools, rounding up (the same sizes for AlexNet's maps).
    """
    size, sizes = config.crop + conv1_pad(config), {}
    for layer in ARCH:
        if not layer.kernel:
            break
        size = (size + 2 * layer.pad - layer.kernel) // layer.stride + 1
        if layer.pool:
            size = (-(-(size - config.pool_size) // config.pool_stride) if ceil
                    else (size - config.pool_size) // config.pool_stride) + 1
        if size < 1:
            raise ConfigError(f"a {config.crop} crop leaves no map after {layer.name} with pooling "
                              f"{config.pool_size}/{config.pool_stride}: use the paper's 3/2 or 2/2")
        sizes[layer.name] = size
    return sizes


def fan_in(layer, config):
    """Input channels (conv) or features (fc) that one column's slice of `layer` reads, from the
    row before it in `layers_of(config)`."""
    if layer.reads == "image":
        return RGB
    layers = layers_of(config)
    prev = layers[layers.index(layer) - 1]
    reads = width(prev, config.columns) * (config.columns if layer.reads == "both" else 1)
    if prev.kernel and not layer.kernel and not averages(prev, config):
        reads *= map_sizes(config)[prev.name] ** 2      # the first fc layer reads the flattened maps
    return reads


def resolve_config(config=None, num_classes=None, columns=None):
    """`config` (the paper's by default) with the class count and column count given, if any."""
    config = config or ModelConfig()
    if num_classes is not None:
        config = replace(config, num_classes=num_classes)
    return replace(config, columns=columns) if columns is not None else config


def canonical_shapes(num_classes=None, columns=None, *, config=None, buffers=True):
    """Name -> shape of every tensor in the canonical state dict; `buffers=False`: the parameters
    only (what the optimizer's velocity and the gradients hold)."""
    cfg = resolve_config(config, num_classes, columns)
    shapes = {}
    for layer in layers_of(cfg):
        out = cfg.num_classes if layer is HEAD else width(layer, cfg.columns) * cfg.columns
        kernel = (layer.kernel, layer.kernel) if layer.kernel else ()
        shapes[f"{layer.name}.weight"] = (out, fan_in(layer, cfg)) + kernel
        shapes[f"{layer.name}.bias"] = (out,)
        if has_norm(layer, cfg):
            for kind in NORM_PARAMETERS + (NORM_BUFFERS if buffers else ()):
                shapes[f"{norm_name(layer)}.{kind}"] = (out,)
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
    cfg = resolve_config(config, num_classes, columns)
    std = cfg.init_std if std is None else std
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    shapes = canonical_shapes(config=cfg)
    state = {}
    for layer in layers_of(cfg):
        if has_norm(layer, cfg):     # torch's BatchNorm init: the identity on unit-variance maps; no draws
            bn = norm_name(layer)
            ones, zeros = torch.ones(shapes[f"{bn}.weight"]), torch.zeros(shapes[f"{bn}.weight"])
            state.update({f"{bn}.weight": ones, f"{bn}.bias": zeros, f"{bn}.running_mean": zeros.clone(),
                          f"{bn}.running_var": ones.clone()})
        w, b = f"{layer.name}.weight", f"{layer.name}.bias"
        if cfg.init == "torch":
            bound = 1.0 / math.sqrt(math.prod(shapes[w][1:]))
            state[w] = torch.empty(shapes[w]).uniform_(-bound, bound, generator=gen)
            state[b] = torch.empty(shapes[b]).uniform_(-bound, bound, generator=gen)
        else:
            state[w] = torch.randn(shapes[w], generator=gen).mul_(std)
            state[b] = torch.full(shapes[b], layer.bias)
    return state


# The ModelConfig fields a state dict's names and shapes tell apart; BatchNorm first, since a
# network without it has a subset of its tensors.
SHAPE_FIELDS = tuple({"columns": c, "head": h, "batch_norm": b}
                     for c in (COLUMNS, 1) for h in ("fc", "gap") for b in (True, False))


def shape_variant(state):
    """{columns, head, batch_norm} of the network whose canonical shapes `state` has (a bare state
    dict carries no config), or None."""
    if not isinstance(state.get("fc8.weight"), torch.Tensor):
        return None
    n = int(state["fc8.weight"].shape[0])
    for fields in SHAPE_FIELDS:
        shapes = canonical_shapes(config=ModelConfig(num_classes=n, **fields))
        if all(isinstance(state.get(name), torch.Tensor) and tuple(state[name].shape) == s
               for name, s in shapes.items()):
            return dict(fields)
    return None


def columns_of(state):
    """The column count whose canonical shapes `state` has, or None."""
    return (shape_variant(state) or {}).get("columns")


def check_canonical(state, num_classes=None, columns=None, *, config=None):
    """One-line errors for a state dict that is not this network's canonical format."""
    cfg = resolve_config(config, num_classes, columns)
    shapes = canonical_shapes(config=cfg)
    other = shape_variant(state)
    if other is not None and any(getattr(cfg, k) != v for k, v in other.items()):
        said = ", ".join(f"{k}={v!r}" for k, v in other.items() if getattr(cfg, k) != v)
        raise ValueError(f"checkpoint holds another variant of the network ({said}): build the model with "
                         f"ModelConfig({said})")
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
