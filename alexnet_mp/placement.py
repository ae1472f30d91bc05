"""Builders for the three placements of the same network, and the rule that picks one.

* `AlexNet(...)`: grouped, one device.
* `two_device_alexnet(("cuda:0", "cuda:1"), ...)`: column c on device c, one process.
* `rank_alexnet(device, ...)`: one column per process, after `init_process_group`.
"""
import os


import torch

from .config import check_placement
from .exchange import COLUMNS, DeviceExchange, ProcessExchange
from .model import AlexNet, ColumnNet


def two_device_alexnet(devices=("cuda:0", "cuda:1"), num_classes=1000, *, seed=None,
                       config=None, record_crossings=False, init=True):
    """Column 0 on devices[0] (with fc8), column 1 on devices[1]; activations cross
    devices only at conv3, fc6, fc7 and fc8."""
    return ColumnNet(DeviceExchange(devices, record=record_crossings), num_classes,
                     seed=seed, config=config, init=init)


def rank_alexnet(device, num_classes=1000, *, seed=None, config=None):
    """This rank's column (rank % 2) of replica rank // 2, fc8 replicated.

    All ranks start from the same full weights: with a `seed` every rank draws
    them identically; with seed=None (torch's global generator, which may differ
    per process) they are broadcast from the first replica instead.
    """
    net = ColumnNet(ProcessExchange(device), num_classes, seed=seed, config=config)
    if seed is None:
        net.exchange.sync_parameters(net)
    return net


def is_distributed(model):
    return isinstance(getattr(model, "exchange", None), ProcessExchange)


def torchrun_env():
    """(rank, world size, local rank) from torchrun's environment, or None outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))


def choose_placement(devices=None, distributed=False, local_rank=0, cuda_count=None, warn=print, columns=None):
    """Pick what can run here: ("rank"|"two-device"|"grouped", [device names], backend).

    Requested placements that cannot be hosted fall back to the nearest one that
    can, with a one-line warning, instead of crashing. The one-column net
    (`columns=1`) is grouped only: asked for in another placement, it is refused.
    """
    n = torch.cuda.device_count() if cuda_count is None else cuda_count
    if columns not in (None, COLUMNS):
        check_placement(columns, "rank" if distributed else "two-device" if devices else "grouped")
        return "grouped", ["cuda:0" if n else "cpu"], None
    if distributed:
        if n > local_rank:
            return "rank", [f"cuda:{local_rank}"], "nccl"
        if n:
            warn(f"warning: local rank {local_rank} has no GPU of its own ({n} visible): "
                 f"running this rank's column on the CPU under gloo")
        return "rank", ["cpu"], "gloo"
    if devices:
        wanted = [d.strip() for d in devices.split(",") if d.strip()]
        missing = [d for d in wanted if d.startswith("cuda") and
                   (n == 0 or int((d.split(":") + ["0"])[1]) >= n)]
        if len(wanted) == 2 and not missing:
            return "two-device", wanted, None
        reason = (f"{', '.join(missing)} not available ({n} GPU(s) visible)" if missing
                  else f"--devices needs exactly 2 devices, got {len(wanted)}")
        fallback = choose_placement(cuda_count=n, warn=warn)
        warn(f"warning: {reason}: falling back to the {fallback[0]} placement on {fallback[1][0]}")
        return fallback
    if n >= 2:
        return "two-device", ["cuda:0", "cuda:1"], None
    return "grouped", ["cuda:0" if n == 1 else "cpu"], None


def build(placement, device_names, num_classes, *, seed=None, config=None):
    if placement == "rank":
        return rank_alexnet(device_names[0], num_classes, seed=seed, config=config)
    if placement == "two-device":
        return two_device_alexnet(device_names, num_classes, seed=seed, config=config)
    return AlexNet(num_classes, seed=seed, config=config, device=device_names[0])


def input_device(model):
    """Where a batch should be before the forward (column 0's device, or the rank's own)."""
    if isinstance(model, AlexNet):
        return model.conv1.weight.device
    return model.columns[0].conv1.weight.device


