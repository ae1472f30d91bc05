"""The demo: the built-in procedural set, trained with a short preset, ten-crop evaluated, drawn.

Everything here is the library's own training, evaluation and figures, given
config objects; tools/demo.py parses its few flags and calls `run_demo`.

The preset is 6 epochs at batch 16. Before training, the demo times one
training step and one evaluation forward on this machine
(`alexnet_mp.study.estimate`, as the study's --dry-run does) and, where the
preset would not fit its time budget (10 minutes by default), trains fewer
epochs, keeping the lr drop after the first third of them; it prints the plan
and what it gives up.
"""
import importlib.util
import os
import time
from dataclasses import dataclass, replace

from alexnet_mp.config import TrainConfig
from alexnet_mp.data.demo_set import demo_store
from alexnet_mp.distributed.launch import Run
from alexnet_mp.eval.run import EvalOptions, evaluate, table
from alexnet_mp.eval.visualize import run_figures
from alexnet_mp.files import write_json
from alexnet_mp.study.estimate import device_for, run_seconds, store_size, time_network, time_save
from alexnet_mp.checkpoint import load, model_config
from alexnet_mp.train.loop import Options, train

# (field, value, paper's value, why): printed at start and listed in the README.
DEMO_PRESET = (
    ("batch_size", 16, "128", "8x more updates from the images a CPU budget of minutes can see"),
    ("lr", 0.005, "0.01", "at batch 16 or 32 the paper's 0.01 overshoots: 43.5% error after 4 epochs at batch 32, "
                          "11% at 0.005"),
    ("epochs", 6, "90", "the demo set is learnt in a few epochs"),
    ("lr_steps", (2,), "plateau, patience 5", "a fixed drop after the first third: 3 epochs gave 12% error "
                                              "dropping after 1, 16.5% after 2"),
)


# Training and evaluation run this much slower than their steps timed bare: data workers share
# the cores, and log steps read figures. Measured 2026-12-02 on the 2-core machine: 0.69 s a step
# in the loop against 0.56 to 0.65 s timed (batch 16). Slowed to torchvision's 13 img/s, the
# demo took 588 s against a plan of 564 s that scaled the training alone.
LOOP_OVERHEAD = 1.15


@dataclass(frozen=True)
class DemoOptions:
    output_dir: str = "runs/demo"
    cache_dir: str = None          # where the demo set is generated (default: ~/.cache/alexnet_mp)
    workers: int = 0
    epochs: int = None             # the preset's, unless given (a quicker smoke run); then no budget
    budget_minutes: float = 10.0   # wall time the demo sizes itself to (0: the whole preset)


def first_third(epochs):
    """The epoch after which the preset's lr drop comes: a third of the way, at least after the first."""
    return max(1, round(epochs / 3))


def demo_config(opts, epochs=None):
    """The preset, with `epochs` (or --epochs) in place of its 6 and the lr drop after the first third."""
    cfg = replace(TrainConfig(), **{name: value for name, value, _, _ in DEMO_PRESET})
    epochs = opts.epochs or epochs
    if not epochs or epochs == cfg.epochs:
        return cfg
    return replace(cfg, epochs=epochs, lr_steps=(first_third(epochs),) if epochs > 1 else ())


def planned_config(opts):
    """The plan of a demo already in the output folder (it resumes with the epochs it was sized to), or None."""
    path = os.path.join(opts.output_dir, "checkpoint.pt")
    if opts.epochs or not os.path.isfile(path):
        return None
    saved = load(path)
    if not isinstance(saved.get("config"), dict):
        return None
    config = saved["config"]
    if not config.get("epochs"):
        return None
    # The preset's fields as that run had them: a folder of an older preset resumes as it began.
    plan = {name: config[name] for name, _, _, _ in DEMO_PRESET if name in config}
    if "lr_steps" in plan:
        plan["lr_steps"] = tuple(plan["lr_steps"])
    return replace(demo_config(opts), **plan)


def fit_epochs(opts, store, start, log):
    """The most epochs of the preset (at least 1) that fit what is left of the budget begun at `start`
    (time.time()), timed on this machine now."""
    cfg = demo_config(opts)
    if opts.epochs or not opts.budget_minutes:
        return cfg.epochs
    n_train, n_val, classes, _ = store_size(store)
    model, device = replace(cfg.model, num_classes=classes), device_for(None)
    timing = time_network(model, cfg.batch_size, classes, device, repeats=5)
    save_s = time_save(classes, os.path.dirname(os.path.abspath(opts.output_dir)) or ".")
    spent = time.time() - start                        # the timing itself included
    budget = {"batch_size": cfg.batch_size, "stop_at_step": 0}
    one, two = (run_seconds({**budget, "epochs": e}, n_train, n_val, timing, save_s) for e in (1, 2))
    per_epoch = two[0] - one[0] + save_s               # model_best.pt too, after most epochs
    fixed = one[0] - (two[0] - one[0]) + one[1] + n_train * timing[2]    # ten crops; the figures' fc7 pass
    per_epoch, fixed = per_epoch * LOOP_OVERHEAD, fixed * LOOP_OVERHEAD
    fits = max(1, min(cfg.epochs, int((60 * opts.budget_minutes - spent - fixed) // per_epoch)))
    log(f"one training step here runs at {cfg.batch_size / timing[1]:.1f} img/s: the preset's "
        f"{cfg.epochs} epochs would take about {(spent + fixed + cfg.epochs * per_epoch) / 60:.1f} min in all; "
        f"budget {opts.budget_minutes:g} min, plan {(spent + fixed + fits * per_epoch) / 60:.1f} min: " + (
            f"all {fits} epochs" if fits == cfg.epochs else
            f"{fits} epoch(s), lr /10 after epoch {demo_config(opts, fits).lr_steps[0] if fits > 1 else '-'} "
            f"(fewer epochs than the preset: expect a higher error; --budget-minutes 0 runs all {cfg.epochs})"))
    return fits


def run_demo(opts, log=print):
    """Train (resuming a demo already in the folder), evaluate with ten crops, draw; returns the store used."""
    start = time.time()
    log("demo preset, departures from the paper's recipe (§5):")
    for name, value, paper, why in DEMO_PRESET:
        log(f"  {name} {value} (paper: {paper}): {why}")
    store = demo_store(opts.cache_dir, log)
    cfg = planned_config(opts) or demo_config(opts, fit_epochs(opts, store, start, log))
    result = train(Options(data_path=store, output_dir=opts.output_dir, workers=opts.workers, resume="auto",
                           checkpoint_minutes=0, print_freq=10), cfg, log)
    if result.stopped:
        log(f"demo stopped at epoch {result.epoch} step {result.step}: run the same command again to resume it")
        return store
    best = os.path.join(opts.output_dir, "model_best.pt")
    state = load(best)
    run = Run(None, log, model=model_config(state))
    try:
        done = evaluate(EvalOptions(best, store, batch_size=16, workers=opts.workers), run, state)
    finally:
        run.close()
    log(table(done.summary))
    write_json(os.path.join(opts.output_dir, "eval.json"), done.summary)
    if importlib.util.find_spec("matplotlib") is None:
        log("warning: no matplotlib, so no figures: pip install 'alexnet_mp[viz]'")
    else:
        run_figures(opts.output_dir, store, warn=log)
    log(f"demo finished in {time.time() - start:.0f}s; results in {opts.output_dir}")
    return store
