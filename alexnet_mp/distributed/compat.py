"""The collectives whose names differ between the torch versions this package supports.

setup.cfg declares the floor (torch 2.6, torchvision 0.21); the GPU machine's
preinstalled torch 2.11 / torchvision 0.26 is inside it, and the pinned pair is
torch 2.14.1 / torchvision 0.29.1. torch 2.14 has `reduce_scatter_single` and warns
(FutureWarning) on every call of the old name, `reduce_scatter_tensor`; torch 2.11
has only the old name.
"""
import torch.distributed as dist


def reduce_scatter(output, input, group):
    """Sum `input` (the group's outputs end to end) over the group; this rank's share into `output`.

    The name is looked up on every call, not once at import: a test that wraps
    `torch.distributed`'s collectives to count them then sees the call."""
    fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    return fn(output, input, group=group)
