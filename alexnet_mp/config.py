"""The paper's defaults in one place.

Every default cites its source: "§n" is a section of Krizhevsky, Sutskever and
Hinton (NIPS 2012); "spec §n" is a section of the project's reference notes
(docs/alexnet-reference.md), which record where the paper and the authors'
code disagree. A checkpoint stores the final config with `asdict`.
"""
from dataclasses import asdict, dataclass, field, fields


@dataclass
class ModelConfig:
    num_classes: int = 1000          # §2: ILSVRC has 1000 classes
    columns: int = 2                 # §3.2: the net is split across two GPUs
    lrn_size: int = 5                # §3.3: n = 5
    lrn_alpha: float = 1e-4          # §3.3; divided by n as the original code does (spec §1)
    lrn_beta: float = 0.75           # §3.3
    lrn_k: float = 2.0               # §3.3
    dropout: float = 0.5             # §4.2: outputs of fc6 and fc7, paper form (spec §1)
    init_std: float = 0.01           # §5: every weight ~ N(0, 0.01^2)
    crop: int = 224                  # §2/§4.1: 224x224 patches (conv1 pads right/bottom by 3, spec §1)


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
    pca_std: float = 0.1             # §4.1: alpha_i ~ N(0, 0.1^2)
    image_size: int = 256            # §2: images stored at 256x256
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)


def to_dict(cfg):
    return asdict(cfg)


def from_dict(cls, data):
    """Rebuild a config saved with `to_dict`, ignoring keys this version lacks."""
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
