"""A training run's checkpoints: what they hold, who gathers them, and how a run resumes.

A checkpoint holds the canonical weights and velocity (so it resumes in any
placement), the schedule, the sampler's position, every rank's generators, the
arguments, the config, the classes and the mean image. Only rank 0 gathers it:
replica 0's pair sends its slices to rank 0 and every rank its generators'
states; the other replicas hold the same weights and send nothing.
"""
import os
import time

import torch

from . import checkpoint as ckpt_io
from .config import TrainConfig, from_dict, model_differences, to_dict
from .runtime import TrainingError


def resume_path(opts):
    if not opts.resume:
        return None
    if opts.resume == "auto":
        path = os.path.join(opts.output_dir, "checkpoint.pt")
        return path if os.path.isfile(path) else None
    return opts.resume


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


def resume(job):
    """Load --resume: a training checkpoint continues where it stopped; a bare state dict
    gives its weights to a fresh run."""
    path = resume_path(job.opts)
    if not path:
        return
    state = ckpt_io.load(path)
    _check_same_variant(state, job.cfg.model, path)     # the network first: the likelier mistake
    if ckpt_io.model_state(state) is not state:
        ckpt_io.check_resumable(state, path)
    weights = ckpt_io.model_state(state)
    ckpt_io.check_classes(weights, len(job.classes["classes"]), path, job.data_path)
    job.net.load_canonical_state_dict(weights)
    if weights is state:
        job.run.log(f"starting from the weights in {path} (a bare state dict: epoch 0, fresh optimizer)")
        return
    job.epoch, job.step, job.best = _resume_state(state, job.net, job.optimizer, job.schedule, job.sampler, job.run)
    job.run.log(f"resumed from {path}: epoch {job.epoch}, step {job.step}")


def checkpoint_state(job, epoch):
    """The training checkpoint, on rank 0; None on every other rank. Only replica 0's pair
    sends its slices, to rank 0; every rank sends its generators' states."""
    net, optimizer = job.net, job.optimizer
    weights = net.map_canonical(lambda p: p, writer_only=True)
    velocity = net.map_canonical(lambda p: optimizer.state[p].get("velocity", torch.zeros_like(p)),
                                 writer_only=True)
    rngs = job.run.gather_to_main(ckpt_io.rng_state(net))
    if not job.run.main:
        return None
    return {"model": weights, "optimizer": {"velocity": velocity}, "lr_scheduler": job.schedule.state_dict(),
            "epoch": epoch, "step": job.step, "rng": rngs, "sampler": job.sampler.state_dict(),
            "args": {**job.opts.args, "data_path": job.data_path}, "config": to_dict(job.cfg), "classes": job.classes,
            "best_val_top1_err": job.best,
            "data_mean": torch.from_numpy(job.transform.mean.copy())}    # predict.py needs it with the weights


def save_checkpoint(job, epoch, paths):
    """One gathered state for every file in `paths` (the weights and velocity are 0.5 GB to collect)."""
    state = checkpoint_state(job, epoch)
    if state is not None:
        for path in paths:
            ckpt_io.atomic_save(state, path)
    job.last_save = time.time()
