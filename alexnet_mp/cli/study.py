"""The paper's claims as experiments: train the baseline and its ablations, ten-crop evaluate, tabulate.

The code behind tools/study.py, whose docstring has the exact command lines.
Every run is tools/train.py's and tools/evaluate.py's `main`, called in this
process with the same budget; `alexnet_mp.study` says what the variants are and
writes the table.
"""
import os
import sys
import time
from dataclasses import replace

import torch

from alexnet_mp import study, study_time
from alexnet_mp.atomic import atomic_write
from alexnet_mp.cli import ArgumentParser, check_at_least, evaluate, tool, train
from alexnet_mp.config import TrainConfig
from alexnet_mp.data import read_classes
from alexnet_mp.exchange import COLUMNS
from alexnet_mp.placement import torchrun_env
from alexnet_mp.train import config_from_args, default_cache_dir, demo_store_path

PAPER = TrainConfig()
# (flag, value, paper's value, why): the demo set's budget, printed at start and listed in the README.
STUDY_PRESET = (
    ("-b", "32", "128", "4x more updates fit in a CPU budget of minutes (as the demo)"),
    ("--epochs", "3", "90", "12 runs of the demo set in 25 to 75 minutes on a 2-core CPU (--dry-run times it here)"),
    ("--lr-steps", "2", "plateau, patience 5", "3 epochs leave no room to wait for a plateau"),
    ("--seeds", "2", "1 run per variant", "a spread to compare each difference with"),
)
BUDGET_FLAGS = (("batch_size", "-b"), ("epochs", "--epochs"), ("lr", "--lr"), ("lr_steps", "--lr-steps"),
                ("plateau_patience", "--plateau-patience"), ("stop_at_step", "--stop-at-step"))


def parse_args(argv):
    p = ArgumentParser(description="Train the baseline and the paper's ablations; ten-crop "
                                            "evaluate every run; write study.json, study.md, study.png")
    p.add_argument("--data-path", help="prepared store; default: the demo set, with the preset budget")
    p.add_argument("--output-dir", default="runs/study", help="one folder per run: VARIANT/seedS")
    p.add_argument("--variants", default="paper",
                   help=f"comma-separated, from {', '.join(study.BY_NAME)}; 'paper' = {', '.join(study.DEFAULT)}; "
                        f"'all' adds the failure modes. The baseline always runs")
    p.add_argument("--seeds", type=int, help="runs per variant, seeds 0..S-1 (demo preset 2, else 1)")
    p.add_argument("-b", "--batch-size", type=int, help="images per replica (demo preset 32, else 128)")
    p.add_argument("--epochs", type=int, help="(demo preset 3, else the paper's 90)")
    p.add_argument("--lr", type=float, help=f"(the paper's {PAPER.lr})")
    p.add_argument("--lr-steps", type=train._ints, help="fixed lr drops (demo preset 2, else the plateau rule)")
    p.add_argument("--plateau-patience", type=int, help=f"(default {PAPER.plateau_patience})")
    p.add_argument("--stop-at-step", type=int, help="stop every run after this global step (smoke tests)")
    p.add_argument("-j", "--workers", type=int, default=min(2, os.cpu_count() or 1), help="data loaders per rank")
    p.add_argument("--eval-batch-size", type=int, default=16, help="images per ten-crop forward")
    p.add_argument("--print-freq", type=int, default=10)
    p.add_argument("--devices", help="two devices for the two-device placement (the 1-column net runs grouped)")
    p.add_argument("--cache-dir", default=default_cache_dir(), help="where the demo set is generated")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its estimated time, train nothing")
    args = p.parse_args(argv)
    # Here, not once per run: every run would fail on it.
    check_at_least(("-j", args.workers, 0), ("--eval-batch-size", args.eval_batch_size, 1),
                   ("--print-freq", args.print_freq, 1))
    return args


def resolve_budget(args):
    """(budget dict, train flags): the flags given, else the demo preset (no --data-path), else the paper's."""
    preset = {flag: value for flag, value, _, _ in STUDY_PRESET} if args.data_path is None else {}
    argv = []
    for key, flag in BUDGET_FLAGS:
        given = getattr(args, key)
        if given is not None:
            argv += [flag, ",".join(map(str, given)) if isinstance(given, list) else str(given)]
        elif flag in preset:
            argv += [flag, preset[flag]]
    if args.seeds is None:
        args.seeds = int(preset.get("--seeds", 1))
    if args.seeds < 1:
        raise study.StudyError(f"--seeds {args.seeds}: give at least 1 run per variant")
    flags = train.parser().parse_args(argv)
    cfg = config_from_args(flags)
    budget = {"batch_size": cfg.batch_size, "epochs": cfg.epochs, "lr": cfg.lr, "lr_steps": list(cfg.lr_steps),
              "plateau_patience": cfg.plateau_patience, "stop_at_step": flags.stop_at_step}
    return budget, argv


def variant_config(variant):
    return config_from_args(train.parser().parse_args(list(variant.flags))).model


STOPPED = "stopped"


def trained_to_budget(folder, budget):
    """Whether the run's last checkpoint has its whole budget (not a stop by SIGTERM or Ctrl-C)."""
    state = torch.load(os.path.join(folder, "checkpoint.pt"), map_location="cpu", weights_only=True, mmap=True)
    return state["epoch"] >= budget["epochs"] or 0 < budget["stop_at_step"] <= state["step"]


def run_one(args, budget, budget_argv, variant, seed, folder, store):
    """Train and ten-crop evaluate one run; returns its record (None on ranks other than 0)."""
    columns = variant_config(variant).columns
    devices = ["--devices", args.devices] if args.devices and columns == PAPER.model.columns else []
    data = ["--data-path", args.data_path] if args.data_path else []
    t0 = time.time()
    code = train.main(["--output-dir", folder, "--seed", str(seed), "--resume", "auto", "-j", str(args.workers),
                       "--print-freq", str(args.print_freq), "--cache-dir", args.cache_dir]
                      + data + devices + budget_argv + list(variant.flags))
    record = {"variant": variant.name, "seed": seed, "flags": list(variant.flags), "train_seconds": time.time() - t0}
    metrics = os.path.join(folder, "metrics.jsonl")
    if code:
        last = study.last_step(metrics)
        return dict(record, status="failed", exit_code=code, last_step=last and last.get("step"))
    if not trained_to_budget(folder, budget):
        return STOPPED
    t1, eval_json = time.time(), os.path.join(folder, "eval.json")
    code = evaluate.main(["--checkpoint", os.path.join(folder, "checkpoint.pt"), "--data-path", store,
                          "-j", str(args.workers), "-b", str(args.eval_batch_size), "--json", eval_json] + devices)
    result = study.read_json(eval_json)
    if code or result is None:
        return None if code == 0 else dict(record, status="failed", exit_code=code, stage="evaluate")
    curve = study.epoch_curve(metrics)
    last = study.last_step(metrics)
    return dict(record, status="ok", eval_seconds=time.time() - t1, curve=curve,
                final_loss=last and last.get("loss"),
                **{k: result[k] for k in ("top1_err", "top5_err", "center_top1_err", "center_top5_err",
                                          "num_images")})


def estimate(args, budget, todo, store, say):
    """Print the time the runs still to do will take, timed on this machine now."""
    n_train, n_val, classes, make = study_time.store_size(store)
    device = study_time.device_for(args.devices)
    say(f"timing one training step and one evaluation forward per network here ({device}, "
        f"{torch.get_num_threads()} threads; batch {budget['batch_size']}, {classes} classes)...")
    timings, rows = {}, {}
    if todo:       # the process's first network runs slower (allocator, thread pool): time it once unseen
        study_time.time_network(replace(variant_config(todo[0][0]), num_classes=classes), budget["batch_size"],
                                classes, device)
    for variant, _ in todo:
        cfg = replace(variant_config(variant), num_classes=classes)
        key = (cfg.columns, cfg.lrn, cfg.pool_size, cfg.pool_stride)
        if key not in timings:
            timings[key] = study_time.time_network(cfg, budget["batch_size"], classes, device)
        rows.setdefault(variant.name, [0, key])[0] += 1
    folder = os.path.abspath(args.output_dir)
    while not os.path.isdir(folder):         # the disk it will write to; a dry run makes no folder
        folder = os.path.dirname(folder)
    save_s = study_time.time_save(classes, folder) if todo else 0.0
    total = study_time.DEMO_PREPARE_S if make else 0.0
    say(f"{'variant':<12} {'runs':>4} {'train/run':>10} {'eval/run':>9}")
    for name, (count, key) in rows.items():
        train_s, eval_s = study_time.run_seconds(budget, n_train, n_val, timings[key], save_s)
        total += count * (train_s + eval_s)
        say(f"{name:<12} {count:>4} {train_s / 60:>8.1f} m {eval_s / 60:>7.1f} m")
    say(f"estimated {total / 60:.0f} min for {len(todo)} run(s) on {n_train} training and {n_val} validation "
        f"images" + (f" (including about {study_time.DEMO_PREPARE_S} s to make the demo set)" if make else "")
        + "; timed under the machine's load of the moment, with data loading on top")
    return total


def print_plan(say, runs, distributed):
    say(f"{'variant':<12} {'seed':>4}  {'status':<10} flags")
    for variant, seed, folder in runs:
        status = "done" if os.path.isfile(os.path.join(folder, study.RUN_RECORD)) else "to run"
        if distributed and variant_config(variant).columns != PAPER.model.columns and status != "done":
            status = "skipped"
        say(f"{variant.name:<12} {seed:>4}  {status:<10} {' '.join(variant.flags) or '(the paper)'}")


def write_outputs(out, variants, seeds, store, budget, wall, say):
    """The table of every finished run in `out`: this invocation's and any an earlier one added."""
    records = study.finished_runs(out)
    variants = [v for v in study.VARIANTS if v in variants or any(r["variant"] == v.name for r in records)]
    seeds = sorted({r["seed"] for r in records} | set(seeds))
    rows = study.summarise(records, variants)
    run_s = sum(r.get("train_seconds", 0) + r.get("eval_seconds", 0) for r in records)
    header = (f"Store `{store}`. Every run: {study.describe_budget(budget)}; seeds {', '.join(map(str, seeds))}; "
              f"then ten crops (§4.1) on the final weights. The runs took {run_s / 60:.1f} min in all; "
              f"this invocation {wall / 60:.1f} min.")
    study.write_json(os.path.join(out, "study.json"), {"store": store, "budget": budget, "seeds": seeds,
                                                       "run_minutes": run_s / 60, "summary": rows, "runs": records})
    md = study.markdown(rows, header)
    atomic_write(os.path.join(out, "study.md"), lambda f: f.write(md), "w")
    try:
        study.curves_figure(records, variants, os.path.join(out, "study.png"))
    except ImportError:
        say("warning: no matplotlib, so no study.png: pip install 'alexnet_mp[viz]' "
            "(study.json and study.md are written)")
    say(md)
    say(f"wrote {os.path.join(out, 'study.json')}, study.md" + (", study.png" if os.path.isfile(
        os.path.join(out, "study.png")) else ""))


@tool
def main(argv=None):
    args = parse_args(argv)
    variants = study.choose_variants(args.variants)
    budget, budget_argv = resolve_budget(args)
    env = torchrun_env()
    distributed = env is not None
    rank0 = int(os.environ.get("RANK", "0")) == 0
    say = print if rank0 else (lambda *a, **k: None)
    store = args.data_path or demo_store_path(args.cache_dir)
    seeds = list(range(args.seeds))
    runs = [(v, s, study.run_dir(args.output_dir, v, s)) for v in variants for s in seeds]
    if args.data_path is None:
        say("study preset for the demo set, departures from the paper's recipe (§5):")
        for flag, value, paper, why in STUDY_PRESET:
            say(f"  {flag} {value:<4} (paper: {paper}): {why}")
    print_plan(say, runs, distributed)
    # Replicas multiply the global batch (README: k replicas of batch b train at k*b): part of the budget.
    plan = {"store": os.path.abspath(store), "budget": budget, "replicas": env[1] // COLUMNS if env else 1}
    study.check_plan(args.output_dir, plan, write=False)
    if args.data_path is not None:
        read_classes(args.data_path)        # a missing store: one line now, not one per run
    if args.dry_run:
        if rank0:
            estimate(args, budget, [(v, s) for v, s, d in runs
                                    if not os.path.isfile(os.path.join(d, study.RUN_RECORD))], store, say)
        return 0
    study.check_plan(args.output_dir, plan, write=rank0)
    start = time.time()
    for variant, seed, folder in runs:
        if os.path.isfile(os.path.join(folder, study.RUN_RECORD)):
            continue
        if distributed and variant_config(variant).columns != PAPER.model.columns:
            say(f"skipping {variant.name} seed {seed}: the 1-column net runs in the grouped placement only; "
                f"run this study again without torchrun to add it")
            continue
        say(f"== {variant.name}, seed {seed}: {' '.join(variant.flags) or 'the paper'} -> {folder}")
        record = run_one(args, budget, budget_argv, variant, seed, folder, store)
        if record == STOPPED:
            say(f"{variant.name} seed {seed} stopped before its budget: run the same command again to resume it")
            return 0
        if record is not None and rank0:
            failed = record["status"] != "ok"
            os.makedirs(folder, exist_ok=True)          # a run can fail before training made it
            study.write_json(os.path.join(folder, study.RUN_FAILED if failed else study.RUN_RECORD), record)
    if rank0:
        write_outputs(args.output_dir, variants, seeds, store, budget, time.time() - start, say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
