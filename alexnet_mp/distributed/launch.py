"""Where this process sits in a launch, and what it may run on.

Discovery (torchrun's environment, which GPU a rank may use, one backend for the
whole job, the placement one process can host) comes first; `Run` then joins the
process group and says where this rank sits: placement, rank, replica, column,
and whether it is the rank that speaks and writes files.
"""
import datetime
import itertools
import os
import secrets
import socket
import sys
import time

import torch
import torch.distributed as dist

from alexnet_mp.config import check_placement, grouped_only
from alexnet_mp.errors import LaunchError
from alexnet_mp.distributed.parallel import Topology, check_world
from alexnet_mp.distributed.slurm import adopt_srun_step, cpus_per_rank
from alexnet_mp.distributed.placement import one_device
from alexnet_mp.model.arch import COLUMNS


def free_port(host="127.0.0.1"):
    """A TCP port free on `host` now (for a process group on one machine: tests, benchmarks)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def torchrun_env():
    """(rank, world size, local rank) from torchrun's environment, or None outside torchrun.
    An srun step of several tasks counts as torchrun: its variables are exported as
    torchrun's first (`alexnet_mp.distributed.slurm`)."""
    adopt_srun_step()
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
        raise LaunchError(f"{reason}, so NCCL cannot run: launch at most one rank per GPU "
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
        raise LaunchError(f"--devices {devices} under torchrun: give 'cuda' (one GPU per rank, NCCL) "
                         f"or 'cpu' (gloo); each rank takes its own GPU")
    return kinds.pop()


def choose_placement(devices=None, cuda_count=None, warn=print, model=None, device=None):
    """Pick what can run in one process: ("two-device"|"grouped", [device names]).

    Requested placements that cannot be hosted fall back to the nearest one that
    can, with a one-line warning, instead of crashing. A network that runs grouped
    only (`model`: the one-column net, or an LRN across the columns) gets the
    grouped placement, and is refused in another one asked for. `device` (--device)
    asks for the grouped placement on that one device.
    """
    n = torch.cuda.device_count() if cuda_count is None else cuda_count
    if device is not None:
        return "grouped", [one_device(device, warn, n)]
    if model is not None and grouped_only(model):
        check_placement(model.columns, "two-device" if devices else "grouped", model.lrn_across_columns)
        return "grouped", ["cuda:0" if n else "cpu"]
    if devices:
        wanted = [d.strip() for d in devices.split(",") if d.strip()]
        missing = [d for d in wanted if d.startswith("cuda") and
                   (n == 0 or int((d.split(":") + ["0"])[1]) >= n)]
        if len(wanted) == COLUMNS and not missing:
            return "two-device", wanted
        reason = (f"{', '.join(missing)} not available ({n} GPU(s) visible)" if missing
                  else f"--devices needs exactly {COLUMNS} devices, got {len(wanted)}")
        fallback = choose_placement(cuda_count=n, warn=warn)
        warn(f"warning: {reason}: falling back to the {fallback[0]} placement on {fallback[1][0]}")
        return fallback
    if n >= 2:
        return "two-device", ["cuda:0", "cuda:1"]
    return "grouped", ["cuda:0" if n == 1 else "cpu"]


ATTEMPT_KEY = "alexnet_mp/attempt_store"
_INITS = itertools.count()     # process groups initialised in this process (tools/study.py runs several)


def attempt_store(shared, rank, run_index=0, deadline_s=600.0):
    """A store of this launch attempt's own, for every key the ranks exchange.

    After `torchrun --max-restarts` brings the workers back, the launcher's store still
    holds the dead workers' keys (their gloo and NCCL addresses), and nothing torchrun
    tells a worker names the attempt alike on every node: TORCHELASTIC_RESTART_COUNT
    counts the restarts of the node's own agent after its own worker failed, and stays
    put on a node restarted because another node's worker failed. So rank 0 serves a
    fresh store and publishes its port with a random tag; the others connect to the
    published port, retrying while it is a dead attempt's (whose server is gone).
    Rank 0 runs on the host the launcher names in MASTER_ADDR. `run_index` counts the
    runs of this process (tools/study.py trains several): each publishes under its own key.
    """
    key = f"{ATTEMPT_KEY}/run{run_index}"
    host = os.environ.get("MASTER_ADDR", "127.0.0.1")
    if rank == 0:
        store = dist.TCPStore(host, 0, is_master=True, wait_for_workers=False,
                              timeout=datetime.timedelta(minutes=30))
        tag = secrets.token_hex(8)
        store.set("tag", tag)
        shared.set(key, f"{store.port}:{tag}")
        return store
    give_up = time.time() + deadline_s
    while True:
        port, tag = shared.get(key).decode().split(":")
        if _listening(host, int(port)):      # a plain socket first: TCPStore logs every failed try
            try:
                store = dist.TCPStore(host, int(port), is_master=False, timeout=datetime.timedelta(seconds=10))
                if store.get("tag").decode() == tag:
                    store.set_timeout(datetime.timedelta(minutes=30))
                    return store
            except (RuntimeError, TimeoutError, ValueError):     # DistNetworkError/DistStoreError are RuntimeErrors
                pass
        if time.time() > give_up:
            raise LaunchError(f"rank {rank} found no store of this attempt's rank 0 at {host}:{port} in "
                                f"{deadline_s:.0f} s: check that MASTER_ADDR ({host}) reaches rank 0's host")
        time.sleep(0.2)


def _listening(host, port):
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


TIMEOUT_VAR = "ALEXNET_MP_COLLECTIVE_TIMEOUT"
DEFAULT_TIMEOUT_S = 300     # torch's own: 30 min (gloo), 10 min (NCCL)


def collective_timeout():
    """Seconds a collective or a store wait may take before the job ends (ALEXNET_MP_COLLECTIVE_TIMEOUT).

    300 s: longer than anything a healthy rank waits for (rank 0 writing two 0.5 GB
    checkpoints to a slow shared disk, a validation pass out of step), far shorter
    than torch's defaults."""
    value = os.environ.get(TIMEOUT_VAR, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise LaunchError(f"{TIMEOUT_VAR}={value}: give the seconds a rank may go without answering, "
                          f"e.g. {DEFAULT_TIMEOUT_S}")
    return seconds


def is_timeout(error):
    """A collective or store wait that ran out of time (gloo's, the store's, NCCL's words for it)."""
    text = str(error).lower()
    return isinstance(error, (RuntimeError, TimeoutError)) and ("timed out" in text or "timeout" in text)


def roll_call(store, rank, world, wait_s):
    """The ranks that did not answer: every rank whose collective timed out reports in the
    store; a stalled rank does not. The ranks report within about one step of each other
    (they wait on one another), so the call waits up to `wait_s` for the rest. A store that
    does not answer means its server, rank 0, is the one."""
    store.set_timeout(datetime.timedelta(seconds=max(1.0, min(wait_s, 10.0))))
    keys = [f"alexnet_mp/roll_call/{r}" for r in range(world)]
    try:
        store.set(keys[rank], "here")
        deadline = time.time() + wait_s
        while True:
            silent = [r for r in range(world) if r != rank and not store.check([keys[r]])]
            if not silent or time.time() > deadline:
                return silent
            time.sleep(0.2)
    except (RuntimeError, TimeoutError):      # the store's server is rank 0's
        return [0]


def unanswered_line(silent, timeout_s, ckpt):
    """The one line a rank that timed out reports: who did not answer, what is intact, what next."""
    who = f"rank(s) {_ranks(silent)}" if silent else "another rank"
    return (f"{who} did not answer for {timeout_s:.0f} s ({TIMEOUT_VAR}; a stalled node, a hung file system?): "
            f"the job ends; the last checkpoint ({ckpt}) is intact: continue with --resume auto "
            f"(torchrun --max-restarts, or the SLURM requeue, does it)")


class Run:
    """Where this process sits: placement, rank, replica, and whether it speaks."""

    def __init__(self, devices=None, log=print, model=None, device=None):
        """`model`: the ModelConfig of the network to place (a grouped-only one is placed grouped);
        `device` (--device): the grouped placement on it, or under torchrun each rank's kind of device."""
        env = torchrun_env()
        self.rank, self.world, local_rank = env or (0, 1, 0)
        self.distributed = env is not None
        self.main = self.rank == 0
        self.log = log if self.main else (lambda *a, **k: None)
        backend, self.topology = None, None
        if self.distributed:
            check_world(self.world)
            if model is not None:
                check_placement(model.columns, "rank", model.lrn_across_columns)
            backend = self._join(devices or device, local_rank)
            # the pair and same-column groups, made once per job, with the world's timeout
            self.topology = Topology(datetime.timedelta(seconds=self.timeout_s))
        else:
            self.placement, self.devices = choose_placement(devices, warn=self.log, model=model, device=device)
        self.replicas = self.world // COLUMNS if self.distributed else 1
        self.replica = self.rank // COLUMNS if self.distributed else 0
        self.column = self.rank % COLUMNS if self.distributed else 0
        where = ", ".join(self.devices) if self.placement != "rank" else \
            f"{self.world} processes ({self.replicas} replica(s) x 2 columns, {backend})"
        self.log(f"placement: {self.placement} on {where}")

    def _join(self, devices, local_rank):
        """Rendezvous, agree on one backend for every rank, and start the process group."""
        wanted = torchrun_wanted(devices)
        store, rank, world = next(dist.rendezvous("env://"))
        store = attempt_store(store, rank, next(_INITS))
        gpu = None if wanted == "cpu" else local_gpu(local_rank, torch.cuda.device_count())
        backend, warning = job_backend(share_identities(store, rank, world, gpu_identity(gpu)), wanted)
        if warning:
            self.log(warning)
        self.placement, self.devices = "rank", [f"cuda:{gpu}" if backend == "nccl" else "cpu"]
        if backend == "nccl":
            torch.cuda.set_device(self.devices[0])
        # Every rank has joined: from here a wait longer than this means a rank stopped answering.
        self.timeout_s, self.store = collective_timeout(), store
        store.set_timeout(datetime.timedelta(seconds=self.timeout_s))
        dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=self.timeout_s))
        if backend == "gloo":
            torch.set_num_threads(cpus_per_rank(os.environ, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        return backend

    @property
    def device(self):
        return torch.device(self.devices[0])

    def all_sum(self, values):
        """Sum a list of floats over all processes (identity in one process)."""
        t = torch.tensor(values, dtype=torch.float64)
        if self.distributed:
            t = t.to(self.device) if self.device.type == "cuda" else t
            dist.all_reduce(t)
        return t.cpu().tolist()

    def gather_to_main(self, obj):
        """Every rank's `obj`, in rank order, on rank 0; None on the other ranks."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world if self.main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def unanswered(self, error, ckpt):
        """A LaunchError naming the rank(s) that did not answer, from a timed-out collective.
        Rank 0 reports it (the tool's one line); where rank 0 is the silent one, the lowest
        rank that answered prints it instead."""
        silent = roll_call(self.store, self.rank, self.world, min(30.0, self.timeout_s / 2))
        line = unanswered_line(silent, self.timeout_s, ckpt)
        if self.rank != 0 and self.rank == min(set(range(self.world)) - set(silent)):
            print(f"error: {line}", file=sys.stderr, flush=True)
        return LaunchError(line)

    def close(self):
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
