"""Builders for the three placements of the same network, and the rule that picks one.

* `AlexNet(...)`: grouped, one device.
* `two_device_alexnet(("cuda:0", "cuda:1"), ...)`: column c on device c, one process.
* `rank_alexnet(device, ...)`: one column per process, after `init_process_group`.
"""
import os
import socket

import torch

from .config import check_placement
from .errors import UsageError
from .exchange import COLUMNS, DeviceExchange, ProcessExchange
from .model import AlexNet, ColumnNet
from .parallel import Topology, broadcast_from_first_replica


def two_device_alexnet(devices=("cuda:0", "cuda:1"), num_classes=1000, *, seed=None,
                       config=None, record_crossings=False, init=True):
    """Column 0 on devices[0], column 1 on devices[1], each with its half of fc8's
    classes; activations cross devices only at conv3, fc6, fc7 and fc8, and column 1's
    logits join column 0's on devices[0]."""
    return ColumnNet(DeviceExchange(devices, record=record_crossings), num_classes,
                     seed=seed, config=config, init=init)


def rank_alexnet(device, num_classes=1000, *, seed=None, config=None, topology=None):
    """This rank's column (rank % 2) of replica rank // 2, with its half of fc8's classes.

    All replicas start from the same full weights: with a `seed` every rank draws
    them identically; with seed=None (torch's global generator, which may differ
    per process) they are broadcast from the first replica instead. `topology`
    (`alexnet_mp.parallel.Topology`) is made here if not given; pass the same one
    to `apply_data_parallel` for k > 1 replicas.
    """
    topology = topology or Topology()
    exchange = ProcessExchange(device, topology.pair, topology.column, topology.replica)
    net = ColumnNet(exchange, num_classes, seed=seed, config=config)
    if seed is None:
        broadcast_from_first_replica(net, topology)
    return net


def is_distributed(model):
    return isinstance(getattr(model, "exchange", None), ProcessExchange)


def torchrun_env():
    """(rank, world size, local rank) from torchrun's environment, or None outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))


def local_gpu(local_rank, cuda_count):
    """The index of the GPU a torchrun rank would use, or None: its local rank's GPU,
    or the only one it sees (launchers that give each rank one GPU through
    CUDA_VISIBLE_DEVICES)."""
    if cuda_count == 1:
        return 0
    return local_rank if local_rank < cuda_count else None


def gpu_identity(index):
    """A physical GPU's identity, the same in every process that sees it, whatever its index there."""
    if index is None:
        return None
    props = torch.cuda.get_device_properties(index)
    return str(getattr(props, "uuid", "")) or f"{socket.gethostname()}/pci{props.pci_bus_id}"


def share_identities(store, rank, world, identity):
    """Every rank's GPU identity (None: no GPU), exchanged through the rendezvous store."""
    store.set(f"gpu/{rank}", identity or "")
    return [store.get(f"gpu/{r}").decode() or None for r in range(world)]


def job_backend(identities, wanted=None):
    """One backend for the whole job: ("nccl" | "gloo", warning or None).

    NCCL only when every rank has a GPU of its own: a rank without one, or two ranks
    on one physical GPU, would otherwise leave a job of mixed NCCL and gloo ranks that
    hangs. `wanted` is --devices under torchrun: "cuda" turns the fallback into an error.
    """
    missing = [r for r, ident in enumerate(identities) if ident is None]
    shared = sorted({r for r, ident in enumerate(identities)
                     if ident is not None and identities.index(ident) != r})
    if wanted == "cpu" or (wanted is None and len(missing) == len(identities)):
        return "gloo", None            # asked for, or a machine without GPUs: nothing to warn of
    if not missing and not shared:
        return "nccl", None
    reason = (f"rank(s) {_ranks(missing)} have no GPU of their own" if missing
              else f"rank(s) {_ranks(shared)} share a GPU with a lower rank")
    if wanted == "cuda":
        raise UsageError(f"{reason}, so NCCL cannot run: launch at most one rank per GPU "
                         f"(--nproc_per_node = number of GPUs) or drop --devices cuda to run on the CPU")
    return "gloo", f"warning: {reason}: every rank runs its column on the CPU under gloo"


def _ranks(ranks):
    return ", ".join(map(str, ranks[:8])) + (", ..." if len(ranks) > 8 else "")


def torchrun_wanted(devices):
    """--devices under torchrun: "cuda" (GPUs required), "cpu" (gloo on the CPU), or None (decide)."""
    if not devices:
        return None
    kinds = {d.strip().split(":")[0] for d in devices.split(",") if d.strip()}
    if kinds - {"cuda", "cpu"} or len(kinds) != 1:
        raise UsageError(f"--devices {devices} under torchrun: give 'cuda' (one GPU per rank, NCCL) "
                         f"or 'cpu' (gloo); each rank takes its own GPU")
    return kinds.pop()


def choose_placement(devices=None, cuda_count=None, warn=print, columns=None):
    """Pick what can run in one process: ("two-device"|"grouped", [device names], None).

    Requested placements that cannot be hosted fall back to the nearest one that
    can, with a one-line warning, instead of crashing. The one-column net
    (`columns=1`) is grouped only: asked for in another placement, it is refused.
    """
    n = torch.cuda.device_count() if cuda_count is None else cuda_count
    if columns not in (None, COLUMNS):
        check_placement(columns, "two-device" if devices else "grouped")
        return "grouped", ["cuda:0" if n else "cpu"], None
    if devices:
        wanted = [d.strip() for d in devices.split(",") if d.strip()]
        missing = [d for d in wanted if d.startswith("cuda") and
                   (n == 0 or int((d.split(":") + ["0"])[1]) >= n)]
        if len(wanted) == COLUMNS and not missing:
            return "two-device", wanted, None
        reason = (f"{', '.join(missing)} not available ({n} GPU(s) visible)" if missing
                  else f"--devices needs exactly {COLUMNS} devices, got {len(wanted)}")
        fallback = choose_placement(cuda_count=n, warn=warn)
        warn(f"warning: {reason}: falling back to the {fallback[0]} placement on {fallback[1][0]}")
        return fallback
    if n >= 2:
        return "two-device", ["cuda:0", "cuda:1"], None
    return "grouped", ["cuda:0" if n == 1 else "cpu"], None


def build(placement, device_names, num_classes, *, seed=None, config=None, topology=None):
    if placement == "rank":
        return rank_alexnet(device_names[0], num_classes, seed=seed, config=config, topology=topology)
    if placement == "two-device":
        return two_device_alexnet(device_names, num_classes, seed=seed, config=config)
    return AlexNet(num_classes, seed=seed, config=config, device=device_names[0])


def gpu_layout(net, device_names):
    """channels_last weights where any column runs on a GPU: cudnn's fastest convolutions
    want the weights in it as well as the activations (which are channels_last everywhere)."""
    if any(torch.device(d).type == "cuda" for d in device_names):
        net = net.to(memory_format=torch.channels_last)
    return net


def input_device(model):
    """Where a batch should be before the forward (column 0's device, or the rank's own)."""
    if isinstance(model, AlexNet):
        return model.conv1.weight.device
    return model.columns[0].conv1.weight.device


