"""The paper's defaults in one place.

Every default cites its source: "§n" is a section of Krizhevsky, Sutskever and
Hinton (NIPS 2012); "spec §n" is a section of the project's reference notes
(docs/alexnet-reference.md), which record where the paper and the authors'
code disagree. A checkpoint stores the final config with `asdict`, so every
tool rebuilds the same network (and the same input scaling) from it alone.

Fields marked "ablation" or "failure mode" switch off or replace one piece of
the paper's network, as §3 measures them (tools/study.py runs them). They are
opt-in: every default is the paper's.
"""
from dataclasses import asdict, dataclass, field, fields, replace

from alexnet_mp.errors import ConfigError

IMAGE_SIZE = 256                     # §2: images stored at 256x256
CROP = 224                           # §2/§4.1: 224x224 patches

COLUMN_CHOICES = (2, 1)              # the paper's net; the one-GPU net of §3.2's footnote
INIT_CHOICES = ("paper", "torch")
INPUT_SCALE_CHOICES = ("raw", "unit")
HEAD_CHOICES = ("fc", "gap")         # Figure 2's fc6, fc7, fc8; later work's global average pooling


def grouped_only(model):
    """Whether the network `model` describes runs only in the grouped placement (see check_placement)."""
    return model.columns != ModelConfig.columns or model.lrn_across_columns


def check_placement(columns, placement, lrn_across_columns=False):
    """The one-column net exists only grouped: the split placements hold exactly two columns (§3.2).
    So does an LRN whose window crosses the columns (Caffe's bvlc_alexnet): split, each column
    holds only its own maps, and the window would need its neighbour's."""
    if columns != ModelConfig.columns and placement != "grouped":
        raise ConfigError(f"the {columns}-column net (--columns {columns}) runs in the grouped placement only: "
                          f"run it without torchrun and without --devices")
    if lrn_across_columns and placement != "grouped":
        raise ConfigError("this network's LRN crosses the columns (lrn_across_columns, as Caffe's bvlc_alexnet "
                          "imported by tools/import_caffe.py) and runs in the grouped placement only: "
                          "run it without torchrun and without --devices")


@dataclass
class ModelConfig:
    num_classes: int = 1000          # §2: ILSVRC has 1000 classes
    columns: int = 2                 # §3.2: two columns, one per GPU. 1 (ablation): the footnote's one-GPU net
    lrn: bool = True                 # §3.3. False (ablation): no LRN; §3.3 reports +1.4/+1.2 error without it
    lrn_size: int = 5                # §3.3: n = 5
    lrn_alpha: float = 1e-4          # §3.3; divided by n as the original code does (spec §1)
    lrn_beta: float = 0.75           # §3.3
    lrn_k: float = 2.0               # §3.3. Caffe's bvlc_alexnet (tools/import_caffe.py): 1
    # §3.3 / spec §1: the window stays inside each column's maps. True (Caffe's bvlc_alexnet, opt-in
    # through tools/import_caffe.py): one window over all maps, crossing the columns. Grouped placement only.
    lrn_across_columns: bool = False
    pool_size: int = 3               # §3.4: z = 3, overlapping. 2 (ablation): s = z = 2, +0.4/+0.3 in §3.4
    pool_stride: int = 2             # §3.4: s = 2
    dropout: float = 0.5             # §4.2: outputs of fc6 and fc7, paper form (spec §1)
    init: str = "paper"              # §5: N(0, std^2), biases 1 or 0. "torch" (failure mode): PyTorch's default
    init_std: float = 0.01           # §5: every weight ~ N(0, 0.01^2)
    crop: int = CROP                 # §2/§4.1: 224x224 patches (conv1 pads right/bottom by 3, spec §1);
    #                                  Caffe's bvlc_alexnet: 227, no padding. Every transform takes its crop from here.
    # spec §2: raw 0..255 minus the mean image. "unit" (failure mode): /255, then each channel
    # standardised with torchvision's ImageNet mean and std. A property of the data pipeline,
    # kept here because the weights only make sense with the inputs they were trained on.
    input_scale: str = "raw"
    # Later work, not the paper's (opt-in; tools/study.py's batchnorm and gap variants):
    # True: BatchNorm2d after every convolution, before its ReLU (Ioffe & Szegedy 2015), per column.
    batch_norm: bool = False
    # "fc": fc6, fc7, fc8 (Figure 2). "gap": each column's conv5 maps, pooled, averaged over their
    # positions; fc8 alone reads both columns' 2 x 128 means (Lin et al. 2013). No fc6, fc7, dropout.
    head: str = "fc"

    def __post_init__(self):
        if self.head not in HEAD_CHOICES:
            raise ConfigError(f"head={self.head!r}: choose 'fc' (Figure 2's fc6, fc7, fc8) or 'gap' "
                              f"(global average pooling after conv5, then fc8)")
        if self.columns not in COLUMN_CHOICES:
            raise ConfigError(f"columns={self.columns}: the paper's net has 2 columns and its one-GPU "
                              f"comparison net 1; choose 2 or 1")
        if self.init not in INIT_CHOICES:
            raise ConfigError(f"init={self.init!r}: choose 'paper' (§5) or 'torch' (PyTorch's default)")
        if self.input_scale not in INPUT_SCALE_CHOICES:
            raise ConfigError(f"input_scale={self.input_scale!r}: choose 'raw' (spec §2) or 'unit' (torchvision's)")
        if self.pool_size < 1 or self.pool_stride < 1:
            raise ConfigError(f"pooling window {self.pool_size}, stride {self.pool_stride}: both must be >= 1")
        if not 0 < self.crop <= IMAGE_SIZE:
            raise ConfigError(f"crop={self.crop}: the crops are taken from {IMAGE_SIZE}x{IMAGE_SIZE} stored images "
                              f"(§2); choose at most {IMAGE_SIZE}, e.g. the paper's {CROP}")


@dataclass
class TrainConfig:
    batch_size: int = 128            # §5: batch of 128 examples
    lr: float = 0.01                 # §5: equal learning rate for all layers, 0.01
    momentum: float = 0.9            # §5
    weight_decay: float = 5e-4       # §5
    decay_biases: bool = False       # spec §3: the original code decays weights only
    epochs: int = 90                 # §5: "roughly 90 cycles"
    lr_drop: float = 0.1             # §5: divide by 10 when val error stops improving
    max_lr_drops: int = 3            # §5: "reduced three times prior to termination"
    plateau_patience: int = 5        # §5 does not say how long "stops improving" is; our choice
    lr_steps: tuple = ()             # empty = plateau schedule (§5); fixed epochs otherwise
    pca_std: float = 0.1             # §4.1: alpha_i ~ N(0, 0.1^2). 0 (ablation): no PCA colour shift
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    # The model fields the command line set, even to the paper's value (`--columns 2`): --weights and
    # --resume take the checkpoint's network for every variant field not asked for (`adopt_variant`).
    asked: tuple = ()


def to_dict(cfg):
    return asdict(cfg)


def from_dict(cls, data):
    """Rebuild a config saved with `to_dict`; keys this version does not know are ignored."""
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if f.name == "model" and isinstance(value, dict):
            value = from_dict(ModelConfig, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


# Not part of a network's variant: the class count follows the store, the init is spent once trained.
NOT_VARIANT = ("num_classes", "init", "init_std")
VARIANT_FIELDS = tuple(f.name for f in fields(ModelConfig) if f.name not in NOT_VARIANT)


def adopt_variant(cfg, theirs, refuse):
    """`cfg` with the network of `theirs`, a checkpoint's ModelConfig; `refuse(clashes)` is the
    error raised where an asked field contradicts the checkpoint.

    A variant field is asked for when the command line set it (`cfg.asked`, even to the paper's
    value) or when it is away from the paper's default (a caller that built the config itself).
    Every field not asked for is the checkpoint's; a clash is an asked field that differs from it,
    as (name, the checkpoint's value, the asked value)."""
    paper = ModelConfig()
    asked = set(cfg.asked) | {f for f in VARIANT_FIELDS if getattr(cfg.model, f) != getattr(paper, f)}
    clash = [(f, getattr(theirs, f), getattr(cfg.model, f)) for f in VARIANT_FIELDS
             if f in asked and getattr(cfg.model, f) != getattr(theirs, f)]
    if clash:
        raise refuse(clash)
    keep = {f: getattr(cfg.model, f) for f in NOT_VARIANT}
    return replace(cfg, model=replace(theirs, **keep))
