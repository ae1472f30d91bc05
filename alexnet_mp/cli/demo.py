"""The demo: train on the built-in procedural dataset, ten-crop evaluate, draw the figures.

The code behind tools/demo.py, whose docstring has the exact command lines.
"""
import os
import sys
import time

from alexnet_mp.cli import ArgumentParser, check_at_least, evaluate, tool, train

# (flag, value, paper's value, why): printed at start and listed in the README.
DEMO_PRESET = (
    ("-b", "32", "128", "4x more updates fit in a CPU budget of minutes"),
    ("--epochs", "8", "90", "the demo set is learnt in a few epochs"),
    ("--lr-steps", "6", "plateau, patience 5", "8 epochs leave no room to wait for a plateau"),
)


def parse_args(argv):
    p = ArgumentParser(description="Train, evaluate and visualise on the built-in demo set")
    p.add_argument("--output-dir", default="runs/demo")
    p.add_argument("--cache-dir", default=None, help="where the demo set is generated (default: ~/.cache/alexnet_mp)")
    p.add_argument("-j", "--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--epochs", help="override the preset's epoch count (a quicker smoke run)")
    args = p.parse_args(argv)
    check_at_least(("-j", args.workers, 0))
    return args


@tool
def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    print("demo preset, departures from the paper's recipe (§5):")
    for flag, value, paper, why in DEMO_PRESET:
        print(f"  {flag} {value:<4} (paper: {paper}): {why}")
    preset = [x for flag, value, _, _ in DEMO_PRESET for x in (flag, value)]
    if args.epochs:
        preset += ["--epochs", args.epochs]
    cache = ["--cache-dir", args.cache_dir] if args.cache_dir else []
    # --resume auto: a second demo into the same folder continues (or re-evaluates) the first.
    train_args = ["--output-dir", args.output_dir, "-j", str(args.workers), "--print-freq", "10",
                  "--checkpoint-minutes", "0", "--resume", "auto"] + cache + preset
    code = train.main(train_args)
    if code:
        return code
    store = train.train_store_path(train_args)
    out = args.output_dir
    code = evaluate.main(["--checkpoint", os.path.join(out, "model_best.pt"), "--data-path", store,
                          "-j", str(args.workers), "-b", "16", "--json", os.path.join(out, "eval.json")])
    if code:
        return code
    try:
        from alexnet_mp.cli import visualize
    except ImportError:
        visualize = None
    if visualize is not None:
        visualize.demo_figures(out, store)
    print(f"demo finished in {time.time() - start:.0f}s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
