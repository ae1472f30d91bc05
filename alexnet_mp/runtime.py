"""Where this process sits in a launch: placement, rank, replica, and who speaks."""
import os

import torch
import torch.distributed as dist

from .errors import UsageError
from .placement import choose_placement, torchrun_env


class TrainingError(UsageError):
    """A problem that stops training, worded as one line with its fix."""


class Run:
    """Where this process sits: placement, rank, replica, and whether it speaks."""

    def __init__(self, devices=None, log=print):
        env = torchrun_env()
        self.rank, self.world, local_rank = env or (0, 1, 0)
        self.distributed = env is not None
        self.main = self.rank == 0
        self.log = log if self.main else (lambda *a, **k: None)
        if self.distributed and self.world % 2:
            raise TrainingError(f"world size {self.world} is not a multiple of 2: the two columns need "
                                f"2 ranks per replica (use --nproc_per_node=2, or an even total)")
        self.placement, self.devices, backend = choose_placement(devices, self.distributed, local_rank,
                                                                 warn=self.log)
        if self.distributed:
            if backend == "nccl":
                torch.cuda.set_device(self.devices[0])
            # Keys under this restart's own prefix: after `torchrun --max-restarts` brings
            # the workers back, they must not read the dead workers' addresses.
            store, rank, world = next(dist.rendezvous("env://"))
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            dist.init_process_group(backend, store=dist.PrefixStore(f"alexnet_mp/attempt{attempt}", store),
                                    rank=rank, world_size=world)
            local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            if self.devices[0] == "cpu":
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
        self.replicas = self.world // 2 if self.distributed else 1
        self.replica = self.rank // 2 if self.distributed else 0
        self.column = self.rank % 2 if self.distributed else 0
        where = ", ".join(self.devices) if self.placement != "rank" else \
            f"{self.world} processes ({self.replicas} replica(s) x 2 columns, {backend})"
        self.log(f"placement: {self.placement} on {where}")

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

    def close(self):
        lock = getattr(self, "output_lock", None)       # set by the training pre-flight (rank 0)
        if lock is not None:
            lock.release()
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
