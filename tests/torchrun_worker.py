"""Test-only launcher: tools/train.py's main under torchrun, noting what the tests check.

    python -m torch.distributed.run ... tests/torchrun_worker.py OUT_DIR -- TRAIN_ARGS...

Writes OUT_DIR/rank{RANK}.pt with this rank's local weights after its first step and at
the end (canonical name -> (first row, tensor)), and `events`: every torch.distributed
collective and every host read of a tensor (.item(), .tolist(), bool(), float()) in
the order they ran, with "step" where each training step begins. Nothing here is a
user-facing flag: the training code is run as it is, with its functions wrapped.
"""
import os
import sys

import torch
import torch.distributed as dist

from alexnet_mp.train import loop as training
from alexnet_mp.cli import train as cli

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter_single", "reduce_scatter_tensor", "broadcast",
               "gather", "gather_object", "all_gather_object", "barrier", "reduce", "scatter")
# torch 2.14 has reduce_scatter_single and deprecates reduce_scatter_tensor, 2.11 has only the
# latter; alexnet_mp.distributed.compat calls whichever exists. One event name for both, so
# that counts do not depend on the torch version.
EVENT_NAMES = {"reduce_scatter_single": "reduce_scatter", "reduce_scatter_tensor": "reduce_scatter"}
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__")


def noting(name, real, events):
    def wrapper(*args, **kwargs):
        events.append(name)
        return real(*args, **kwargs)
    return wrapper


def note_collectives(events):
    """Wrap every collective of COLLECTIVES that this torch has, appending its event name to
    `events` on each call; returns a function that puts the real ones back."""
    real = {name: getattr(dist, name) for name in COLLECTIVES if hasattr(dist, name)}
    for name, fn in real.items():
        setattr(dist, name, noting(EVENT_NAMES.get(name, name), fn, events))
    return lambda: [setattr(dist, name, fn) for name, fn in real.items()]


def local_weights(net):
    return {name: (rows.start, p.detach().clone()) for name, p, rows, _ in net._slices()}


def main():
    out_dir, argv = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
    events, dumps, nets = [], {}, []
    note_collectives(events)
    for name in HOST_READS:
        setattr(torch.Tensor, name, noting(name.strip("_"), getattr(torch.Tensor, name), events))
    real_step = training.train_step

    def step(model, *args, **kwargs):
        events.append("step")
        result = real_step(model, *args, **kwargs)
        nets[:] = [getattr(model, "module", model)]
        dumps.setdefault("step1", local_weights(nets[0]))
        return result
    training.train_step = step
    code = cli.main(argv)
    dumps["final"] = local_weights(nets[0])
    torch.save({"events": events, "code": code, **dumps}, os.path.join(out_dir, f"rank{os.environ['RANK']}.pt"))
    return code


if __name__ == "__main__":
    sys.exit(main())
