"""The benchmark's clock and its inputs: one timer, one batch maker, timed training and evaluation.

Every figure is a ratio measured side by side in one run (the functions take
turns in every repeat), since machines, and one machine from minute to minute,
differ in speed.
"""
import statistics
import time
from dataclasses import dataclass

import torch

from alexnet_mp.config import CROP
from alexnet_mp.numerics import autocast, synchronize
from alexnet_mp.train.step import train_step


@dataclass(frozen=True)
class BenchConfig:
    """How much each section times: batches per timed call, calls per figure."""
    batch_size: int = 32
    steps: int = 2                 # batches per timed call
    repeats: int = 5               # timed calls per figure (the median is reported, with the spread)
    amp: str = None                # --amp bf16: a speed mode, not the paper's float32
    quick: bool = False            # a smoke run: the smallest sizes that still run every code path
    sections: tuple = ()


def all_devices():
    """Every device a timed function may have queued work on (both GPUs of a two-device model)."""
    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def timed(fns, repeats, warmup=1):
    """For each of `fns`, (median, min, max) seconds of a call after `warmup`
    untimed calls. The functions take turns in every repeat, so that the
    machine's drift (this 2-core box varies by 10-20%) lands on all of them alike.
    Every GPU is synchronised before each clock read: otherwise a clock times the
    launches, or the previous function's queued work."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            synchronize(all_devices())
            t = time.perf_counter()
            fn()
            synchronize(all_devices())
            ts.append(time.perf_counter() - t)
    return [(statistics.median(ts), min(ts), max(ts)) for ts in times]


def images_per_s(fns, images, repeats):
    return [tuple(images / t for t in r) for r in timed(fns, repeats)]


def make_batch(b, device, channels_last=False, classes=1000, crop=CROP):
    """A fixed batch of `b` crops at the scale of raw pixels minus the mean (std about 60), and labels."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(b, 3, crop, crop, generator=g) * 60).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, classes, (b,), generator=g).to(device)


def model_steps(model, optimizer, x, y, steps, amp=None):
    """(train, eval) functions that each run `steps` batches: training's own step, and a forward."""
    device = x.device

    def train_steps():
        model.train()
        for _ in range(steps):
            train_step(model, optimizer, x, y, amp)

    @torch.no_grad()
    def eval_steps():
        model.eval()
        for _ in range(steps):
            with autocast(device, amp):
                model(x)
    return train_steps, eval_steps
