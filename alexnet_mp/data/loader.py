"""Batches for training and evaluation: a resumable sampler, and workers that leave
the stop signals to the main process."""
import signal

import torch

from alexnet_mp.config import CROP
from alexnet_mp.data.store import Store, StoreDataset
from alexnet_mp.data.storecheck import read_stats
from alexnet_mp.data.transforms import EvalTransform, TrainTransform


class EpochSampler(torch.utils.data.Sampler):
    """This replica's share of an epoch, resumable part-way through.

    Training (shuffle=True): a permutation drawn from (seed, epoch), cut into
    global batches of `replicas * batch_size`; replica r takes the r-th slice of
    each. So R replicas at batch b see, step for step, exactly the images one
    process sees at batch R*b, and every replica runs the same number of steps
    (gradient averaging needs that). The tail that fills no global batch is
    left out of the epoch.
    Evaluation (shuffle=False): contiguous, uneven shards; every image exactly once.
    `start` skips the samples an interrupted run already consumed.
    """

    def __init__(self, size, replicas=1, replica=0, shuffle=True, seed=0, batch_size=1):
        self.size, self.replicas, self.replica = size, replicas, replica
        self.shuffle, self.seed, self.batch_size = shuffle, seed, batch_size
        self.epoch, self.start = 0, 0

    def indices(self):
        if not self.shuffle:
            lo, hi = self.replica * self.size // self.replicas, (self.replica + 1) * self.size // self.replicas
            return list(range(lo, hi))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        b, per_step = self.batch_size, self.batch_size * self.replicas
        return [i for s in range(0, self.size - per_step + 1, per_step)
                for i in order[s + self.replica * b:s + (self.replica + 1) * b]]

    def __iter__(self):
        return iter(self.indices()[self.start:])

    def __len__(self):
        return len(self.indices()) - self.start

    def state_dict(self):
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state):
        self.epoch, self.start, self.seed = state["epoch"], state["start"], state["seed"]


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _worker_init(worker_id):
    """DataLoader workers leave SIGTERM and SIGINT to the main process, which stops at
    its next log step and checkpoints: a scheduler's `kill -- -PGID` or a Ctrl-C reaches every
    process in the group, and a worker dying of it would abort the main process first."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)      # also drops one that arrived while blocked
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class Loader(torch.utils.data.DataLoader):
    """A DataLoader whose workers start with SIGTERM and SIGINT blocked until `_worker_init`
    ignores them: no moment exists in which a worker can still die of one."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, worker_init_fn=_worker_init, **kwargs)

    def __iter__(self):
        if not self.num_workers:
            return super().__iter__()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)   # a fork inherits the mask
        try:
            return super().__iter__()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)   # one that came meanwhile is delivered now


def pins_memory(device):
    """Whether batches bound for `device` go through page-locked memory: only for CUDA, whose copy
    engine reads it while the GPU computes (non_blocking). The CPU needs no copy, and Apple's GPU
    (MPS) shares the CPU's memory; torch's pinning is CUDA's."""
    return torch.device(device).type == "cuda"


def train_loader(store_root, batch_size, workers, seed=0, replicas=1, replica=0, pca_std=0.1, input_scale="raw",
                 pin_memory=False, crop=CROP):
    """`crop`: the model config's (224 for the paper's net, 227 for Caffe's bvlc_alexnet)."""
    store = Store(store_root, "train")
    mean, eigval, eigvec = read_stats(store_root)
    transform = TrainTransform(mean, eigval, eigvec, seed, pca_std, input_scale, crop=crop)
    sampler = EpochSampler(len(store), replicas, replica, shuffle=True, seed=seed, batch_size=batch_size)
    # Its own generator, so that starting an epoch never draws from torch's global
    # RNG (dropout's stream): a resumed run then reproduces an uninterrupted one.
    loader = Loader(StoreDataset(store, transform), batch_size=batch_size,
                    sampler=sampler, num_workers=workers, drop_last=True,
                    pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed))
    return loader, sampler, transform


def eval_loader(store_root, split, batch_size, workers, crops=1, replicas=1, replica=0, input_scale="raw",
                pin_memory=False, crop=CROP):
    """Batches of (crops, label) in dataset order; pin_memory only for a CUDA consumer; `crop`: the
    model config's."""
    store = Store(store_root, split)
    mean, _, _ = read_stats(store_root)
    sampler = EpochSampler(len(store), replicas, replica, shuffle=False)
    loader = Loader(StoreDataset(store, EvalTransform(mean, crops, input_scale, crop=crop)), batch_size=batch_size,
                    sampler=sampler, num_workers=workers, pin_memory=pin_memory, generator=torch.Generator())
    return loader, sampler
