"""SLURM: an srun step as a launcher (fast, pure Python), and the job script on a two-node
cluster on this machine (slow: tools/slurm/local_cluster.sh, root and Debian's slurm-wlm).

The fast tests hold the env parsing to the rules of alexnet_mp/distributed/slurm.py's
docstring, with environments written as SLURM 22.05 sets them (recorded from the local
cluster: a batch shell has no SLURM_STEP_ID; an srun step has SLURM_STEP_ID=0).
The slow tests compare weights against a torchrun run of the same world on one node.
"""
import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
import torch.distributed as dist

from alexnet_mp.distributed import launch, slurm
from alexnet_mp.errors import LaunchError
from alexnet_mp.train.loop import STOP_CHECK_SECONDS, STOPPED_MARKER, vote_interval

from .conftest import ROOT
from .helpers import free_port

BATCH_SHELL = {"SLURM_JOB_ID": "812", "SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0",
               "SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_TASKS_PER_NODE": "1(x2)",
               "SLURM_CPUS_ON_NODE": "8"}


def srun_task(procid, nodeid, localid, tasks_per_node="2(x2)", ntasks="4"):
    """The environment of one task of `srun` in that batch job (SLURM_STEP_* added by srun)."""
    return dict(BATCH_SHELL, SLURM_STEP_ID="0", SLURM_STEPID="0", SLURM_PROCID=str(procid),
                SLURM_NODEID=str(nodeid), SLURM_LOCALID=str(localid), SLURM_NTASKS=ntasks,
                SLURM_STEP_NUM_TASKS=ntasks, SLURM_STEP_NODELIST="gpu[07-08]",
                SLURM_STEP_TASKS_PER_NODE=tasks_per_node)


def adopted(env):
    env = dict(env)
    did = slurm.adopt_srun_step(env, address=lambda node: f"addr-of-{node}")
    return did, env


def test_srun_tasks_form_one_job_with_ranks_from_the_step_and_rank_0_on_the_first_node():
    seen = []
    for procid, nodeid, localid in ((0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)):
        did, env = adopted(srun_task(procid, nodeid, localid))
        assert did
        seen.append((env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"],
                     env["MASTER_ADDR"], env["MASTER_PORT"]))
    assert [s[0] for s in seen] == ["0", "1", "2", "3"] and {s[1] for s in seen} == {"4"}
    assert [s[2] for s in seen] == ["0", "1", "0", "1"] and {s[3] for s in seen} == {"2"}
    assert {s[4] for s in seen} == {"addr-of-gpu07"}          # the step's first node, by its address
    assert len({s[5] for s in seen}) == 1                     # one port on every task


def test_the_port_comes_from_the_job_id_and_stays_below_the_ephemeral_range():
    ports = [int(adopted(dict(srun_task(0, 0, 0), SLURM_JOB_ID=str(j)))[1]["MASTER_PORT"])
             for j in (1, 812, 813, 10**7 + 3)]
    assert len(set(ports)) == len(ports)
    assert all(1024 < p < 32768 for p in ports)


def test_master_addr_and_port_set_by_the_user_are_kept():
    _, env = adopted(dict(srun_task(1, 0, 1), MASTER_ADDR="10.0.0.5", MASTER_PORT="29555"))
    assert (env["MASTER_ADDR"], env["MASTER_PORT"], env["RANK"]) == ("10.0.0.5", "29555", "1")


@pytest.mark.parametrize("step_id", [None, "batch", "extern", "4294967291", "4294967292", "4294967290"],
                         ids=["sbatch-or-salloc-shell", "batch", "extern", "batch-id", "extern-id", "interactive-id"])
def test_plain_python_in_an_allocation_shell_stays_one_process(step_id):
    env = dict(BATCH_SHELL) if step_id is None else dict(BATCH_SHELL, SLURM_STEP_ID=step_id)
    did, after = adopted(env)
    assert not did and after == env                           # SLURM_NTASKS=2 there, yet no RANK exported


def test_a_one_task_step_is_one_process():
    did, env = adopted(srun_task(0, 0, 0, tasks_per_node="1", ntasks="1"))
    assert not did and "RANK" not in env


def test_torchruns_rank_wins_inside_an_srun_step():
    torchrun = dict(srun_task(0, 0, 0), RANK="3", WORLD_SIZE="4", LOCAL_RANK="1", MASTER_ADDR="h", MASTER_PORT="7")
    did, env = adopted(torchrun)
    assert not did and env == torchrun


@pytest.mark.parametrize("nodelist, first", [("n[1-2]", "n1"), ("gpu[07-09,12],cpu01", "gpu07"),
                                             ("a1,b[2-3]", "a1"), ("rack1-node[003-004]", "rack1-node003"),
                                             ("login", "login"), ("x[5,1-2]y", "x5y")])
def test_first_node_of_a_compressed_node_list(nodelist, first):
    assert slurm.first_host(nodelist) == first


def test_tasks_per_node_notation():
    counts = [slurm.tasks_on_node("2(x3),1", n) for n in range(4)]
    assert counts == [2, 2, 2, 1]


def test_cpu_threads_per_rank_follow_the_allocation_not_the_machine():
    assert slurm.cpus_per_rank({"SLURM_CPUS_ON_NODE": "8"}, 2) == 4
    assert slurm.cpus_per_rank({"SLURM_CPUS_ON_NODE": "1"}, 2) == 1
    assert slurm.cpus_per_rank({}, 1) == (os.cpu_count() or 1)


@pytest.mark.parametrize("step_s", [0.01, 0.7, 1.7, 4.9, 5.0, 60.0])
def test_stop_votes_come_every_print_freq_steps_or_every_stop_check_seconds_of_steps(step_s):
    every = vote_interval(step_s, 10)
    assert 1 <= every <= 10
    assert every == 1 or every * step_s <= STOP_CHECK_SECONDS      # a stop waits no longer than that
    assert every == 10 or (every + 1) * step_s > STOP_CHECK_SECONDS  # and votes no more often than needed


def test_collective_timeout_is_read_from_the_environment_and_a_bad_value_is_one_line(monkeypatch):
    monkeypatch.delenv(launch.TIMEOUT_VAR, raising=False)
    assert launch.collective_timeout() == launch.DEFAULT_TIMEOUT_S < 30 * 60
    monkeypatch.setenv(launch.TIMEOUT_VAR, "20")
    assert launch.collective_timeout() == 20
    for bad in ("0", "soon", "-5"):
        monkeypatch.setenv(launch.TIMEOUT_VAR, bad)
        with pytest.raises(LaunchError, match=launch.TIMEOUT_VAR):
            launch.collective_timeout()


def test_a_gloo_timeout_is_recognised_and_a_lost_peer_is_not():
    gloo = RuntimeError("[../gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms for recv operation")
    assert launch.is_timeout(gloo)
    assert not launch.is_timeout(RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer"))


def test_the_roll_call_names_the_rank_that_did_not_report():
    """Ranks 0 and 2 of 3 report from threads, each with its own client; rank 1 is silent."""
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                           timeout=datetime.timedelta(seconds=10))
    out = {}

    def rank(r):
        client = dist.TCPStore("127.0.0.1", server.port, is_master=False, timeout=datetime.timedelta(seconds=10))
        out[r] = launch.roll_call(client, r, 3, wait_s=3.0)
    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == {0: [1], 2: [1]}
    line = launch.unanswered_line(out[0], 20, "runs/x/checkpoint.pt")
    assert "rank(s) 1 did not answer for 20 s" in line and "runs/x/checkpoint.pt" in line and "\n" not in line
