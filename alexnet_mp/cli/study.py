"""The paper's claims as experiments: train the baseline and its ablations, ten-crop evaluate, tabulate.

The code behind tools/study.py, whose docstring has the exact command lines.
The study itself is `alexnet_mp.study`: this module turns the flags into a
`Plan` (the demo set's preset budget where no store is given) and runs it.
"""
import os
import sys
from dataclasses import replace

from alexnet_mp.cli import ArgumentParser, check_at_least, check_ranges, epoch_list, tool
from alexnet_mp.data.demo_set import default_cache_dir, demo_store, demo_store_path
from alexnet_mp.data.storecheck import read_classes
from alexnet_mp.distributed.launch import torchrun_env
from alexnet_mp.errors import StudyError
from alexnet_mp.model.arch import COLUMNS
from alexnet_mp.study.estimate import estimate
from alexnet_mp.study.runs import check_plan, finished, grouped_only, run_dir, run_study
from alexnet_mp.study.variants import (BY_NAME, DEFAULT, DEMO_PRESET, DEMO_SEEDS, PAPER, Budget, Plan,
                                       choose_variants)

BUDGET_FIELDS = ("batch_size", "epochs", "lr", "lr_steps", "plateau_patience", "stop_at_step")


def parse_args(argv):
    p = ArgumentParser(description="Train the baseline and the paper's ablations; ten-crop "
                                   "evaluate every run; write study.json, study.md, study.png")
    p.add_argument("--data-path", help="prepared store; default: the demo set, with the preset budget")
    p.add_argument("--output-dir", default="runs/study", help="one folder per run: VARIANT/seedS")
    p.add_argument("--variants", default="paper",
                   help=f"comma-separated, from {', '.join(BY_NAME)}; 'paper' = {', '.join(DEFAULT)}; "
                        f"'all' adds the failure modes; batchnorm and gap (later work) run only when "
                        f"named. The baseline always runs")
    p.add_argument("--seeds", type=int, help="runs per variant, seeds 0..S-1 (demo preset 2, else 1)")
    p.add_argument("-b", "--batch-size", type=int, help="images per replica (demo preset 32, else 128)")
    p.add_argument("--epochs", type=int, help="(demo preset 3, else the paper's 90)")
    p.add_argument("--lr", type=float, help=f"(the paper's {PAPER.lr})")
    p.add_argument("--lr-steps", type=epoch_list, help="fixed lr drops (demo preset 2, else the plateau rule)")
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
    check_ranges(args)
    return args


def budget_from_args(args):
    """(Budget, seeds): the flags given, else the demo preset (no --data-path), else the paper's."""
    preset = {name: value for name, value, _, _ in DEMO_PRESET} if args.data_path is None else {}
    given = {k: getattr(args, k) for k in BUDGET_FIELDS if getattr(args, k) is not None}
    if "lr_steps" in given:
        given["lr_steps"] = tuple(given["lr_steps"])
    seeds = args.seeds if args.seeds is not None else DEMO_SEEDS[0] if args.data_path is None else 1
    if seeds < 1:
        raise StudyError(f"--seeds {seeds}: give at least 1 run per variant")
    budget = {**preset, **given}
    if "lr_steps" not in given and "epochs" in given:
        # The preset's drop after a run that --epochs now ends before would be said and never happen.
        budget["lr_steps"] = tuple(s for s in budget.get("lr_steps", ()) if s < budget["epochs"])
    return Budget(**budget), seeds


def print_plan(say, plan, distributed):
    say(f"{'variant':<12} {'seed':>4}  {'status':<10} overrides")
    for variant in plan.variants:
        for seed in plan.seeds:
            status = "done" if finished(run_dir(plan.output_dir, variant, seed)) else "to run"
            if distributed and grouped_only(variant) and status != "done":
                status = "skipped"
            say(f"{variant.name:<12} {seed:>4}  {status:<10} {variant.describe()}")


@tool
def main(argv=None):
    args = parse_args(argv)
    variants = choose_variants(args.variants)
    budget, seeds = budget_from_args(args)
    env = torchrun_env()
    rank0 = env is None or env[0] == 0
    say = print if rank0 else (lambda *a, **k: None)
    plan = Plan(store=args.data_path or demo_store_path(args.cache_dir), output_dir=args.output_dir, budget=budget,
                seeds=tuple(range(seeds)), variants=tuple(variants), replicas=env[1] // COLUMNS if env else 1,
                workers=args.workers, eval_batch_size=args.eval_batch_size, print_freq=args.print_freq,
                devices=args.devices)
    if args.data_path is None:
        say("study preset for the demo set, departures from the paper's recipe (§5):")
        for name, value, paper, why in DEMO_PRESET + (("seeds",) + DEMO_SEEDS,):
            say(f"  {name} {value} (paper: {paper}): {why}")
    print_plan(say, plan, env is not None)
    check_plan(plan, write=False)
    if args.data_path is not None:
        read_classes(args.data_path)        # a missing store: one line now, not one per run
    if args.dry_run:
        if rank0:
            todo = [(v, s) for v in plan.variants for s in plan.seeds
                    if not finished(run_dir(plan.output_dir, v, s))]
            estimate(plan, todo, say)
        return 0
    if args.data_path is None:
        plan = replace(plan, store=demo_store(args.cache_dir, say))
    return run_study(plan, say, main=rank0, distributed=env is not None)


if __name__ == "__main__":
    sys.exit(main())
