"""Faults during training: signals to the process group, kill -9, a second run, a full disk.

Each test causes the real fault to a real run, then checks the exit code, the
one line, and that nothing is lost or left behind: the checkpoint resumes,
no temporary file remains, metrics.jsonl holds each logged step once.
Waiting loops poll files for a state to appear; nothing here times anything.
"""
import errno
import glob
import json
import os
import random
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from alexnet_mp.train import preflight
from alexnet_mp.cli import train as train_cli

from .conftest import ROOT
from .helpers import assert_one_line_result, free_port, snapshot


def train_argv(store, out, *extra):
    return ["--data-path", store, "--output-dir", str(out), "-b", "4", "--print-freq", "1", "--seed", "3"] + \
        list(extra)


def start(argv, torchrun=False, threads="2"):
    """A training run in its own session (process group), as a scheduler starts one."""
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                f"--master_port={free_port()}"] if torchrun else []
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS=threads)
    return subprocess.Popen([sys.executable] + launcher + ["tools/train.py"] + argv, cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(condition, proc, timeout=300):
    """Poll until `condition()` holds while `proc` runs; False if `proc` ended first."""
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            return False
        assert time.time() < deadline, "the run made no progress"
        time.sleep(0.02)
    return True


def records(out):
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def logged(out):
    """(step, kind) of every record: one per logged step, one per validation."""
    return [(r["step"], "val" if "val_top1_err" in r else "train") for r in records(out)]


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def checkpoint(out, name="checkpoint.pt"):
    return torch.load(os.path.join(out, name), weights_only=True)


def temps(out, pid="*"):
    return glob.glob(os.path.join(str(out), f"*.tmp{pid}"))


def resume_one_more_step(store, out, capsys, step):
    """Continue the run in-process for one step; it must start where the checkpoint says."""
    code = train_cli.main(train_argv(store, out, "-j", "0", "--epochs", "50", "--checkpoint-minutes", "0",
                                     "--resume", "auto", "--stop-at-step", str(step + 1)))
    assert code == 0, capsys.readouterr().err
    assert checkpoint(out)["step"] == step + 1 and not temps(out)
    assert logged(out) == [(s, "train") for s in range(1, step + 2)]
    return capsys.readouterr().out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_the_process_group_checkpoints_exits_zero_and_resumes(tiny_store, tmp_path, capsys, sig):
    out = tmp_path / "run"
    proc = start(train_argv(tiny_store, out, "-j", "2", "--epochs", "50", "--checkpoint-minutes", "0"))
    assert wait_for(lambda: records(out), proc)
    assert len(children(proc.pid)) >= 2          # the DataLoader workers get the signal too
    os.killpg(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    step = checkpoint(out)["step"]
    assert f"stopped by signal at epoch 0 step {step}: checkpoint written to {out / 'checkpoint.pt'}" in stdout
    assert f"resumed from {out / 'checkpoint.pt'}: epoch 0, step {step}" in \
        resume_one_more_step(tiny_store, out, capsys, step)


def test_sigterm_to_every_rank_under_torchrun_checkpoints_and_exits_zero(tiny_store, tmp_path, capsys):
    out = tmp_path / "run"
    proc = start(train_argv(tiny_store, out, "-j", "1", "--epochs", "50", "--checkpoint-minutes", "0"),
                 torchrun=True, threads="1")
    assert wait_for(lambda: records(out), proc)
    ranks = children(proc.pid)
    assert len(ranks) == 2
    for rank in ranks:      # each rank runs in its own session with its DataLoader worker: signal the group
        os.killpg(rank, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]       # torchrun succeeds only if both ranks exited 0
    step = checkpoint(out)["step"]
    assert f"stopped by signal at epoch 0 step {step}" in stdout
    resume_one_more_step(tiny_store, out, capsys, step)


def test_kill_9_during_a_checkpoint_write_leaves_nothing_once_resumed(tiny_store, tmp_path, capsys):
    out = tmp_path / "run"
    # --checkpoint-minutes 1e-9: a checkpoint after every step, so that a write is soon under way.
    proc = start(train_argv(tiny_store, out, "-j", "1", "--epochs", "50", "--checkpoint-minutes", "1e-9"))
    assert wait_for(lambda: temps(out), proc)
    os.kill(proc.pid, signal.SIGKILL)      # the main process only: its DataLoader worker outlives it a while
    proc.wait()
    left = temps(out)
    assert [os.path.basename(p) for p in left] == [f"checkpoint.pt.tmp{proc.pid}"]
    step = checkpoint(out)["step"] if os.path.isfile(out / "checkpoint.pt") else 0
    printed = resume_one_more_step(tiny_store, out, capsys, step)
    assert f"removed 1 temporary file(s) left by a run that was killed while writing: " \
           f"checkpoint.pt.tmp{proc.pid}" in printed


def test_second_run_on_one_output_dir_is_refused_naming_the_first(tiny_store, tmp_path, capsys):
    out = tmp_path / "run"
    argv = train_argv(tiny_store, out, "-j", "0", "--epochs", "50", "--checkpoint-minutes", "0")
    proc = start(argv)
    assert wait_for(lambda: records(out), proc)
    code = train_cli.main(argv + ["--resume", "auto"])
    assert_one_line_result(code, capsys, f"{out} is in use by another run (pid {proc.pid}): wait for it to end, "
                                         f"stop it, or choose another --output-dir")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    step = checkpoint(out)["step"]
    assert logged(out) == [(s, "train") for s in range(1, step + 1)]      # one writer: nothing interleaved


def test_resume_cuts_metrics_back_to_the_checkpoint_and_skips_a_torn_line(tiny_store, tmp_path, capsys):
    out = tmp_path / "run"
    argv = train_argv(tiny_store, out, "-j", "0", "--epochs", "50", "--checkpoint-minutes", "0")
    assert train_cli.main(argv + ["--stop-at-step", "2"]) == 0
    kept = (out / "metrics.jsonl").read_bytes()
    proc = start(argv + ["--resume", "auto"])
    assert wait_for(lambda: len(records(out)) >= 4, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint(out)["step"] == 2 and len(records(out)) >= 4      # logged past its checkpoint
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 0, "step": 9, "lo')                          # and killed mid-line
    capsys.readouterr()
    printed = resume_one_more_step(tiny_store, out, capsys, 2)
    assert (out / "metrics.jsonl").read_bytes().startswith(kept)
    assert "skipped 1 unreadable line(s)" in printed


def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(tiny_store, tmp_path, capsys,
                                                                                  monkeypatch):
    out = tmp_path / "run"
    argv = train_argv(tiny_store, out, "-j", "0", "--epochs", "50", "--checkpoint-minutes", "0")
    with monkeypatch.context() as m:      # a disk with 0.3 GiB free: too little for two checkpoints
        m.setattr(preflight.shutil, "disk_usage", lambda path: SimpleNamespace(free=3 * 2**30 // 10))
        assert train_cli.main(argv + ["--stop-at-step", "1"]) == 0
    need = 2 * os.path.getsize(out / "checkpoint.pt")        # the checkpoint it then wrote, twice
    warning = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning: 0.30 GiB free")]
    assert len(warning) == 1 and f"less than two checkpoints need ({need / 2**30:.2f} GiB" in warning[0]
    before = snapshot(out)["checkpoint.pt"]
    real_save = torch.save

    class DiskWith100MiBFree:
        """The temporary file, on a disk that fills up 100 MiB into the checkpoint."""

        def __init__(self, f):
            self.f, self.room = f, 100 * 2**20

        def write(self, data):
            if len(data) > self.room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.room -= len(data)
            return self.f.write(data)

        def flush(self):
            self.f.flush()
    monkeypatch.setattr(torch, "save", lambda obj, f: real_save(obj, DiskWith100MiBFree(f)))
    capsys.readouterr()
    code = train_cli.main(argv + ["--resume", "auto", "--stop-at-step", "2"])
    line = assert_one_line_result(code, capsys, f"{out / 'checkpoint.pt'} cannot be written: the disk is full (")
    assert f"GiB free in {out}): free some space or choose another --output-dir; files written before stay " \
           f"intact" in line
    assert snapshot(out)["checkpoint.pt"] == before and checkpoint(out)["step"] == 1 and not temps(out)


@pytest.mark.slow
def test_chaos_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(tiny_store, tmp_path):
    """Six kill -9s, every other one while a checkpoint is being written; the last run finishes."""
    argv = train_argv(tiny_store, tmp_path / "ref", "-j", "1", "--epochs", "2", "--checkpoint-minutes", "1e-9")
    ref = start(argv)
    assert ref.wait(timeout=1200) == 0, ref.communicate()[1][-3000:]
    seed = int(os.environ.get("CHAOS_SEED", "11"))
    rng, out = random.Random(seed), tmp_path / "chaos"
    argv = train_argv(tiny_store, out, "-j", "1", "--epochs", "2", "--checkpoint-minutes", "1e-9",
                      "--resume", "auto")
    kills, in_writes = 0, 0
    while True:
        proc = start(argv)
        if kills == 6:
            break
        if kills % 2 == 0:      # this run's own temporary file: a write of its own under way
            alive = wait_for(lambda: temps(out, proc.pid), proc)
        else:
            seen = len(records(out))
            alive = wait_for(lambda: len(records(out)) > seen, proc)
            time.sleep(rng.uniform(0, 1.5))          # a random moment: mid-step, mid-write or mid-log
        if not alive or proc.poll() is not None:
            break
        os.killpg(proc.pid, signal.SIGKILL)          # the whole group, DataLoader worker too
        proc.wait()
        in_writes += bool(temps(out, proc.pid))
        kills += 1
    stdout, stderr = proc.communicate(timeout=1200)
    print(f"chaos seed {seed}: {kills} kills, {in_writes} during a checkpoint write")
    assert proc.returncode == 0, stderr[-3000:]
    assert kills == 6 and in_writes >= 3
    for name in ("checkpoint.pt", "model_best.pt"):
        got, want = checkpoint(out, name), checkpoint(tmp_path / "ref", name)
        assert got["step"] == want["step"] and got["epoch"] == want["epoch"], name
        for key in want["model"]:
            assert torch.equal(got["model"][key], want["model"][key]), (name, key)
            assert torch.equal(got["optimizer"]["velocity"][key], want["optimizer"]["velocity"][key]), (name, key)
    assert checkpoint(out)["step"] == 20 and not temps(out)
    assert logged(out) == logged(tmp_path / "ref")
    assert logged(out) == [(s, "train") for s in range(1, 11)] + [(10, "val")] + \
        [(s, "train") for s in range(11, 21)] + [(20, "val")]
