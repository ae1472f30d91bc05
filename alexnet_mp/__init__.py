"""alexnet_mp: the two-column AlexNet of Krizhevsky, Sutskever and Hinton (2012)."""
import os

# PyTorch's CPU allocator asks for transparent huge pages for large tensors when
# this is set. AlexNet's activations are tens of MB each, and without it the
# page faults of every fresh activation cost more than the arithmetic on it
# (measured: 15.7 ms vs 3.7 ms to write a new 37 MB tensor). Set it to 0 to opt out.
# It must be set before torch makes its first large allocation.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
from alexnet_mp.config import ModelConfig, TrainConfig  # noqa: E402 (after the allocator setting)
from alexnet_mp.distributed.placement import rank_alexnet, two_device_alexnet  # noqa: E402
from alexnet_mp.eval.inference import load_for_inference  # noqa: E402
from alexnet_mp.model.arch import ARCH, canonical_shapes, init_canonical_state  # noqa: E402
from alexnet_mp.model.net import AlexNet, ColumnNet  # noqa: E402

__all__ = ["ARCH", "AlexNet", "ColumnNet", "ModelConfig", "TrainConfig", "canonical_shapes",
           "init_canonical_state", "load_for_inference", "rank_alexnet", "two_device_alexnet"]
__version__ = "0.1.0"
