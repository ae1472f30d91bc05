"""Checkpoints: written atomically, read with weights_only=True.

A training checkpoint is a dict with `model` (the canonical state dict),
`optimizer`, `lr_scheduler`, `epoch`, `step`, `rng`, `sampler`, `args`,
`config` and `classes`. Every reader also takes a bare canonical state dict
saved with torch.save.
"""
import os
import random

import numpy as np
import torch

from .atomic import atomic_write
from .errors import UsageError


class CheckpointError(UsageError):
    """A checkpoint that cannot be used, worded as one line with its fix."""


def atomic_save(obj, path):
    """torch.save to a temporary file, then rename: a crash never leaves half a checkpoint."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load(path):
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}: pass the checkpoint.pt or model_best.pt "
                              f"that tools/train.py wrote to its --output-dir")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path} ({reason}): the file is corrupt or not "
                              f"an alexnet_mp checkpoint; use another checkpoint.pt or model_best.pt") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict: "
                              f"save checkpoints with model.canonical_state_dict()")
    return obj


def model_state(ckpt):
    """The canonical state dict of a training checkpoint or of a bare state dict."""
    return ckpt["model"] if "model" in ckpt and isinstance(ckpt["model"], dict) else ckpt


def num_classes(state, path=""):
    if "fc8.weight" not in state:
        raise CheckpointError(f"{path or 'the checkpoint'} has no fc8.weight: it is not an alexnet_mp "
                              f"canonical state dict (save one with canonical_state_dict())")
    return int(state["fc8.weight"].shape[0])


def check_classes(state, expected, path, data_path):
    found = num_classes(state, path)
    if found != expected:
        raise CheckpointError(f"checkpoint {path} has {found} classes but {data_path} has {expected}: "
                              f"use a checkpoint trained on this data, or a new --output-dir")


def _cuda_devices(model):
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def rng_state(model):
    """Every generator a training step draws from, in types that weights_only loading
    accepts: torch's CPU generator, the generator of every CUDA device the model uses,
    the columns' dropout streams, numpy's and python's."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "cuda": {str(i): torch.cuda.get_rng_state(i) for i in _cuda_devices(model)},
            "columns": model.stream_state_dict()}


def set_rng_state(state, model):
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    for index in _cuda_devices(model):
        if str(index) in state.get("cuda", {}):
            torch.cuda.set_rng_state(state["cuda"][str(index)], index)
    model.load_stream_state_dict(state.get("columns", {}))
