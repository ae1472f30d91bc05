"""The training run behind tools/train.py: placement, recipe (§5), checkpoints and faults.

Laid out as torchvision's classification reference: `train` takes the run's
`Options` and its `TrainConfig`, `build` makes the `Parts` (model, data,
optimizer, schedule) and restores a `TrainState`; then each epoch is
`train_one_epoch`, `end_epoch` (validate, schedule, log) and a checkpoint.

Host synchronisation: a step that does not log never waits for the device or
for another rank. The loss stays a tensor; the stop and checkpoint-due votes and
the check for a non-finite loss or weights run on the sync steps only: every
--print-freq steps, the epoch's last step and the --stop-at-step step, and, where
that is more than STOP_CHECK_SECONDS of steps, often enough to vote every
STOP_CHECK_SECONDS (every step, on a slow machine). A stop request (SIGTERM, a
scheduler's warning) therefore takes effect within STOP_CHECK_SECONDS plus one
step, then the checkpoint: inside SLURM's KillWait and torchrun's 30 s
(docs/cluster.md has the measured times). A diverging run stops at the next sync
step, before anything is saved from it. A run stopped by a signal before its last
epoch leaves OUTPUT_DIR/stopped-by-signal.json for a job script to requeue it.
"""
import contextlib
import math
import os
import signal
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from alexnet_mp.config import TrainConfig
from alexnet_mp.data.loader import eval_loader, pins_memory, train_loader
from alexnet_mp.data.storecheck import read_classes
from alexnet_mp.distributed.launch import Run, is_timeout
from alexnet_mp.distributed.parallel import apply_data_parallel
from alexnet_mp.distributed.placement import build, gpu_layout, input_device
from alexnet_mp.errors import TrainingError
from alexnet_mp.files import write_json
from alexnet_mp.eval.tencrop import errors, gather, predict
from alexnet_mp import checkpoint as ckpt_io
from alexnet_mp.train import preflight
from alexnet_mp.train.report import log_step, metrics_writer
from alexnet_mp.train.diagnose import StuckWatch
from alexnet_mp.train.health import Health
from alexnet_mp.numerics import amp_note, configure
from alexnet_mp.train.optim import LRSchedule, PaperSGD, param_groups, set_lr
from alexnet_mp.train.state import TrainState, load_resume, resume, save_checkpoint
from alexnet_mp.train.step import train_step
from alexnet_mp.train.weights import start_from_weights, weights_config


STOP_CHECK_SECONDS = 5.0               # the most steps' time between two stop votes
STOPPED_MARKER = "stopped-by-signal.json"  # tools/slurm/train.sbatch requeues a job that leaves it


class StopFlag:
    """SIGTERM asks for a clean stop from the start of a run (a scheduler may send it while
    the ranks meet), SIGINT from the first step (before it, Ctrl-C interrupts as usual);
    honoured at the next sync step. `at`: when the first signal came."""

    def __init__(self):
        self.requested, self.at, self._old = False, None, {}
        self.catch(signal.SIGTERM)

    def catch(self, *signals):
        for s in signals:
            self._old.setdefault(s, signal.signal(s, self._handle))

    def _handle(self, signum, frame):
        self.requested = True
        self.at = self.at or time.time()

    def restore(self):
        for s, handler in self._old.items():
            signal.signal(s, handler)


@dataclass(frozen=True)
class Options:
    """What a run is asked for beyond the recipe (`TrainConfig`): where, how often, from what."""
    data_path: str                 # a prepared store (the demo's: `alexnet_mp.data.demo_set.demo_store`)
    output_dir: str = "runs/alexnet"
    devices: str = None            # --devices: None lets the launch decide
    device: str = None             # --device: the grouped placement on this one device
    workers: int = 0
    resume: str = None             # "auto" or a training checkpoint
    weights: str = None            # a checkpoint whose weights start a fresh run
    checkpoint_minutes: float = 30.0
    print_freq: int = 10
    stop_at_step: int = 0
    amp: str = None
    tf32: bool = False
    deterministic: bool = False

    @property
    def ckpt_path(self):
        return os.path.join(self.output_dir, "checkpoint.pt")


@dataclass
class Parts:
    """What a run builds, once: the network in its placement, the optimizer, the data."""
    classes: dict
    data_path: str
    net: nn.Module            # the placement: checkpoints and validation go through it
    model: nn.Module          # what a training step runs: `net`, or DDP around it
    optimizer: PaperSGD
    schedule: LRSchedule
    loader: object
    sampler: object
    transform: object
    steps_per_epoch: int
    health: Health = None          # conv1..fc7's figures, measured on the steps that log
    write_metric: object = None    # made after resuming: it cuts metrics.jsonl back to the checkpoint


@dataclass
class Meter:
    """What the console reports between checkpoints; nothing of it is saved."""
    last_save: float = field(default_factory=time.time)
    mean_loss: float = float("nan")
    rate: float = float("nan")
    watch: StuckWatch = None       # says once why a run sits at chance, where the health figures show it
    window: object = None          # rank 0's losses since the last log step, summed on the device
    window_steps: int = 0
    vote_every: int = 0            # steps between stop votes, agreed by the ranks (0: not measured yet)
    synced: tuple = (0.0, 0)       # (time, step) of the last sync step


@dataclass
class Result:
    """What a finished (or stopped) run hands back to its caller."""
    code: int
    data_path: str
    output_dir: str
    best: float
    stopped: bool                  # by a signal or --stop-at-step, checkpoint written
    epoch: int                     # the epoch the last checkpoint resumes at
    step: int


@dataclass
class Training:
    """The three sides of a run, side by side: configured (opts, cfg), built (parts), progressing (state)."""
    run: Run
    opts: Options
    cfg: TrainConfig
    parts: Parts
    state: TrainState
    meter: Meter


def train(opts, cfg, log=print):
    """Run the training job; returns a `Result`. The output dir stays locked while it runs."""
    if opts.weights and opts.resume:
        raise TrainingError(f"--weights starts a fresh run and --resume continues one: pass one of them "
                            f"(--resume {opts.resume} carries its own weights)")
    start = ckpt_io.load(opts.weights) if opts.weights else None
    if start is not None:
        cfg = weights_config(start, opts.weights, cfg)
    saved, cfg = load_resume(opts, cfg)
    stop = StopFlag()             # before the rendezvous: a scheduler's signal during the start counts
    try:
        return _train_in(opts, cfg, log, start, saved, stop)
    finally:
        stop.restore()


def _train_in(opts, cfg, log, start, saved, stop):
    run = Run(opts.devices, log, model=cfg.model, device=opts.device)
    lock = None
    try:
        classes = read_classes(opts.data_path)
        lock = preflight.check(opts, run, len(classes["classes"]))
        return run_job(opts, cfg, run, classes, start, saved, stop)
    except (RuntimeError, TimeoutError) as e:      # a collective or store wait ran out of time
        if not (run.distributed and is_timeout(e)):
            raise
        raise run.unanswered(e, opts.ckpt_path) from None
    finally:
        if lock is not None:
            lock.release()
        run.close()


def run_job(opts, cfg, run, classes, start=None, saved=None, stop=None):
    for note in configure(run.device, opts.tf32, opts.deterministic) + amp_note(opts.amp):
        run.log(f"speed mode, departs from the paper's float32 arithmetic: {note}")
    job = build_job(opts, cfg, run, classes, start, saved)
    if opts.stop_at_step and job.state.step >= opts.stop_at_step:      # resumed at its stop: no step more
        run.log(f"{opts.ckpt_path} is at step {job.state.step}, --stop-at-step {opts.stop_at_step}: nothing to do")
        return _result(job, stopped=True)
    own_flag = stop is None
    stop = stop or StopFlag()
    stop.catch(signal.SIGINT)
    try:
        _clear_stopped(job)
        if run.all_sum([stop.requested])[0]:         # signalled while starting: nothing new to save
            return _stopped_by_signal(job, stop, "before its first step", saved=False)
        for epoch in range(job.state.epoch, cfg.epochs):
            if train_one_epoch(job, epoch, stop) or end_epoch(job, epoch, stop):
                return _result(job, stopped=True)
    finally:
        if own_flag:
            stop.restore()
    run.log(f"done: {cfg.epochs} epochs, best val top-1 error {job.state.best:.4f}; checkpoints in {opts.output_dir}")
    return _result(job, stopped=False)


def _result(job, stopped):
    opts, state = job.opts, job.state
    return Result(0, opts.data_path, opts.output_dir, state.best, stopped, state.epoch, state.step)


def _build_net(run, num_classes, cfg):
    torch.manual_seed(cfg.seed + run.rank)     # torch's global generator: each rank its own
    net = build(run.placement, run.devices, num_classes, seed=cfg.seed, config=cfg.model, topology=run.topology)
    return gpu_layout(net, run.devices).train()


def build_parts(opts, cfg, run, classes):
    """Model, optimizer, schedule and data for this rank."""
    net = _build_net(run, len(classes["classes"]), cfg)
    loader, sampler, transform = train_loader(opts.data_path, cfg.batch_size, opts.workers, cfg.seed,
                                              run.replicas, run.replica, cfg.pca_std, cfg.model.input_scale,
                                              pin_memory=pins_memory(run.device), crop=cfg.model.crop)
    steps_per_epoch = len(sampler.indices()) // cfg.batch_size
    if steps_per_epoch == 0:
        raise TrainingError(f"{opts.data_path} has {sampler.size} training images, fewer than one batch of "
                            f"{cfg.batch_size} for each of {run.replicas} replica(s): lower -b")
    return Parts(classes=classes, data_path=opts.data_path, net=net, model=net,
                 optimizer=PaperSGD(param_groups(net, cfg.weight_decay, cfg.decay_biases), cfg.lr, cfg.momentum),
                 schedule=LRSchedule(cfg.lr, cfg.plateau_patience, cfg.lr_drop, cfg.max_lr_drops, cfg.lr_steps),
                 loader=loader, sampler=sampler, transform=transform, steps_per_epoch=steps_per_epoch,
                 health=Health(net))


def build_job(opts, cfg, run, classes, start=None, saved=None):
    """The parts, resumed from `saved` (or started from the --weights checkpoint `start`), with
    the metrics writer and DDP applied."""
    parts, state = build_parts(opts, cfg, run, classes), TrainState()
    os.makedirs(opts.output_dir, exist_ok=True)
    if start is not None:
        start_from_weights(start, opts.weights, parts, run)
    if saved is not None:
        resume(saved, opts, run, parts, state)
    set_lr(parts.optimizer, parts.schedule.lr)
    parts.write_metric = metrics_writer(os.path.join(opts.output_dir, "metrics.jsonl"), run, state)
    # After loading: DDP starts by copying replica 0's weights to the others.
    parts.model = apply_data_parallel(parts.net, run.topology)
    return Training(run, opts, cfg, parts, state, Meter(watch=StuckWatch(len(classes["classes"]), cfg.model)))


def train_one_epoch(job, epoch, stop):
    """The epoch's steps from the sampler's position; True when the run stopped (checkpoint written)."""
    opts, parts, state = job.opts, job.parts, job.state
    batch = job.cfg.batch_size
    state.epoch = parts.sampler.epoch = parts.transform.epoch = epoch
    parts.model.train()
    device = input_device(parts.net)
    clock = {"start": time.time(), "done": parts.sampler.start // batch, "steps": 0}
    t_data = time.time()
    job.meter.synced = (t_data, state.step)      # the step time excludes validation and the loader's start
    for images, labels in parts.loader:
        data_time = time.time() - t_data
        x, y = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        log_due = (clock["done"] + 1) % opts.print_freq == 0 or clock["done"] + 1 == parts.steps_per_epoch
        stop_at = bool(opts.stop_at_step) and state.step + 1 >= opts.stop_at_step
        # the first vote at the second step: it measures the step time the votes' interval needs
        vote_due = (state.step + 1) % (job.meter.vote_every or min(2, opts.print_freq)) == 0
        if log_due and job.run.main:
            parts.health.arm()              # measured on the device; read at the log step below
        loss, logits = train_step(parts.model, parts.optimizer, x, y, opts.amp)
        job.meter.window = loss if job.meter.window is None else job.meter.window + loss   # no host read
        job.meter.window_steps += 1
        state.step += 1
        clock["done"] += 1
        clock["steps"] += 1
        parts.sampler.start += batch
        if log_due or stop_at or vote_due:  # the only host synchronisation of a step
            stop_vote, due_vote = sync_step(job, loss, stop)
            if log_due:
                log_step(job, clock, logits, y.to(logits.device), data_time)
            if stop_vote:
                checkpoint(job, [opts.ckpt_path])
                _stopped_by_signal(job, stop, f"at epoch {epoch} step {state.step}")
                return True
            if stop_at:
                checkpoint(job, [opts.ckpt_path])
                job.run.log(f"stopped at --stop-at-step at epoch {epoch} step {state.step}: checkpoint written "
                            f"to {opts.ckpt_path}; continue with --resume auto")
                return True
            if due_vote:
                checkpoint(job, [opts.ckpt_path])
        t_data = time.time()
    parts.sampler.start = 0
    return False


def checkpoint(job, paths):
    save_checkpoint(job.opts, job.cfg, job.run, job.parts, job.state, paths)
    job.meter.last_save = time.time()


def _weights_finite(net):
    # One reduction per device: the two-device placement holds its columns on two devices.
    flags = {}
    for p in net.parameters():
        flags.setdefault(p.device, []).append(torch.isfinite(p).all())
    return all(bool(torch.stack(f).all()) for f in flags.values())


def sync_step(job, loss, stop):
    """Mean loss over ranks, the stop and checkpoint-due votes, and a stop with one line if
    any rank's loss or weights are not finite (so no checkpoint is written from them).
    Returns (stop voted, checkpoint due)."""
    opts, meter, now = job.opts, job.meter, time.time()
    due = opts.checkpoint_minutes > 0 and now - meter.last_save > 60 * opts.checkpoint_minutes
    step_s = (now - meter.synced[0]) / max(1, job.state.step - meter.synced[1])
    loss_sum, stops, dues, bad, step_sum = job.run.all_sum([loss.item(), stop.requested, due,
                                                            not _weights_finite(job.parts.net), step_s])
    meter.mean_loss = loss_sum / job.run.world
    meter.vote_every, meter.synced = vote_interval(step_sum / job.run.world, opts.print_freq), (now, job.state.step)
    if bad or not math.isfinite(meter.mean_loss):
        what = f"loss is {meter.mean_loss}" if not math.isfinite(meter.mean_loss) else "weights are not finite"
        raise TrainingError(f"{what} at epoch {job.state.epoch} step {job.state.step}: training diverged; lower "
                            f"--lr (the last good checkpoint, {opts.ckpt_path}, is untouched)")
    return stops > 0, dues > 0


def vote_interval(step_seconds, print_freq):
    """Steps between stop votes: --print-freq, or fewer where that many steps take longer than
    STOP_CHECK_SECONDS (every step, where one does). Every rank computes it from the same sum."""
    return max(1, min(print_freq, int(STOP_CHECK_SECONDS // max(step_seconds, 1e-9))))


def _clear_stopped(job):
    if job.run.main:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(job.opts.output_dir, STOPPED_MARKER))


def _stopped_by_signal(job, stop, where, saved=True):
    """The line (with the time from the signal to the checkpoint's rename, where rank 0 got
    one) and, for a run with epochs left, the marker a job script requeues on."""
    opts, state, run = job.opts, job.state, job.run
    took = time.time() - stop.at if stop.at and saved else None
    what = (f"checkpoint written to {opts.ckpt_path}" + (f" {took:.1f} s after the signal" if took else "")
            if saved else "nothing new to save")
    run.log(f"stopped by signal {where}: {what}; continue with --resume auto")
    if run.main and state.epoch < job.cfg.epochs:
        write_json(os.path.join(opts.output_dir, STOPPED_MARKER),
                   {"epoch": state.epoch, "step": state.step, "epochs": job.cfg.epochs,
                    "checkpoint": opts.ckpt_path, "signal_to_checkpoint_s": took})
    return _result(job, stopped=True)


def validate(job):
    """Centre-crop top-1 and top-5 error on the store's val split, over every rank."""
    run, model = job.run, job.parts.net
    loader, _ = eval_loader(job.parts.data_path, "val", job.cfg.batch_size, job.opts.workers, crops=1,
                            replicas=run.replicas, replica=run.replica, input_scale=model.config.input_scale,
                            pin_memory=pins_memory(run.device), crop=model.config.crop)
    result = gather(predict(model, loader, input_device(model), crops=1, counts_here=run.column == 0,
                            amp=job.opts.amp))
    return errors(result)


def end_epoch(job, epoch, stop):
    """Validate, step the schedule, log, checkpoint; True when a stop was asked for."""
    run, parts, state = job.run, job.parts, job.state
    top1, top5 = validate(job)
    lr_before = parts.schedule.lr
    set_lr(parts.optimizer, parts.schedule.step(epoch, top1))
    is_best = top1 < state.best
    state.best = min(state.best, top1)
    parts.write_metric({"epoch": epoch, "step": state.step, "loss": job.meter.mean_loss, "lr": lr_before,
                        "img_per_s": job.meter.rate, "val_top1_err": top1, "val_top5_err": top5})
    run.log(f"Epoch: [{epoch}] val  top1_err: {top1:.4f}  top5_err: {top5:.4f}"
            + (f"  (lr now {parts.schedule.lr:.6g})" if parts.schedule.lr != lr_before else ""))
    best = [os.path.join(job.opts.output_dir, "model_best.pt")] if is_best else []
    state.epoch = epoch + 1
    # model_best.pt first: a kill between the two then repeats the epoch, and rewrites both.
    checkpoint(job, best + [job.opts.ckpt_path])
    if run.all_sum([stop.requested])[0]:
        _stopped_by_signal(job, stop, f"after epoch {epoch}")
        return True
    return False
