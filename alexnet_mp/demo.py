"""The demo: the built-in procedural set, trained with a short preset, ten-crop evaluated, drawn.

Everything here is the library's own training, evaluation and figures, given
config objects; tools/demo.py parses its few flags and calls `run_demo`.
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
from alexnet_mp.checkpoint import load, model_config
from alexnet_mp.train.loop import Options, train

# (field, value, paper's value, why): printed at start and listed in the README.
DEMO_PRESET = (
    ("batch_size", 32, "128", "4x more updates fit in a CPU budget of minutes"),
    ("epochs", 8, "90", "the demo set is learnt in a few epochs"),
    ("lr_steps", (6,), "plateau, patience 5", "8 epochs leave no room to wait for a plateau"),
)


@dataclass(frozen=True)
class DemoOptions:
    output_dir: str = "runs/demo"
    cache_dir: str = None          # where the demo set is generated (default: ~/.cache/alexnet_mp)
    workers: int = 0
    epochs: int = None             # the preset's, unless given (a quicker smoke run)


def demo_config(opts):
    cfg = replace(TrainConfig(), **{name: value for name, value, _, _ in DEMO_PRESET})
    return replace(cfg, epochs=opts.epochs) if opts.epochs else cfg


def run_demo(opts, log=print):
    """Train (resuming a demo already in the folder), evaluate with ten crops, draw; returns the store used."""
    start = time.time()
    log("demo preset, departures from the paper's recipe (§5):")
    for name, value, paper, why in DEMO_PRESET:
        log(f"  {name} {value} (paper: {paper}): {why}")
    store = demo_store(opts.cache_dir, log)
    train(Options(data_path=store, output_dir=opts.output_dir, workers=opts.workers, resume="auto",
                  checkpoint_minutes=0, print_freq=10), demo_config(opts), log)
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
