"""Where this process sits in a launch: placement, rank, replica, and who speaks."""
import datetime
import itertools
import os
import secrets
import socket
import time

import torch
import torch.distributed as dist

from .config import check_placement
from .errors import UsageError
from .exchange import COLUMNS
from .parallel import Topology
from .placement import (choose_placement, gpu_identity, job_backend, local_gpu, share_identities, torchrun_env,
                        torchrun_wanted)


class TrainingError(UsageError):
    """A problem that stops training, worded as one line with its fix."""


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
            raise TrainingError(f"rank {rank} found no store of this attempt's rank 0 at {host}:{port} in "
                                f"{deadline_s:.0f} s: check that MASTER_ADDR ({host}) reaches rank 0's host")
        time.sleep(0.2)


def _listening(host, port):
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


class Run:
    """Where this process sits: placement, rank, replica, and whether it speaks."""

    def __init__(self, devices=None, log=print, columns=None):
        env = torchrun_env()
        self.rank, self.world, local_rank = env or (0, 1, 0)
        self.distributed = env is not None
        self.main = self.rank == 0
        self.log = log if self.main else (lambda *a, **k: None)
        if self.distributed and self.world % COLUMNS:
            raise TrainingError(f"world size {self.world} is not a multiple of 2: the two columns need "
                                f"2 ranks per replica (use --nproc_per_node=2, or an even total)")
        backend, self.topology = None, None
        if self.distributed:
            check_placement(columns or COLUMNS, "rank")
            backend = self._join(devices, local_rank)
            self.topology = Topology()       # the pair and same-column groups, made once per job
        else:
            self.placement, self.devices, _ = choose_placement(devices, warn=self.log, columns=columns)
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
        dist.init_process_group(backend, store=store, rank=rank, world_size=world)
        if backend == "gloo":
            local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
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

    def close(self):
        lock = getattr(self, "output_lock", None)       # set by the training pre-flight (rank 0)
        if lock is not None:
            lock.release()
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
