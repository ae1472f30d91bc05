"""Builders for the three placements of the same network, applied from outside the model.

* `AlexNet(...)`: grouped, one device (`alexnet_mp.model.net`).
* `two_device_alexnet(("cuda:0", "cuda:1"), ...)`: column c on device c, one process.
* `rank_alexnet(device, ...)`: one column per process, after `init_process_group`.

`build` makes the placement a launch chose (`alexnet_mp.distributed.launch`);
`one_device` resolves `--device` (the grouped placement on the device named).
"""
import re

import torch

from alexnet_mp.distributed.exchange import DeviceExchange, ProcessExchange
from alexnet_mp.distributed.parallel import Topology, broadcast_from_first_replica
from alexnet_mp.model.net import AlexNet, ColumnNet


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
    (`alexnet_mp.distributed.parallel.Topology`) is made here if not given; pass the same one
    to `apply_data_parallel` for k > 1 replicas.
    """
    topology = topology or Topology()
    exchange = ProcessExchange(device, topology.pair, topology.column, topology.replica)
    net = ColumnNet(exchange, num_classes, seed=seed, config=config)
    if seed is None:
        broadcast_from_first_replica(net, topology)
    return net


# --device's values, as tools/benchmark.py takes them (torchvision's references: --device).
DEVICE_NAME = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def mps_available():
    """Whether this torch and this machine run Apple's GPU (MPS)."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def one_device(name, warn=print, cuda_count=None):
    """The device the grouped placement runs on for `--device name` (cpu, cuda, cuda:N, mps).

    A device this machine lacks falls back to the one the tools pick by themselves (the
    first GPU, else the CPU) with a one-line warning, as `--devices` naming a missing GPU
    does (README: Placement fallback); only the benchmark refuses, since it would time
    another device than the one asked for.
    """
    n = torch.cuda.device_count() if cuda_count is None else cuda_count
    kind, _, index = name.partition(":")
    if kind == "cpu" or (kind == "cuda" and int(index or 0) < n) or (kind == "mps" and mps_available()):
        return name
    fallback = "cuda:0" if n else "cpu"
    why = f"{n} GPU(s) visible" if kind == "cuda" else "this torch or this machine has no Apple GPU (MPS)"
    warn(f"warning: --device {name} not available ({why}): falling back to the grouped placement on {fallback}")
    return fallback


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
