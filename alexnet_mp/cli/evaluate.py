"""Ten-crop evaluation of a checkpoint: the paper's test protocol (§4.1, spec §4).

The code behind tools/evaluate.py, whose docstring has the exact command lines.
"""
import csv
import os
import sys

from alexnet_mp.cli import (ArgumentParser, add_device_flag, add_speed_flags, check_at_least, check_one_placement,
                            check_output_file, tool)
from alexnet_mp.data.store import Store
from alexnet_mp.distributed.launch import Run
from alexnet_mp.eval.run import EvalOptions, evaluate, table
from alexnet_mp.files import atomic_write, write_json
from alexnet_mp.checkpoint import load, model_config

def parse_args(argv):
    p = ArgumentParser(description="Ten-crop evaluation of an alexnet_mp checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-path", required=True, help="prepared store (tools/prepare_data.py)")
    p.add_argument("--split", default="val")
    p.add_argument("--crops", type=int, choices=(1, 10), default=10)
    p.add_argument("--devices", help="two devices for the two-device placement, e.g. cuda:0,cuda:1; under "
                                     "torchrun 'cuda' or 'cpu'")
    add_device_flag(p)
    add_speed_flags(p)
    p.add_argument("-b", "--batch-size", type=int, default=32, help="images per forward (x crops)")
    p.add_argument("-j", "--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--predictions", help="write one CSV row per image: path, true class, top-5, probabilities")
    args = p.parse_args(argv)
    check_at_least(("-b", args.batch_size, 1), ("-j", args.workers, 0))
    check_one_placement(args)
    for flag, path, example in (("--json", args.json, "eval.json"), ("--predictions", args.predictions, "p.csv")):
        if path:
            check_output_file(path, flag, example=example)      # before the evaluation, not after it
    return args


def write_predictions(path, done):
    classes, result = done.classes, done.result

    def write(f):
        w = csv.writer(f)
        k = len(result["top5"][0]) if len(result["top5"]) else min(5, len(classes))   # fewer than 5 classes: k
        w.writerow(["path", "true"] + [f"top{j}" for j in range(1, k + 1)] + [f"prob{j}" for j in range(1, k + 1)])
        for i, label, top, prob in zip(result["index"], result["label"], result["top5"], result["prob5"]):
            w.writerow([done.files[i], classes[label]] + [classes[t] for t in top] + [f"{p:.6f}" for p in prob])
    atomic_write(path, write, "w")


@tool
def main(argv=None):
    args = parse_args(argv)
    Store(args.data_path, args.split)  # the store's checks take milliseconds, the checkpoint's load seconds
    state = load(args.checkpoint)      # its variant decides the placement: the 1-column net is grouped only
    run = Run(args.devices, model=model_config(state), device=args.device)
    opts = EvalOptions(args.checkpoint, args.data_path, args.split, args.crops, args.batch_size, args.workers,
                       args.amp, args.tf32)
    try:
        done = evaluate(opts, run, state)
    finally:
        run.close()
    if run.main:
        print(table(done.summary))
        for path, write in ((args.json, lambda p: write_json(p, done.summary)),
                            (args.predictions, lambda p: write_predictions(p, done))):
            if path:
                write(path)
                print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
