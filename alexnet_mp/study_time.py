"""How long a study will take, for `tools/study.py --dry-run`.

Nothing here is a constant from another machine: each distinct network of the
plan is built and timed here and now (one training step and one evaluation
forward after a warm-up, on the device training would use), and the checkpoint
write is timed once; the budget and the store's size scale those up.
"""
import os
import tempfile
import time

import torch
from torch.nn import functional as F

from . import demo_data
from .data import Store, read_classes
from .model import AlexNet
from .optim import PaperSGD, param_groups

TEN = 10                  # §4.1: ten crops per test image
DEMO_PREPARE_S = 60       # generating and preparing the demo set once: measured on the 2-core machine


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats=2):
    """The fastest of `repeats` calls after a warm-up call (first-call allocations, kernel
    selection): on a shared machine the fastest is the least disturbed."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def time_network(config, batch, num_classes, device):
    """(seconds to build, seconds per training step of `batch`, seconds per evaluated image)."""
    t = time.perf_counter()
    model = AlexNet(num_classes, seed=0, config=config, device=device)
    build = time.perf_counter() - t
    optimizer = PaperSGD(param_groups(model, 5e-4), lr=1e-9)
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(batch, 3, config.crop, config.crop, generator=gen) * 60).to(device)
    y = torch.randint(0, num_classes, (batch,), generator=gen).to(device)

    def step():
        loss = F.cross_entropy(model.train()(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def forward():
        model.eval()(x)
    return build, _timed(step, device), _timed(forward, device) / batch


def time_save(num_classes, folder):
    """Seconds to write one training checkpoint (weights and velocity: twice the weights)."""
    state = AlexNet(num_classes, init=False).state_dict()
    with tempfile.TemporaryDirectory(dir=folder) as d:
        t = time.perf_counter()
        torch.save(state, os.path.join(d, "w.pt"))
        return 2 * (time.perf_counter() - t)


def store_size(store):
    """(training images, validation images, classes, whether the store must first be made)."""
    if os.path.isfile(os.path.join(store, "train", "stats.npz")):
        return len(Store(store, "train")), len(Store(store, "val")), len(read_classes(store)["classes"]), False
    classes = len(demo_data.SHAPES)
    return demo_data.TRAIN_PER_CLASS * classes, demo_data.VAL_PER_CLASS * classes, classes, True


def run_seconds(budget, n_train, n_val, timing, save_s):
    """(training, evaluation) seconds of one run: its steps, a centre-crop validation and a
    checkpoint per epoch, then the ten-crop test."""
    build, step_s, image_s = timing
    per_epoch = n_train // budget["batch_size"]
    steps = budget["epochs"] * per_epoch
    epochs = budget["epochs"]
    if budget["stop_at_step"]:
        steps = min(steps, budget["stop_at_step"])
        epochs = steps // max(per_epoch, 1)
    train_s = build + steps * step_s + epochs * (n_val * image_s + save_s) + save_s
    return train_s, build + TEN * n_val * image_s


def device_for(devices):
    if devices:
        return torch.device(devices.split(",")[0].strip())
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
