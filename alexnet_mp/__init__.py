"""alexnet_mp: the two-column AlexNet of Krizhevsky, Sutskever and Hinton (2012)."""
from .config import ModelConfig, TrainConfig
from .model import ARCH, AlexNet, ColumnNet, canonical_shapes, init_canonical_state
from .placement import rank_alexnet, two_device_alexnet

__all__ = ["ARCH", "AlexNet", "ColumnNet", "ModelConfig", "TrainConfig", "canonical_shapes",
           "init_canonical_state", "rank_alexnet", "two_device_alexnet"]
__version__ = "0.1.0"
