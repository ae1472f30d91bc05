import os
import subprocess
import sys

import pytest
import torch

from alexnet_mp.data import demo_set as demo_data
from alexnet_mp.data.prepare import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_store(base, train_per_class, val_per_class):
    """The 10 demo classes with this many images each, prepared under `base`; returns the store."""
    src = demo_data.generate(str(base / "src"), train_per_class=train_per_class, val_per_class=val_per_class)
    prepare(src, str(base / "store"), workers=1, log=lambda *a: None)
    return str(base / "store")


@pytest.fixture(autouse=True)
def cpu_unless_cuda(request, monkeypatch):
    """Outside the GPU suite, the tools called in this process see no GPU, as subprocesses
    (run_script) see none: the default suite runs the CPU placements on any machine.
    (Run the GPU suite in its own session, `-m cuda`, as the README says: torch caches some
    answers to "is there a GPU" for the whole process.)"""
    if request.node.get_closest_marker("cuda") is None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """10 demo classes, 4 training and 2 validation images each, prepared."""
    return make_store(tmp_path_factory.mktemp("tiny"), 4, 2)


def run_script(args, env=None, timeout=600):
    """Run a Python command line from the repository root; returns CompletedProcess.

    GPUs are hidden unless `env` shows them: a CPU test must run the CPU placement,
    and never pick NCCL, on a machine that has GPUs too."""
    full_env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="2", CUDA_VISIBLE_DEVICES="")
    full_env.update(env or {})
    return subprocess.run([sys.executable] + args, cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
