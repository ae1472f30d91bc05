"""A study's runs: each trained and ten-crop evaluated in this process, recorded on disk, tabulated.

Every run is the library's own training (`alexnet_mp.train.loop.train`) and
evaluation (`alexnet_mp.eval.run.evaluate`), given config objects. A run's
folder is VARIANT/seedS; `run.json` is written last and marks it finished, a
failed run leaves `run-failed.json` (tabulated as failed, retried next time).
"""
import os
import sys
import time

from alexnet_mp import config
from alexnet_mp.distributed.launch import Run, torchrun_env
from alexnet_mp.errors import UsageError
from alexnet_mp.eval.run import EvalOptions, evaluate
from alexnet_mp.files import atomic_write, read_json, write_json
from alexnet_mp.study import table
from alexnet_mp.study.variants import PAPER, VARIANTS
from alexnet_mp import checkpoint as ckpt_io
from alexnet_mp.train.loop import Options, train
from alexnet_mp.files import read_records

RUN_RECORD = "run.json"          # written last: its presence marks a finished run
RUN_FAILED = "run-failed.json"   # a run that failed (a diverging loss, say): in the table, retried next time
PLAN_FILE = "study-plan.json"    # the budget and store every run of this folder shares
STOPPED = "stopped"


def run_dir(out, variant, seed):
    return os.path.join(out, variant.name, f"seed{seed}")


def finished(folder):
    return os.path.isfile(os.path.join(folder, RUN_RECORD))


def grouped_only(variant):
    """Whether the variant's network runs only in the grouped placement (the one-column net)."""
    return config.grouped_only(variant.config(PAPER).model)


def finished_runs(out):
    """The records of every finished (or failed) run in a study folder, in the table's order."""
    records = []
    for v in VARIANTS:
        folder = os.path.join(out, v.name)
        seeds = sorted(int(d[4:]) for d in os.listdir(folder) if d.startswith("seed") and d[4:].isdigit()) \
            if os.path.isdir(folder) else []
        for s in seeds:
            folder = run_dir(out, v, s)
            record = read_json(os.path.join(folder, RUN_RECORD)) or read_json(os.path.join(folder, RUN_FAILED))
            if record:
                records.append(record)
    return records


def plan_record(plan):
    return {"store": os.path.abspath(plan.store), "budget": plan.budget.as_dict(), "replicas": plan.replicas}


def check_plan(plan, write=True):
    """Every run in the study's folder shares one budget and store: refuse another, else record this one."""
    out, record = plan.output_dir, plan_record(plan)
    path = os.path.join(out, PLAN_FILE)
    saved = read_json(path)
    if saved is not None and saved != record:
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {record.get(k)!r}" for k in sorted(set(saved) | set(record))
                         if saved.get(k) != record.get(k))
        raise UsageError(f"{out} holds runs made with another budget or store ({diff}): "
                         f"pass the same flags, or another --output-dir")
    if saved is None and write:
        os.makedirs(out, exist_ok=True)
        write_json(path, record)


def epoch_curve(records):
    """The per-epoch records of a training run's metrics (validation is centre crop)."""
    return [{k: r[k] for k in ("epoch", "step", "loss", "val_top1_err", "val_top5_err")}
            for r in records if "val_top1_err" in r]


def stuck_cause(records):
    """The last cause the run's stuck-loss diagnosis named (`alexnet_mp.train.diagnose`), or None."""
    causes = [r["stuck"] for r in records if r.get("stuck")]
    return causes[-1] if causes else None


def _metrics(folder):
    path = os.path.join(folder, "metrics.jsonl")
    env = torchrun_env()
    speaks = env is None or env[0] == 0
    return read_records(path, warn=lambda line: print(line, file=sys.stderr) if speaks else None) \
        if os.path.isfile(path) else []


def _report(error):
    """A run's one-line error, on stderr, by rank 0 alone (every rank meets it under torchrun)."""
    env = torchrun_env()
    if env is None or env[0] == 0:
        print(f"error: {error}", file=sys.stderr)
    return 2


def train_run(plan, variant, seed, folder):
    """Train one run to the budget (resuming a stopped one); a `Result`, or an exit code for a user error."""
    devices = plan.devices if not grouped_only(variant) else None
    opts = Options(data_path=plan.store, output_dir=folder, devices=devices, workers=plan.workers, resume="auto",
                   checkpoint_minutes=0 if plan.budget.stop_at_step else 30.0, print_freq=plan.print_freq,
                   stop_at_step=plan.budget.stop_at_step)
    try:
        return train(opts, plan.budget.train_config(variant, seed))
    except UsageError as e:
        return _report(e)


def evaluate_run(plan, variant, folder):
    """Ten crops on the final weights; the evaluation's summary, or an exit code for a user error."""
    path = os.path.join(folder, "checkpoint.pt")
    devices = plan.devices if not grouped_only(variant) else None
    try:
        state = ckpt_io.load(path)
        run = Run(devices, model=ckpt_io.model_config(state))
        try:
            done = evaluate(EvalOptions(path, plan.store, batch_size=plan.eval_batch_size, workers=plan.workers),
                            run, state)
        finally:
            run.close()
    except UsageError as e:
        return _report(e)
    if run.main:
        write_json(os.path.join(folder, "eval.json"), done.summary)
    return done.summary


def run_one(plan, variant, seed, folder):
    """Train and ten-crop evaluate one run; returns its record, or STOPPED."""
    t0 = time.time()
    result = train_run(plan, variant, seed, folder)
    record = {"variant": variant.name, "seed": seed, "overrides": variant.overrides,
              "train_seconds": time.time() - t0}
    metrics = _metrics(folder)
    if isinstance(result, int):
        return dict(record, status="failed", exit_code=result, last_step=metrics[-1]["step"] if metrics else None)
    budget = plan.budget
    if result.epoch < budget.epochs and not 0 < budget.stop_at_step <= result.step:
        return STOPPED            # by a signal: the same command resumes it
    t1 = time.time()
    summary = evaluate_run(plan, variant, folder)
    if isinstance(summary, int):
        return dict(record, status="failed", exit_code=summary, stage="evaluate")
    return dict(record, status="ok", eval_seconds=time.time() - t1, curve=epoch_curve(metrics),
                final_loss=metrics[-1].get("loss") if metrics else None, stuck=stuck_cause(metrics),
                **{k: summary[k] for k in ("top1_err", "top5_err", "center_top1_err", "center_top5_err",
                                           "num_images")})


def run_study(plan, say, main=True, distributed=False):
    """Every run of `plan` not yet finished, one after another; then the table. 0, or 0 after a stop."""
    check_plan(plan, write=main)
    start = time.time()
    for variant in plan.variants:
        for seed in plan.seeds:
            folder = run_dir(plan.output_dir, variant, seed)
            if finished(folder):
                continue
            if distributed and grouped_only(variant):
                say(f"skipping {variant.name} seed {seed}: the 1-column net runs in the grouped placement only; "
                    f"run this study again without torchrun to add it")
                continue
            say(f"== {variant.name}, seed {seed}: {variant.describe()} -> {folder}")
            record = run_one(plan, variant, seed, folder)
            if record == STOPPED:
                say(f"{variant.name} seed {seed} stopped before its budget: run the same command again to resume it")
                return 0
            if main:
                os.makedirs(folder, exist_ok=True)          # a run can fail before training made it
                write_json(os.path.join(folder, RUN_FAILED if record["status"] != "ok" else RUN_RECORD), record)
    if main:
        write_outputs(plan, time.time() - start, say)
    return 0


def write_outputs(plan, wall, say):
    """The table of every finished run in the folder: this invocation's and any an earlier one added."""
    out = plan.output_dir
    records = finished_runs(out)
    variants = [v for v in VARIANTS if v in plan.variants or any(r["variant"] == v.name for r in records)]
    seeds = sorted({r["seed"] for r in records} | set(plan.seeds))
    rows = table.summarise(records, variants)
    run_s = sum(r.get("train_seconds", 0) + r.get("eval_seconds", 0) for r in records)
    budget = plan.budget.as_dict()
    header = (f"Store `{plan.store}`. Every run: {table.describe_budget(budget)}; seeds {', '.join(map(str, seeds))}; "
              f"then ten crops (§4.1) on the final weights. The runs took {run_s / 60:.1f} min in all; "
              f"this invocation {wall / 60:.1f} min.")
    write_json(os.path.join(out, "study.json"), {"store": plan.store, "budget": budget, "seeds": seeds,
                                                 "run_minutes": run_s / 60, "summary": rows, "runs": records})
    md = table.markdown(rows, header)
    atomic_write(os.path.join(out, "study.md"), lambda f: f.write(md), "w")
    try:
        table.curves_figure(records, variants, os.path.join(out, "study.png"))
    except ImportError:
        say("warning: no matplotlib, so no study.png: pip install 'alexnet_mp[viz]' "
            "(study.json and study.md are written)")
    say(md)
    say(f"wrote {os.path.join(out, 'study.json')}, study.md" + (", study.png" if os.path.isfile(
        os.path.join(out, "study.png")) else ""))

