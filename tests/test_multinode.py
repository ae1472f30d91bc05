"""Two torchrun agents on one machine as two nodes of 2 ranks (c10d rendezvous on
127.0.0.1): 2 replicas of the column pair, against one grouped process."""
import collections
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from alexnet_mp import AlexNet

from .conftest import ROOT, run_script
from .helpers import assert_close_rel, free_port
from .test_train import _children, _ok, model_of

# lr 0.001 and dropout off: see test_train.test_k_steps_in_ranks_equal_k_steps_grouped.
FLAGS = ["--dropout", "0", "-j", "0", "--lr", "0.001", "--epochs", "2", "--checkpoint-minutes", "0", "--seed", "3"]
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def two_agents(script_args, run_id, restarts=0):
    """Two `torchrun --nnodes=2 --nproc_per_node=2` agents meeting at one c10d endpoint."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=2",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id={run_id}",
           f"--max-restarts={restarts}"] + script_args
    return [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]


def finish(procs, timeout=900):
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out[-2000:] + err[-3000:]
    return "".join(out for out, _ in outs)


def replica_state(dumps, replica, when):
    """One replica's canonical weights, from its two ranks' local slices (ordered by first row)."""
    parts = collections.defaultdict(list)
    for rank in (2 * replica, 2 * replica + 1):
        for name, (start, tensor) in dumps[rank][when].items():
            parts[name].append((start, tensor))
    return {name: torch.cat([t for _, t in sorted(ps, key=lambda s: s[0])]) for name, ps in parts.items()}


def layer(state, name):     # weight and bias together: conv1's zero-init bias has no scale of its own
    return torch.cat([state[f"{name}.weight"].flatten(), state[f"{name}.bias"]])


def steps(events):
    """Each training step's events: from its "step" mark to the next step's."""
    marks = [i for i, e in enumerate(events) if e == "step"] + [len(events)]
    return [collections.Counter(events[a + 1:b]) for a, b in zip(marks, marks[1:])]


def test_two_agents_step_like_one_grouped_process_and_their_replicas_stay_bitwise_equal(tiny_store, tmp_path):
    """A mismatch after one step points to the sampler's split of the global batch over
    replicas, or to DDP's group (the same-column ranks); a bitwise difference between the
    replicas after three steps points to a gradient that is not averaged (each replica
    would step on its own half of the batch)."""
    grouped = tmp_path / "grouped"
    _ok(run_script(["tools/train.py", "--data-path", tiny_store, "--output-dir", str(grouped),
                    "-b", "4", "--stop-at-step", "1"] + FLAGS))
    out, dumps = tmp_path / "ranks", tmp_path / "dumps"
    dumps.mkdir()
    finish(two_agents(["tests/torchrun_worker.py", str(dumps), "--", "--data-path", tiny_store,
                       "--output-dir", str(out), "-b", "2", "--stop-at-step", "3", "--print-freq", "2"] + FLAGS,
                      run_id=f"steps{os.getpid()}"))
    ranks = [torch.load(dumps / f"rank{r}.pt", weights_only=True) for r in range(4)]
    ref, init = model_of(grouped)["model"], AlexNet(10, seed=3).state_dict()
    for replica in (0, 1):
        state = replica_state(ranks, replica, "step1")
        for name, tensor in ref.items():
            assert_close_rel(state[name], tensor, 1e-5, f"replica {replica} {name}")
        for name in LAYERS:       # the update itself: a doubled or halved gradient would be 100% off
            assert_close_rel(layer(state, name) - layer(init, name), layer(ref, name) - layer(init, name),
                             1e-2, f"replica {replica} {name} update")
    for column in (0, 1):         # fc8's halves too: each belongs to one column
        for name, (_, tensor) in ranks[column]["final"].items():
            assert torch.equal(ranks[column + 2]["final"][name][1], tensor), f"column {column} {name}"
    written = model_of(out)
    assert written["step"] == 3 and len(written["rng"]) == 4      # every rank's generators reach rank 0
    final = replica_state(ranks, 0, "final")
    assert all(torch.equal(written["model"][k], v) for k, v in final.items())
    _assert_no_host_sync_between_log_steps([steps(r["events"]) for r in ranks])


def _assert_no_host_sync_between_log_steps(per_rank):
    """Step 1 does not log (--print-freq 2): its only collectives are the exchange's, four
    gathers into conv3, fc6, fc7, fc8, the logits' gather and four backward all-reduces
    (gloo's; NCCL's reduce-scatters would count as "reduce_scatter", by either torch's name
    for it), and nothing reads a tensor on the host. DDP's averaging is not among them: it runs in its
    C++ reducer, which waits for the all-reduce at the end of backward and not on the host
    under NCCL. Step 2 logs: the votes' all-reduce and the loss's .item() show up there
    (so the counting itself works)."""
    for rank, counts in enumerate(per_rank):
        assert counts[0] == {"all_gather": 5, "all_reduce": 4}, (rank, counts[0])
        assert counts[1]["all_reduce"] == 5 and counts[1]["item"] >= 1, (rank, counts[1])


# slow: a minute or more on the 2-core machine; run with -m slow before a change lands
@pytest.mark.slow
def test_a_killed_worker_on_one_node_restarts_both_nodes_which_finish(tiny_store, tmp_path):
    out = tmp_path / "run"
    procs = two_agents(["tools/train.py", "--data-path", tiny_store, "--output-dir", str(out), "-b", "4",
                        "--print-freq", "5", "--resume", "auto"] + FLAGS, run_id=f"kill{os.getpid()}", restarts=1)
    deadline = time.time() + 600
    while not (out / "checkpoint.pt").exists() and all(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(0.2)                      # waiting for the first epoch's checkpoint
    workers = _children(procs[1].pid)
    assert workers, "no worker processes found"
    os.kill(workers[-1], signal.SIGKILL)
    stdout = finish(procs)
    assert f"resumed from {out / 'checkpoint.pt'}" in stdout
    assert model_of(out)["step"] == 10     # 2 epochs of 40 images at a global batch of 2 x 4
