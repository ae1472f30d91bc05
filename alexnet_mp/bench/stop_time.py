"""How long a run takes from SIGTERM to its checkpoint's rename (tools/slurm/stop_time.py).

SLURM gives a signalled job KillWait (30 s by default) before SIGKILL, and torchrun's
agent gives its workers 30 s after it is signalled itself: the checkpoint must land
inside both. This starts `torchrun --nproc_per_node=2 tools/train.py` (the rank
placement) on a store of --classes classes, signals the agent and every worker at
once, as SLURM's process tracking does, at --signals points of the run, and reads
the time each run reports itself: rank 0 notes when its SIGTERM came and writes the
seconds to the rename into OUTPUT_DIR/stopped-by-signal.json. The step time it
stopped after comes from the run's own log (img/s), torchvision's AlexNet img/s on
this machine beside it.
"""
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from alexnet_mp.data.demo_set import SHAPES, draw
from alexnet_mp.data.prepare import prepare
from alexnet_mp.distributed.launch import free_port
from alexnet_mp.files import atomic_write
from alexnet_mp.train.loop import STOPPED_MARKER

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def class_store(folder, classes, per_class=1):
    """A prepared store of `classes` classes, `per_class` images of each split (demo shapes)."""
    src = os.path.join(folder, "src")
    for split in ("train", "val"):
        for c in range(classes):
            out = os.path.join(src, split, f"c{c:04d}")
            os.makedirs(out, exist_ok=True)
            for i in range(per_class):
                image = draw(SHAPES[c % len(SHAPES)], np.random.default_rng([split == "val", c, i]), c / classes)
                atomic_write(os.path.join(out, f"{i}.JPEG"), lambda f: image.save(f, format="JPEG", quality=90))
    prepare(src, os.path.join(folder, "store"), workers=os.cpu_count() or 1, log=lambda *a: None)
    return os.path.join(folder, "store")


def _tree(pid):
    """`pid` and its descendants (the agent, its workers, their loaders)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def one_stop(store, out, delay_s, batch, threads_env):
    """Start a fresh run, SIGTERM every process of it `delay_s` after its first step began,
    and return rank 0's reported seconds from the signal to the rename, and the log."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "tools/train.py", "--data-path", store, "--output-dir", out,
           "-b", str(batch), "-j", "0", "--checkpoint-minutes", "0"]
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="", **threads_env)
    log_path = out + ".log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        while "placement:" not in open(log_path).read():
            if proc.poll() is not None:
                raise RuntimeError(open(log_path).read()[-2000:])
            time.sleep(0.2)
        time.sleep(delay_s)
        for pid in _tree(proc.pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        proc.wait(timeout=900)
    marker = os.path.join(out, STOPPED_MARKER)
    text = open(log_path).read()
    if not os.path.isfile(marker):
        raise RuntimeError(f"no {STOPPED_MARKER}: {text[-2000:]}")
    with open(marker) as f:
        return json.load(f), text


def measure(classes=1000, batch=128, signals=3, seed=0, log=print):
    """[{delay_s, signal_to_checkpoint_s, step}] for `signals` stops at random points of the run."""
    rng = random.Random(seed)
    rows = []
    per_class = max(1, 2 * batch // classes + 1)
    steps_per_epoch = classes * per_class // batch
    with tempfile.TemporaryDirectory() as d:
        store = class_store(d, classes, per_class)
        for i in range(signals):
            delay = rng.uniform(5.0, 60.0)
            marker, text = one_stop(store, os.path.join(d, f"run{i}"), delay, batch, {"OMP_NUM_THREADS": "1"})
            # a stop at an epoch's end came after its validation pass (the signal arrived during it)
            where = "after validation" if marker["step"] == marker["epoch"] * steps_per_epoch else "in the steps"
            rows.append({"delay_s": round(delay, 1), "signal_to_checkpoint_s": marker["signal_to_checkpoint_s"],
                         "stopped_at_step": marker["step"], "where": where})
            log(f"signal {delay:5.1f} s after the start of training: checkpoint renamed "
                f"{marker['signal_to_checkpoint_s']:.1f} s later, at step {marker['step']} ({where})")
    return rows
