"""SLURM: an srun step as a launcher (fast, pure Python), and the job script on a two-node
cluster on this machine (slow: tools/slurm/local_cluster.sh, root and Debian's slurm-wlm).

The fast tests hold the env parsing to the rules of alexnet_mp/distributed/slurm.py's
docstring, with environments written as SLURM 22.05 sets them (recorded from the local
cluster: a batch shell has no SLURM_STEP_ID; an srun step has SLURM_STEP_ID=0).
The slow tests compare weights against a torchrun run of the same world on one node.
"""
import contextlib
import datetime
import os
import re
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


# (seconds a step takes, steps between votes), worked out by hand from the rule "at most 5 s of
# steps between two stop votes, and never fewer steps than needed, up to --print-freq 10":
# 0.7 s: 7 steps are 4.9 s, 8 would be 5.6 s; 1.7 s: 2 steps are 3.4 s, 3 would be 5.1 s.
VOTES = [(0.01, 10), (0.5, 10), (0.7, 7), (1.7, 2), (2.5, 2), (4.9, 1), (5.0, 1), (60.0, 1)]


@pytest.mark.parametrize("step_s, expected", VOTES)
def test_stop_votes_come_every_print_freq_steps_or_every_stop_check_seconds_of_steps(step_s, expected):
    assert STOP_CHECK_SECONDS == 5.0        # the bound docs/cluster.md states
    assert vote_interval(step_s, 10) == expected


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


# --- the job script on a two-node cluster on this machine (slow) ----------------------------

# lr 0.001 and dropout off, as tests/test_multinode.py; 4 epochs of 10 steps: long enough
# for a 1-minute time limit's warning to land mid-run, a minute or so on a 2-core machine.
FLAGS = ["-b", "4", "--print-freq", "2", "--epochs", "4", "--dropout", "0", "-j", "0", "--lr", "0.001",
         "--checkpoint-minutes", "0", "--seed", "3"]
CLUSTER = os.path.join(ROOT, "tools", "slurm", "local_cluster.sh")
SBATCH = os.path.join(ROOT, "tools", "slurm", "train.sbatch")
STALL_TIMEOUT_S = 20


@pytest.fixture(scope="module")
def cluster():
    """The environment to reach tools/slurm/local_cluster.sh's cluster (started here, stopped
    after, unless it was up already), with one rank per node."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("not root: tools/slurm/local_cluster.sh runs the SLURM daemons as root")
    state = os.environ.get("ALEXNET_MP_SLURM_DIR", "/tmp/alexnet_mp-slurm")     # the script's default
    env = dict(os.environ, ALEXNET_MP_SLURM_DIR=state, SLURM_CONF=os.path.join(state, "slurm.conf"),
               PYTHONPATH=ROOT, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               ALEXNET_MP_NPROC_PER_NODE="1", CUDA_VISIBLE_DEVICES="")
    was_up = os.path.isfile(os.path.join(state, "slurmctld.pid"))
    started = subprocess.run([CLUSTER, "start"], env=env, capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        pytest.skip(f"no local SLURM cluster: {(started.stderr or started.stdout).strip().splitlines()[-1]}")
    yield env
    if not was_up:
        subprocess.run([CLUSTER, "stop"], env=env, capture_output=True, timeout=120)


def torchrun_weights(store, out, flags):
    """The weights of a torchrun run of the same world on one node (2 CPUs: 1 thread a rank, as
    on the cluster's one-CPU nodes)."""
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="", SLURM_CPUS_ON_NODE="2")
    for name in [k for k in env if k.startswith("SLURM_") and k != "SLURM_CPUS_ON_NODE"]:
        del env[name]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "tools/train.py",
                           "--data-path", store, "--output-dir", str(out)] + flags,
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return weights(out)


@pytest.fixture(scope="module")
def reference(tiny_store, tmp_path_factory):
    return torchrun_weights(tiny_store, tmp_path_factory.mktemp("torchrun") / "run", FLAGS)


def weights(out):
    return torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)["model"]


def assert_same_weights(out, ref):
    got = weights(out)
    assert got.keys() == ref.keys()
    for name, tensor in ref.items():
        assert torch.equal(got[name], tensor), name


def sbatch(env, log, *args):
    out = subprocess.run(["sbatch", "--parsable", "--nodes=2", f"--output={log}"] + list(args),
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip().split(";")[0]


def job(env, job_id):
    """(JobState, Restarts) of a job SLURM still remembers (MinJobAge: 10 minutes)."""
    text = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True, text=True,
                          timeout=60).stdout
    fields = dict(re.findall(r"(\w+)=(\S*)", text))
    return fields.get("JobState", "UNKNOWN"), int(fields.get("Restarts", "0"))


def follow(env, job_id, timeout=900, restart_now=True):
    """Wait for the job to end, starting each requeued start at once (skipping SLURM's two
    minutes); returns (final state, restarts)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state, restarts = job(env, job_id)
        if state in ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY"):
            return state, restarts
        if state == "PENDING" and restarts and restart_now:
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=env,
                           capture_output=True, timeout=60)
        time.sleep(1)
    subprocess.run(["scancel", job_id], env=env, timeout=60)
    raise AssertionError(f"job {job_id} still {state} after {timeout} s")


def wait_for_line(log, text, env, job_id, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.isfile(log) and text in open(log, errors="replace").read():
            return
        assert job(env, job_id)[0] in ("PENDING", "RUNNING", "CONFIGURING"), open(log).read()[-3000:]
        time.sleep(0.5)
    raise AssertionError(f"no '{text}' in {log}")


def train_args(store, out, flags=FLAGS):
    return [SBATCH, "--data-path", store, "--output-dir", str(out)] + flags


@pytest.mark.slow
def test_sbatch_with_one_rank_per_node_ends_with_the_weights_of_torchrun_on_one_node(cluster, reference,
                                                                                     tiny_store, tmp_path):
    log, out = str(tmp_path / "job.log"), tmp_path / "run"
    job_id = sbatch(cluster, log, *train_args(tiny_store, out))
    assert follow(cluster, job_id) == ("COMPLETED", 0), open(log).read()[-3000:]
    assert "placement: rank on 2 processes (1 replica(s) x 2 columns, gloo)" in open(log).read()
    assert_same_weights(out, reference)


@pytest.mark.slow
def test_a_job_requeued_mid_epoch_resumes_and_ends_with_the_same_weights(cluster, reference, tiny_store, tmp_path):
    log, out = str(tmp_path / "job.log"), tmp_path / "run"
    job_id = sbatch(cluster, log, *train_args(tiny_store, out))
    wait_for_line(log, "Epoch: [1]  [ 4/10]", cluster, job_id)
    subprocess.run(["scontrol", "requeue", job_id], env=cluster, check=True, timeout=60)
    state, restarts = follow(cluster, job_id)
    text = open(log).read()
    assert (state, restarts) == ("COMPLETED", 1), text[-3000:]
    assert re.search(rf"resumed from {re.escape(str(out / 'checkpoint.pt'))}: epoch 1, step 1\d", text), text[-3000:]
    assert_same_weights(out, reference)


@pytest.mark.slow
def test_a_one_minute_time_limit_checkpoints_on_the_warning_and_the_script_requeues_to_the_same_weights(
        cluster, tiny_store, tmp_path):
    """SLURM checks time limits every 30 s and warns at the first check at most 50 s before the
    limit (USR1@20 plus 30 s): 10 to 40 s into each start here, leaving 20 s or more to stop
    and requeue. A warning during python's start-up is requeued without a checkpoint. 12
    epochs: longer than one start, also on a machine some times faster than 2 cores."""
    flags = FLAGS[:FLAGS.index("--epochs") + 1] + ["12"] + FLAGS[FLAGS.index("--epochs") + 2:]
    log, out = str(tmp_path / "job.log"), tmp_path / "run"
    job_id = sbatch(cluster, log, "--time=1", "--signal=B:USR1@20", *train_args(tiny_store, out, flags))
    state, restarts = follow(cluster, job_id, timeout=1500)
    text = open(log).read()
    assert state == "COMPLETED" and restarts >= 1, text[-3000:]
    assert "DUE TO TIME LIMIT" not in text and text.count("requeueing") == restarts, text[-3000:]
    assert "stopped by signal" in text and not os.path.exists(out / STOPPED_MARKER)
    assert_same_weights(out, torchrun_weights(tiny_store, tmp_path / "torchrun", flags))


@pytest.mark.slow
def test_srun_python_on_two_nodes_is_one_job_of_two_ranks_with_torchruns_weights(cluster, reference,
                                                                                 tiny_store, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(["srun", "--nodes=2", "--ntasks=2", "--kill-on-bad-exit=1", sys.executable,
                           "tools/train.py", "--data-path", tiny_store, "--output-dir", str(out)] + FLAGS,
                          cwd=ROOT, env=cluster, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("placement: rank on 2 processes") == 1       # rank 0 speaks, once
    assert_same_weights(out, reference)


def workers(out, rank):
    """Pids of the training processes of `out` with this RANK (the cluster's nodes are this machine)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"tools/train.py" in cmd and str(out).encode() in cmd and f"RANK={rank}".encode() in env:
            found.append(int(pid))
    return found


@pytest.mark.slow
def test_a_stopped_rank_ends_the_job_within_the_timeout_with_one_line_naming_it(cluster, tiny_store, tmp_path):
    log, out = str(tmp_path / "job.log"), tmp_path / "run"
    env = dict(cluster, ALEXNET_MP_COLLECTIVE_TIMEOUT=str(STALL_TIMEOUT_S))
    job_id = sbatch(env, log, *train_args(tiny_store, out))
    wait_for_line(log, "Epoch: [1]  [ 2/10]", cluster, job_id)       # the epoch-0 checkpoint is written
    stalled = workers(out, 1)
    assert len(stalled) == 1, stalled
    os.kill(stalled[0], signal.SIGSTOP)
    start = time.time()
    try:
        state, restarts = follow(cluster, job_id, timeout=300, restart_now=False)
        took = time.time() - start
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stalled[0], signal.SIGCONT)
    text = open(log).read()
    assert (state, restarts) == ("FAILED", 0), text[-3000:]
    # the timeout, the roll call's wait (half of it), and SLURM's ending of the job
    assert took < STALL_TIMEOUT_S * 1.5 + 30, took
    lines = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and f"rank(s) 1 did not answer for {STALL_TIMEOUT_S} s" in lines[0], text[-3000:]
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 10)
