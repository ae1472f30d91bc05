"""What a run saves and restores: its `TrainState`, and a checkpoint composed from its parts.

A checkpoint holds the canonical weights and velocity (so it resumes in any
placement), the schedule, the sampler's position, every rank's generators, the
options, the config, the classes and the mean image. Each part contributes its
own `state_dict`: the schedule, the sampler, the columns' streams (inside the
generators' states) and `TrainState` (epoch, step, best). Only rank 0 gathers it:
replica 0's pair sends its slices to rank 0 and every rank its generators'
states; the other replicas hold the same weights and send nothing.
"""
import math
import os
from dataclasses import asdict, dataclass

import torch

from alexnet_mp.config import adopt_variant, to_dict
from alexnet_mp.errors import TrainingError
from alexnet_mp import checkpoint as ckpt_io
from alexnet_mp.train.optim import load_velocity, velocity_state


@dataclass
class TrainState:
    """Where a run stands: the epoch it is in (or starts next), the global step, the best
    centre-crop validation top-1 error so far."""
    epoch: int = 0
    step: int = 0
    best: float = math.inf

    def state_dict(self):
        return {"epoch": self.epoch, "step": self.step, "best_val_top1_err": self.best}

    def load_state_dict(self, state):
        self.epoch, self.step = state["epoch"], state["step"]
        self.best = state.get("best_val_top1_err", math.inf)


def resume_path(opts):
    if not opts.resume:
        return None
    if opts.resume == "auto":
        path = os.path.join(opts.output_dir, "checkpoint.pt")
        return path if os.path.isfile(path) else None
    return opts.resume


def _take_variant(saved, cfg, path):
    """A resumed run continues the network it saved (columns, LRN, pooling, crop, input scale), whatever
    flags started it (a --weights fine-tune takes its checkpoint's variant without any); only a variant
    flag given now that asks for another network is refused."""
    def refuse(clash):
        changed = "; ".join(f"{name}: {theirs!r} -> {asked!r}" for name, theirs, asked in clash)
        return TrainingError(f"{path} was trained as another variant ({changed}): drop those flags to resume "
                             f"it as it was trained, or train into a new --output-dir")
    return adopt_variant(cfg, ckpt_io.model_config(saved), refuse)


def load_resume(opts, cfg):
    """(the --resume checkpoint or None, `cfg` with the checkpoint's network): checked before
    anything is built, so the placement can follow the checkpoint's network."""
    path = resume_path(opts)
    if not path:
        return None, cfg
    saved = ckpt_io.load(path)
    if ckpt_io.model_state(saved) is saved:
        raise TrainingError(f"--resume {path} is a bare state dict (weights only), which has no run to continue: "
                            f"start a fresh run from its weights with --weights {path}")
    cfg = _take_variant(saved, cfg, path)       # the network first: the likelier mistake
    ckpt_io.check_resumable(saved, path)
    return saved, cfg


def resume(saved, opts, run, parts, state):
    """Continue from the loaded --resume checkpoint: the weights, then every part's own state
    and the `TrainState`."""
    path = resume_path(opts)
    ckpt_io.check_classes(saved["model"], len(parts.classes["classes"]), path, parts.data_path)
    parts.net.load_canonical_state_dict(saved["model"])
    load_velocity(parts.net, parts.optimizer, saved["optimizer"]["velocity"])
    parts.schedule.load_state_dict(saved["lr_scheduler"])
    parts.sampler.load_state_dict(saved["sampler"])
    rngs = saved["rng"]
    # Another world size keeps its fresh streams; another device type reseeds some (the note says which).
    note = ckpt_io.set_rng_state(rngs[run.rank], parts.net, saved["step"]) if len(rngs) == run.world else None
    state.load_state_dict(saved)
    run.log(f"resumed from {path}: epoch {state.epoch}, step {state.step}" + (f"; {note}" if note else ""))


def checkpoint_state(opts, cfg, run, parts, state):
    """The training checkpoint, on rank 0; None on every other rank."""
    weights = parts.net.canonical_state_dict(writer_only=True)    # BatchNorm's statistics too: replica 0's
    velocity = velocity_state(parts.net, parts.optimizer, writer_only=True)
    rngs = run.gather_to_main(ckpt_io.rng_state(parts.net))
    if not run.main:
        return None
    return {"model": weights, "optimizer": {"velocity": velocity}, "lr_scheduler": parts.schedule.state_dict(),
            "sampler": parts.sampler.state_dict(), "rng": rngs, **state.state_dict(),
            "args": {**asdict(opts), "data_path": parts.data_path}, "config": to_dict(cfg),
            "classes": parts.classes,
            "data_mean": torch.from_numpy(parts.transform.mean.copy())}    # predict.py needs it with the weights


def save_checkpoint(opts, cfg, run, parts, state, paths):
    """One gathered state for every file in `paths` (the weights and velocity are 0.5 GB to collect)."""
    saved = checkpoint_state(opts, cfg, run, parts, state)
    if saved is not None:
        for path in paths:
            ckpt_io.atomic_save(saved, path)
