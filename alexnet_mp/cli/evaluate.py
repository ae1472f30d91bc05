"""Ten-crop evaluation of a checkpoint: the paper's test protocol (§4.1, spec §4).

The code behind tools/evaluate.py, whose docstring has the exact command lines.
"""
import csv
import json
import os
import sys

from alexnet_mp.atomic import atomic_write
from alexnet_mp.backends import amp_note, configure
from alexnet_mp.cli import ArgumentParser, check_at_least, check_output_file, tool
from alexnet_mp.cli.train import add_speed_flags
from alexnet_mp.data import Store, eval_loader
from alexnet_mp.evaluate import gather, predict, summary
from alexnet_mp.checkpoint import load, model_config
from alexnet_mp.inference import load_for_inference
from alexnet_mp.placement import input_device
from alexnet_mp.runtime import Run

# spec §5: (label, top-1 error %, top-5 error %)
REFERENCE_ROWS = (("paper, 1 CNN, ILSVRC-2012 val, ten-crop", 40.7, 18.2),
                  ("torchvision alexnet, centre crop", 43.5, 20.9))


def parse_args(argv):
    p = ArgumentParser(description="Ten-crop evaluation of an alexnet_mp checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-path", required=True, help="prepared store (tools/prepare_data.py)")
    p.add_argument("--split", default="val")
    p.add_argument("--crops", type=int, choices=(1, 10), default=10)
    p.add_argument("--devices", help="two devices for the two-device placement, e.g. cuda:0,cuda:1; under "
                                     "torchrun 'cuda' or 'cpu'")
    add_speed_flags(p)
    p.add_argument("-b", "--batch-size", type=int, default=32, help="images per forward (x crops)")
    p.add_argument("-j", "--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--predictions", help="write one CSV row per image: path, true class, top-5, probabilities")
    args = p.parse_args(argv)
    check_at_least(("-b", args.batch_size, 1), ("-j", args.workers, 0))
    for flag, path, example in (("--json", args.json, "eval.json"), ("--predictions", args.predictions, "p.csv")):
        if path:
            check_output_file(path, flag, example=example)      # before the evaluation, not after it
    return args


def table(res):
    rows = [("this checkpoint, ten-crop" if res["crops"] == 10 else "this checkpoint, centre crop",
             100 * res["top1_err"], 100 * res["top5_err"])]
    if res["crops"] == 10:
        rows.append(("this checkpoint, centre crop", 100 * res["center_top1_err"], 100 * res["center_top5_err"]))
    rows += list(REFERENCE_ROWS)
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  top-1 err  top-5 err", f"{'-' * width}  ---------  ---------"]
    lines += [f"{name:{width}}  {t1:8.1f}%  {t5:8.1f}%" for name, t1, t5 in rows]
    lines.append(f"{res['num_images']} images, {res['crops']} crop(s) each; reference rows are ImageNet figures")
    return "\n".join(lines)


def evaluate(args, run, state):
    for note in configure(run.device, args.tf32) + amp_note(args.amp):
        run.log(f"speed mode, departs from the paper's float32 arithmetic: {note}")
    loader, _ = eval_loader(args.data_path, args.split, args.batch_size, args.workers, args.crops,
                            run.replicas, run.replica, input_scale=model_config(state).input_scale,
                            pin_memory=run.device.type == "cuda")
    model, classes, _, _ = load_for_inference(args.checkpoint, args.data_path, run.placement, run.devices,
                                              state=state, topology=run.topology)
    result = gather(predict(model, loader, input_device(model), args.crops, log=run.log,
                            counts_here=run.column == 0, amp=args.amp))
    res = summary(result, classes, args.checkpoint, args.crops)
    if not run.main:
        return res
    run.log(table(res))
    if args.json:
        atomic_write(args.json, lambda f: json.dump(res, f, indent=1), "w")
        run.log(f"wrote {args.json}")
    if args.predictions:
        files = loader.dataset.store.files

        def write(f):
            w = csv.writer(f)
            w.writerow(["path", "true"] + [f"top{k}" for k in range(1, 6)] + [f"prob{k}" for k in range(1, 6)])
            for i, label, top, prob in zip(result["index"], result["label"], result["top5"], result["prob5"]):
                w.writerow([files[i], classes[label]] + [classes[t] for t in top] + [f"{p:.6f}" for p in prob])
        atomic_write(args.predictions, write, "w")
        run.log(f"wrote {args.predictions}")
    return res


@tool
def main(argv=None):
    args = parse_args(argv)
    Store(args.data_path, args.split)  # the store's checks take milliseconds, the checkpoint's load seconds
    state = load(args.checkpoint)      # its variant decides the placement: the 1-column net is grouped only
    run = Run(args.devices, columns=model_config(state).columns)
    try:
        evaluate(args, run, state)
    finally:
        run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
