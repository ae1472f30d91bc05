"""The training run behind tools/train.py: placement, recipe (§5), checkpoints and faults.

Laid out as torchvision's classification reference: `train` converts the
arguments once (`Options`, `TrainConfig`), `build_job` builds the model, data,
optimizer and resumes; then each epoch is `train_one_epoch`, `end_epoch`
(validate, schedule, log) and `save_checkpoint`.

Host synchronisation: a step that does not log never waits for the device or
for another rank. The loss stays a tensor; the stop and checkpoint-due votes and
the check for a non-finite loss or weights run on the sync steps only: every
--print-freq steps, the epoch's last step and the --stop-at-step step. A stop
request (SIGTERM) therefore takes effect up to print-freq - 1 steps late, and a
diverging run stops at the next sync step, before anything is saved from it.
"""
import datetime
import math
import os
import signal
import time
from dataclasses import dataclass, field, replace

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from . import preflight, rundir
from .backends import amp_note, autocast, configure
from .config import ModelConfig, TrainConfig
from .data import eval_loader, read_classes, train_loader
from .evaluate import errors, gather, predict
from .optim import LRSchedule, PaperSGD, param_groups, set_lr
from .parallel import apply_data_parallel
from .placement import build, gpu_layout, input_device
from .resume import resume, save_checkpoint
from .runtime import Run, TrainingError


class StopFlag:
    """SIGTERM/SIGINT ask for a clean stop; honoured at the next sync step."""

    def __init__(self):
        self.requested = False
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        for s, handler in self._old.items():
            signal.signal(s, handler)


@dataclass(frozen=True)
class Options:
    """What the command line asks of this run beyond the recipe (`TrainConfig`)."""
    data_path: str = None          # None: the demo set, generated into cache_dir
    output_dir: str = "runs/alexnet"
    workers: int = 0
    resume: str = None
    checkpoint_minutes: float = 30.0
    print_freq: int = 10
    stop_at_step: int = 0
    amp: str = None
    tf32: bool = False
    deterministic: bool = False
    cache_dir: str = ""
    args: dict = field(default_factory=dict)     # the arguments as given, kept in checkpoints


def options_from_args(args):
    return Options(data_path=args.data_path, output_dir=args.output_dir, workers=args.workers,
                   resume=args.resume, checkpoint_minutes=args.checkpoint_minutes, print_freq=args.print_freq,
                   stop_at_step=args.stop_at_step, amp=args.amp, tf32=args.tf32,
                   deterministic=args.deterministic, cache_dir=args.cache_dir, args=dict(vars(args)))


def config_from_args(args):
    model = ModelConfig(dropout=args.dropout, init_std=args.init_std,
                        # §3 ablations and failure modes (cli/train.py's "variants" flags)
                        columns=args.columns, lrn=args.lrn, pool_size=args.pool, init=args.init,
                        input_scale=args.input_scale)
    return TrainConfig(batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                       weight_decay=args.wd, decay_biases=args.decay_biases, epochs=args.epochs,
                       plateau_patience=args.plateau_patience, lr_steps=tuple(args.lr_steps),
                       pca_std=args.pca_std, seed=args.seed, model=model)


def _metrics_writer(path, run, step=0, epoch=0):
    """Appends to metrics.jsonl, first cut back to the records the checkpoint at (step, epoch) covers."""
    return rundir.metrics_writer(path, step, epoch, run.log) if run.main else (lambda record: None)


def _topk_errors(logits, labels):
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit1 = (top[:, 0] == labels).float().sum().item()
    hit5 = (top == labels[:, None]).any(dim=1).float().sum().item()
    return hit1, hit5


def validate(model, run, store, batch_size, workers, amp=None):
    loader, _ = eval_loader(store, "val", batch_size, workers, crops=1, replicas=run.replicas,
                            replica=run.replica, input_scale=model.config.input_scale,
                            pin_memory=run.device.type == "cuda")
    result = gather(predict(model, loader, input_device(model), crops=1, counts_here=run.column == 0, amp=amp))
    return errors(result)


def demo_store(cache_dir, run):
    """The built-in demo set, generated and prepared once into `cache_dir`."""
    from .demo_data import generate
    from .prepare import prepare
    store = demo_store_path(cache_dir)
    if run.main and not os.path.isfile(os.path.join(store, "train", "stats.npz")):
        run.log(f"no --data-path: generating the demo dataset into {cache_dir} (once)")
        src = generate(os.path.join(cache_dir, "demo-src"))
        prepare(src, store, workers=os.cpu_count() or 1, log=run.log)
    if run.distributed:
        dist.barrier()
    return store


def demo_store_path(cache_dir):
    return os.path.join(cache_dir, "demo-store")


def default_cache_dir():
    return os.environ.get("ALEXNET_MP_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "alexnet_mp"))


@dataclass
class Job:
    """Everything a training run holds, and where it stands (epoch, step, best)."""
    run: Run
    opts: Options
    cfg: TrainConfig
    data_path: str
    classes: dict
    net: nn.Module            # the placement: checkpoints and validation go through it
    model: nn.Module          # what a training step runs: `net`, or DDP around it
    optimizer: PaperSGD
    schedule: LRSchedule
    loader: object
    sampler: object
    transform: object
    steps_per_epoch: int
    write_metric: object = None    # made after resuming: it cuts metrics.jsonl back to the checkpoint
    epoch: int = 0
    step: int = 0
    best: float = float("inf")
    last_save: float = field(default_factory=time.time)
    mean_loss: float = float("nan")
    rate: float = float("nan")

    @property
    def ckpt_path(self):
        return os.path.join(self.opts.output_dir, "checkpoint.pt")


def train(args, log=print):
    """Run the training job described by parsed arguments; returns a process exit code."""
    run = Run(args.devices, log, columns=args.columns)
    try:
        return run_job(options_from_args(args), config_from_args(args), run)
    finally:
        run.close()


def run_job(opts, cfg, run):
    for note in configure(run.device, opts.tf32, opts.deterministic) + amp_note(opts.amp):
        run.log(f"speed mode, departs from the paper's float32 arithmetic: {note}")
    job = build_job(opts, cfg, run)
    stop = StopFlag()
    try:
        for epoch in range(job.epoch, cfg.epochs):
            if train_one_epoch(job, epoch, stop) or end_epoch(job, epoch, stop):
                return 0
    finally:
        stop.restore()
    run.log(f"done: {cfg.epochs} epochs, best val top-1 error {job.best:.4f}; checkpoints in {opts.output_dir}")
    return 0


def _build_net(run, num_classes, cfg):
    torch.manual_seed(cfg.seed + run.rank)     # torch's global generator: each rank its own
    net = build(run.placement, run.devices, num_classes, seed=cfg.seed, config=cfg.model, topology=run.topology)
    return gpu_layout(net, run.devices).train()


def build_job(opts, cfg, run):
    """Model, optimizer, schedule and data for this rank, resumed if asked."""
    opts = replace(opts, data_path=opts.data_path or demo_store(opts.cache_dir, run))
    data_path = opts.data_path
    classes = read_classes(data_path)
    run.output_lock = preflight.check(opts, run, len(classes["classes"]))    # held until the run ends
    net = _build_net(run, len(classes["classes"]), cfg)
    loader, sampler, transform = train_loader(data_path, cfg.batch_size, opts.workers, cfg.seed,
                                              run.replicas, run.replica, cfg.pca_std, cfg.model.input_scale,
                                              pin_memory=run.device.type == "cuda")
    steps_per_epoch = len(sampler.indices()) // cfg.batch_size
    if steps_per_epoch == 0:
        raise TrainingError(f"{data_path} has {sampler.size} training images, fewer than one batch of "
                            f"{cfg.batch_size} for each of {run.replicas} replica(s): lower -b")
    os.makedirs(opts.output_dir, exist_ok=True)
    job = Job(run=run, opts=opts, cfg=cfg, data_path=data_path, classes=classes, net=net, model=net,
              optimizer=PaperSGD(param_groups(net, cfg.weight_decay, cfg.decay_biases), cfg.lr, cfg.momentum),
              schedule=LRSchedule(cfg.lr, cfg.plateau_patience, cfg.lr_drop, cfg.max_lr_drops, cfg.lr_steps),
              loader=loader, sampler=sampler, transform=transform, steps_per_epoch=steps_per_epoch)
    resume(job)
    set_lr(job.optimizer, job.schedule.lr)
    job.write_metric = _metrics_writer(os.path.join(opts.output_dir, "metrics.jsonl"), run, job.step, job.epoch)
    # After loading: DDP starts by copying replica 0's weights to the others.
    job.model = apply_data_parallel(net, run.topology)
    return job


def train_step(model, optimizer, x, y, amp=None):
    """Forward, backward (DDP averages gradients while it runs), update. Returns the loss
    and the logits as tensors: reading them would wait for the device."""
    with autocast(x.device, amp):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y.to(logits.device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


def train_one_epoch(job, epoch, stop):
    """The epoch's steps from the sampler's position; True when the run stopped (checkpoint written)."""
    cfg, opts = job.cfg, job.opts
    job.sampler.epoch = job.transform.epoch = epoch
    job.model.train()
    device = input_device(job.net)
    clock = {"start": time.time(), "done": job.sampler.start // cfg.batch_size, "steps": 0}
    t_data = time.time()
    for images, labels in job.loader:
        data_time = time.time() - t_data
        x, y = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        loss, logits = train_step(job.model, job.optimizer, x, y, opts.amp)
        job.step += 1
        clock["done"] += 1
        clock["steps"] += 1
        job.sampler.start += cfg.batch_size
        log_due = clock["done"] % opts.print_freq == 0 or clock["done"] == job.steps_per_epoch
        stop_at = bool(opts.stop_at_step) and job.step >= opts.stop_at_step
        if log_due or stop_at:              # the only host synchronisation of a step
            stop_vote, due_vote = sync_step(job, epoch, loss, stop)
            if log_due:
                log_step(job, epoch, clock, logits, y.to(logits.device), data_time)
            if stop_vote or stop_at:
                save_checkpoint(job, epoch, [job.ckpt_path])
                job.run.log(f"stopped by signal at epoch {epoch} step {job.step}: checkpoint written to "
                            f"{job.ckpt_path}; continue with --resume auto")
                return True
            if due_vote:
                save_checkpoint(job, epoch, [job.ckpt_path])
        t_data = time.time()
    job.sampler.start = 0
    return False


def _weights_finite(net):
    # One reduction per device: the two-device placement holds its columns on two devices.
    flags = {}
    for p in net.parameters():
        flags.setdefault(p.device, []).append(torch.isfinite(p).all())
    return all(bool(torch.stack(f).all()) for f in flags.values())


def sync_step(job, epoch, loss, stop):
    """Mean loss over ranks, the stop and checkpoint-due votes, and a stop with one line if
    any rank's loss or weights are not finite (so no checkpoint is written from them).
    Returns (stop voted, checkpoint due)."""
    opts = job.opts
    due = opts.checkpoint_minutes > 0 and time.time() - job.last_save > 60 * opts.checkpoint_minutes
    loss_sum, stops, dues, bad = job.run.all_sum([loss.item(), stop.requested, due, not _weights_finite(job.net)])
    job.mean_loss = loss_sum / job.run.world
    if bad or not math.isfinite(job.mean_loss):
        what = f"loss is {job.mean_loss}" if not math.isfinite(job.mean_loss) else "weights are not finite"
        raise TrainingError(f"{what} at epoch {epoch} step {job.step}: training diverged; lower --lr "
                            f"(the last good checkpoint, {job.ckpt_path}, is untouched)")
    return stops > 0, dues > 0


def log_step(job, epoch, clock, logits, y, data_time):
    """One metrics record and console line (rank 0): this step's loss and top-k, speed, eta."""
    cfg, run, total = job.cfg, job.run, job.steps_per_epoch
    elapsed = time.time() - clock["start"]
    job.rate = cfg.batch_size * run.replicas * clock["steps"] / max(elapsed, 1e-9)
    eta = (total - clock["done"]) * elapsed / clock["steps"]
    hit1, hit5 = _topk_errors(logits, y)
    n = y.numel()
    record = {"epoch": epoch, "step": job.step, "loss": job.mean_loss, "lr": job.schedule.lr,
              "img_per_s": job.rate, "train_top1_err": 1 - hit1 / n, "train_top5_err": 1 - hit5 / n,
              "data_time": data_time}
    run.log(f"Epoch: [{epoch}]  [{clock['done']:>{len(str(total))}}/{total}]  "
            f"eta: {datetime.timedelta(seconds=int(eta))}  lr: {job.schedule.lr:.6g}  "
            f"loss: {job.mean_loss:.4f}  top1_err: {record['train_top1_err']:.3f}  "
            f"top5_err: {record['train_top5_err']:.3f}  img/s: {job.rate:.1f}  data: {data_time:.3f}")
    job.write_metric(record)


def end_epoch(job, epoch, stop):
    """Validate, step the schedule, log, checkpoint; True when a stop was asked for."""
    run = job.run
    top1, top5 = validate(job.net, run, job.data_path, job.cfg.batch_size, job.opts.workers, job.opts.amp)
    lr_before = job.schedule.lr
    set_lr(job.optimizer, job.schedule.step(epoch, top1))
    is_best = top1 < job.best
    job.best = min(job.best, top1)
    job.write_metric({"epoch": epoch, "step": job.step, "loss": job.mean_loss, "lr": lr_before,
                      "img_per_s": job.rate, "val_top1_err": top1, "val_top5_err": top5})
    run.log(f"Epoch: [{epoch}] val  top1_err: {top1:.4f}  top5_err: {top5:.4f}"
            + (f"  (lr now {job.schedule.lr:.6g})" if job.schedule.lr != lr_before else ""))
    best = [os.path.join(job.opts.output_dir, "model_best.pt")] if is_best else []
    # model_best.pt first: a kill between the two then repeats the epoch, and rewrites both.
    save_checkpoint(job, epoch + 1, best + [job.ckpt_path])
    if run.all_sum([stop.requested])[0]:
        run.log(f"stopped by signal after epoch {epoch}: checkpoint written to {job.ckpt_path}")
        return True
    return False
