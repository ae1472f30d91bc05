"""How long a study will take, for `tools/study.py --dry-run`.

Nothing here is a constant from another machine: each distinct network of the
plan is built and timed here and now (one training step and one evaluation
forward after a warm-up, on the device training would use), and the checkpoint
write is timed once; the budget and the store's size scale those up.
"""
import os
import tempfile
import time
from dataclasses import replace

import torch

from alexnet_mp.bench.timing import make_batch, timed
from alexnet_mp.data import demo_set
from alexnet_mp.data.store import Store
from alexnet_mp.data.storecheck import read_classes
from alexnet_mp.model.net import AlexNet
from alexnet_mp.study.variants import PAPER
from alexnet_mp.train.optim import PaperSGD, param_groups
from alexnet_mp.train.step import train_step

TEN = 10                  # §4.1: ten crops per test image
DEMO_PREPARE_S = 60       # generating and preparing the demo set once: measured on the 2-core machine


def time_network(config, batch, num_classes, device, repeats=3):
    """(seconds to build, seconds per training step of `batch`, seconds per evaluated image)."""
    t = time.perf_counter()
    model = AlexNet(num_classes, seed=0, config=config, device=device)
    build = time.perf_counter() - t
    optimizer = PaperSGD(param_groups(model, 5e-4), lr=1e-9)
    x, y = make_batch(batch, device, classes=num_classes, crop=config.crop)

    def step():
        train_step(model.train(), optimizer, x, y)

    @torch.no_grad()
    def forward():
        model.eval()(x)
    # The median of the calls after a warm-up, not the fastest: training itself runs at the
    # machine's ordinary pace (the fastest call planned the demo 10% short, measured 2026-12-02).
    (step_s, _, _), (forward_s, _, _) = timed([step, forward], repeats=repeats)
    return build, step_s, forward_s / batch


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
    classes = len(demo_set.SHAPES)
    return demo_set.TRAIN_PER_CLASS * classes, demo_set.VAL_PER_CLASS * classes, classes, True


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


def estimate(plan, todo, say):
    """Print the time the runs still to do (`todo`: (variant, seed) pairs) will take, timed here now."""
    n_train, n_val, classes, make = store_size(plan.store)
    device = device_for(plan.devices)
    batch = plan.budget.batch_size
    say(f"timing one training step and one evaluation forward per network here ({device}, "
        f"{torch.get_num_threads()} threads; batch {batch}, {classes} classes)...")
    timings, rows = {}, {}

    def model_of(variant):
        return replace(variant.config(PAPER).model, num_classes=classes)
    if todo:       # the process's first network runs slower (allocator, thread pool): time it once unseen
        time_network(model_of(todo[0][0]), batch, classes, device)
    for variant, _ in todo:
        cfg = model_of(variant)
        key = (cfg.columns, cfg.lrn, cfg.pool_size, cfg.pool_stride, cfg.batch_norm, cfg.head)
        if key not in timings:
            timings[key] = time_network(cfg, batch, classes, device)
        rows.setdefault(variant.name, [0, key])[0] += 1
    folder = os.path.abspath(plan.output_dir)
    while not os.path.isdir(folder):         # the disk it will write to; a dry run makes no folder
        folder = os.path.dirname(folder)
    save_s = time_save(classes, folder) if todo else 0.0
    total = DEMO_PREPARE_S if make else 0.0
    say(f"{'variant':<12} {'runs':>4} {'train/run':>10} {'eval/run':>9}")
    budget = plan.budget.as_dict()
    for name, (count, key) in rows.items():
        train_s, eval_s = run_seconds(budget, n_train, n_val, timings[key], save_s)
        total += count * (train_s + eval_s)
        say(f"{name:<12} {count:>4} {train_s / 60:>8.1f} m {eval_s / 60:>7.1f} m")
    say(f"estimated {total / 60:.0f} min for {len(todo)} run(s) on {n_train} training and {n_val} validation "
        f"images" + (f" (including about {DEMO_PREPARE_S} s to make the demo set)" if make else "")
        + "; timed under the machine's load of the moment, with data loading on top")
    return total


def device_for(devices):
    if devices:
        return torch.device(devices.split(",")[0].strip())
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
