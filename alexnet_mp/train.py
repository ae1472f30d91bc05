"""The training run behind tools/train.py: placement, recipe (§5), checkpoints and faults."""
import datetime
import math
import os
import signal
import time

import torch
import torch.distributed as dist
from torch.nn import functional as F

from . import checkpoint as ckpt_io
from . import preflight, rundir
from .backends import amp_note, autocast, configure
from .config import ModelConfig, TrainConfig, from_dict, model_differences, to_dict
from .data import eval_loader, read_classes, train_loader
from .evaluate import errors, gather, predict
from .optim import LRSchedule, PaperSGD, param_groups, set_lr
from .placement import build, input_device
from .runtime import Run, TrainingError


class StopFlag:
    """SIGTERM/SIGINT ask for a clean stop at the end of the current step."""

    def __init__(self):
        self.requested = False
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        for s, handler in self._old.items():
            signal.signal(s, handler)


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


def _resume_path(args):
    if not args.resume:
        return None
    if args.resume == "auto":
        path = os.path.join(args.output_dir, "checkpoint.pt")
        return path if os.path.isfile(path) else None
    return args.resume


def _resume_state(state, model, optimizer, schedule, sampler, run):
    """Restore everything but the weights from a training checkpoint; returns (epoch, step, best)."""
    model.scatter_canonical(state["optimizer"]["velocity"],
                            lambda p: optimizer.state[p].setdefault("velocity", torch.zeros_like(p)))
    schedule.load_state_dict(state["lr_scheduler"])
    sampler.load_state_dict(state["sampler"])
    rngs = state["rng"]
    if len(rngs) == run.world:       # another world size keeps its fresh streams
        ckpt_io.set_rng_state(rngs[run.rank], model)
    return state["epoch"], state["step"], state.get("best_val_top1_err", float("inf"))


def _check_same_variant(state, model_cfg, path):
    """A resumed run keeps its network: LRN or pooling flags that changed would go unnoticed."""
    if isinstance(state.get("config"), dict):
        changed = model_differences(from_dict(TrainConfig, state["config"]).model, model_cfg)
        if changed:
            raise TrainingError(f"{path} was trained as another variant ({'; '.join(changed)}): "
                                f"resume with its flags, or train into a new --output-dir")


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


def train(args, log=print):
    """Run the training job described by parsed arguments; returns a process exit code."""
    run = Run(args.devices, log, columns=args.columns)
    try:
        return _train(args, run)
    finally:
        run.close()


def _train(args, run):
    cfg = config_from_args(args)
    for note in configure(run.device, args.tf32, args.deterministic) + amp_note(args.amp):
        run.log(f"speed mode, departs from the paper's float32 arithmetic: {note}")
    if args.data_path is None:
        args.data_path = demo_store(args.cache_dir, run)
    classes = read_classes(args.data_path)
    num_classes = len(classes["classes"])
    run.output_lock = preflight.check(args, run, num_classes)    # held until the run ends
    torch.manual_seed(cfg.seed + run.rank)     # dropout masks: each rank its own stream
    model = build(run.placement, run.devices, num_classes, seed=cfg.seed, config=cfg.model)
    if run.device.type == "cuda":       # the weights too: cudnn's fastest convs want both channels_last
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = PaperSGD(param_groups(model, cfg.weight_decay, cfg.decay_biases), cfg.lr, cfg.momentum)
    schedule = LRSchedule(cfg.lr, cfg.plateau_patience, cfg.lr_drop, cfg.max_lr_drops, cfg.lr_steps)
    loader, sampler, transform = train_loader(args.data_path, cfg.batch_size, args.workers, cfg.seed,
                                              run.replicas, run.replica, cfg.pca_std, cfg.model.input_scale,
                                              pin_memory=run.device.type == "cuda")
    steps_per_epoch = len(sampler.indices()) // cfg.batch_size
    if steps_per_epoch == 0:
        raise TrainingError(f"{args.data_path} has {sampler.size} training images, fewer than one batch of "
                            f"{cfg.batch_size} for each of {run.replicas} replica(s): lower -b")
    os.makedirs(args.output_dir, exist_ok=True)
    ckpt_path = os.path.join(args.output_dir, "checkpoint.pt")
    start_epoch, step, best = 0, 0, float("inf")
    path = _resume_path(args)
    if path:
        state = ckpt_io.load(path)
        _check_same_variant(state, cfg.model, path)     # the network first: the likelier mistake
        if ckpt_io.model_state(state) is not state:
            ckpt_io.check_resumable(state, path)
        weights = ckpt_io.model_state(state)
        ckpt_io.check_classes(weights, num_classes, path, args.data_path)
        model.load_canonical_state_dict(weights)
        if weights is state:       # a bare state dict: its weights, and a fresh run from them
            run.log(f"starting from the weights in {path} (a bare state dict: epoch 0, fresh optimizer)")
        else:
            start_epoch, step, best = _resume_state(state, model, optimizer, schedule, sampler, run)
            run.log(f"resumed from {path}: epoch {start_epoch}, step {step}")
    set_lr(optimizer, schedule.lr)
    data_mean = torch.from_numpy(transform.mean.copy())    # predict.py needs it with the weights
    write_metric = _metrics_writer(os.path.join(args.output_dir, "metrics.jsonl"), run, step, start_epoch)

    def save(epoch, to=(ckpt_path,)):
        velocity = model.map_canonical(lambda p: optimizer.state[p].get("velocity", torch.zeros_like(p)))
        rng = ckpt_io.rng_state(model)
        rngs = [rng]
        if run.distributed:
            rngs = [None] * run.world
            dist.all_gather_object(rngs, rng)
        state = {"model": model.canonical_state_dict(), "optimizer": {"velocity": velocity},
                 "lr_scheduler": schedule.state_dict(), "epoch": epoch, "step": step, "rng": rngs,
                 "sampler": sampler.state_dict(), "args": {k: v for k, v in vars(args).items()},
                 "config": to_dict(cfg), "classes": classes, "best_val_top1_err": best,
                 "data_mean": data_mean}
        if run.main:
            for path in to:
                ckpt_io.atomic_save(state, path)

    stop = StopFlag()
    last_save = time.time()
    mean_loss = rate = float("nan")
    device = input_device(model)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            sampler.epoch = transform.epoch = epoch
            model.train()
            t0 = t_data = time.time()
            done_in_epoch, steps_here = sampler.start // cfg.batch_size, 0
            for images, labels in loader:
                data_time = time.time() - t_data
                x, y = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                with autocast(device, args.amp):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y.to(logits.device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if run.distributed:
                    model.exchange.average_gradients(model)
                due = args.checkpoint_minutes > 0 and time.time() - last_save > 60 * args.checkpoint_minutes
                loss_sum, stop_votes, due_votes = run.all_sum([loss.item(), stop.requested, due])
                mean_loss = loss_sum / run.world
                if not math.isfinite(mean_loss):
                    raise TrainingError(f"loss is {mean_loss} at epoch {epoch} step {step}: training diverged; "
                                        f"lower --lr (the last good checkpoint, {ckpt_path}, is untouched)")
                optimizer.step()
                step += 1
                done_in_epoch += 1
                steps_here += 1
                sampler.start += cfg.batch_size
                if done_in_epoch % args.print_freq == 0 or done_in_epoch == steps_per_epoch:
                    elapsed = time.time() - t0
                    rate = cfg.batch_size * run.replicas * steps_here / max(elapsed, 1e-9)
                    eta = (steps_per_epoch - done_in_epoch) * elapsed / steps_here
                    n = y.numel()
                    hit1, hit5 = _topk_errors(logits.detach(), y.to(logits.device))
                    record = {"epoch": epoch, "step": step, "loss": mean_loss, "lr": schedule.lr,
                              "img_per_s": rate, "train_top1_err": 1 - hit1 / n, "train_top5_err": 1 - hit5 / n,
                              "data_time": data_time}
                    run.log(f"Epoch: [{epoch}]  [{done_in_epoch:>{len(str(steps_per_epoch))}}/{steps_per_epoch}]  "
                            f"eta: {datetime.timedelta(seconds=int(eta))}  lr: {schedule.lr:.6g}  "
                            f"loss: {mean_loss:.4f}  top1_err: {record['train_top1_err']:.3f}  "
                            f"top5_err: {record['train_top5_err']:.3f}  img/s: {rate:.1f}  data: {data_time:.3f}")
                    write_metric(record)
                if args.stop_at_step and step >= args.stop_at_step:
                    stop_votes = 1
                if stop_votes:
                    save(epoch)
                    run.log(f"stopped by signal at epoch {epoch} step {step}: checkpoint written to {ckpt_path}; "
                            f"continue with --resume auto")
                    return 0
                if due_votes:
                    save(epoch)
                    last_save = time.time()
                t_data = time.time()
            sampler.start = 0
            top1, top5 = validate(model, run, args.data_path, cfg.batch_size, args.workers, args.amp)
            lr_before = schedule.lr
            set_lr(optimizer, schedule.step(epoch, top1))
            is_best = top1 < best
            best = min(best, top1)
            write_metric({"epoch": epoch, "step": step, "loss": mean_loss, "lr": lr_before,
                          "img_per_s": rate, "val_top1_err": top1, "val_top5_err": top5})
            run.log(f"Epoch: [{epoch}] val  top1_err: {top1:.4f}  top5_err: {top5:.4f}"
                    + (f"  (lr now {schedule.lr:.6g})" if schedule.lr != lr_before else ""))
            # One gathered state for both files: the model and velocity are 0.5 GB to collect.
            # model_best.pt first: a kill between the two then repeats the epoch, and rewrites both.
            save(epoch + 1, to=((os.path.join(args.output_dir, "model_best.pt"),) if is_best else ()) + (ckpt_path,))
            last_save = time.time()
            if run.all_sum([stop.requested])[0]:
                run.log(f"stopped by signal after epoch {epoch}: checkpoint written to {ckpt_path}")
                return 0
    finally:
        stop.restore()
    run.log(f"done: {cfg.epochs} epochs, best val top-1 error {best:.4f}; checkpoints in {args.output_dir}")
    return 0
