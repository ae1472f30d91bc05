"""Checkpoints: written atomically, read with weights_only=True.

A training checkpoint is a dict with `model` (the canonical state dict),
`optimizer`, `lr_scheduler`, `epoch`, `step`, `rng`, `sampler`, `args`,
`config`, `classes`, `best_val_top1_err` and `data_mean` (composed in
`alexnet_mp.train.state`). Every reader also takes a bare canonical state dict
saved with torch.save.

`classes` is {"classes": [class keys, fc8's output order], "names": {key: human
name}}, and "placeholder": true where the keys are only numbers standing for
classes nobody named (tools/import_caffe.py without --names: "0".."N-1"). A
checkpoint with placeholders, like a bare state dict, is taken to mean a
store's classes in the store's order when the counts agree (`match_classes`).
"""
import os
import random
from dataclasses import dataclass, replace

import numpy as np
import torch

from alexnet_mp.config import ModelConfig, TrainConfig, from_dict
from alexnet_mp.errors import CheckpointError
from alexnet_mp.files import atomic_write
from alexnet_mp.model.arch import canonical_shapes, shape_variant
from alexnet_mp.model.layers import state_fits, stream_seed

# What a training checkpoint needs besides its weights to continue a run exactly.
RESUME_KEYS = {"optimizer": dict, "lr_scheduler": dict, "epoch": int, "step": int, "sampler": dict, "rng": list}
FROM_TRAIN = "use the checkpoint.pt or model_best.pt that tools/train.py wrote"


def atomic_save(obj, path):
    """torch.save to a temporary file, then rename: a crash never leaves half a checkpoint."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load(path, resume=False):
    """A checkpoint's dict, its weights checked against the network; `resume`: a
    training checkpoint must also carry everything a resumed run needs."""
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
    weights = model_state(obj)
    n = num_classes(weights, path)
    check_tensors(weights, shapes_of(obj), path)
    if weights is not obj:
        check_metadata(obj, n, path)
        if resume:
            check_resumable(obj, path)
    return obj


def model_config(ckpt):
    """The ModelConfig a checkpoint was trained with. A bare state dict carries none:
    the paper's net then, with the column count, head and BatchNorm its tensors show."""
    weights = model_state(ckpt)
    if isinstance(ckpt.get("config"), dict):
        cfg = from_dict(TrainConfig, ckpt["config"]).model      # its dropout sets the test-time scale
    else:
        cfg = ModelConfig(**(shape_variant(weights) or {}))
    return replace(cfg, num_classes=int(weights["fc8.weight"].shape[0])) if "fc8.weight" in weights else cfg


def shapes_of(ckpt, buffers=True):
    """The canonical shapes of the variant a checkpoint says it holds; `buffers=False`: of its
    parameters only (the optimizer's velocity has no BatchNorm running statistics)."""
    return canonical_shapes(config=model_config(ckpt), buffers=buffers)


def check_tensors(tensors, shapes, path, what=""):
    """Every canonical tensor present, floating point, and of its shape."""
    missing = [name for name in shapes if name not in tensors]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(f"checkpoint {path} lacks {what}{', '.join(missing[:3])}{more}: it is not a "
                              f"complete alexnet_mp checkpoint; {FROM_TRAIN}")
    for name, shape in shapes.items():
        t = tensors[name]
        if not (isinstance(t, torch.Tensor) and t.is_floating_point() and tuple(t.shape) == shape):
            found = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise CheckpointError(f"checkpoint {path}: {what}{name} is {found}, expected a float tensor of "
                                  f"shape {shape}: it was saved by another network; {FROM_TRAIN}")


def check_metadata(state, n, path):
    """The class list and the mean image a training checkpoint carries agree with its weights."""
    meta = state.get("classes")
    if meta is not None:
        classes = meta.get("classes") if isinstance(meta, dict) else None
        if not isinstance(classes, list) or len(classes) != n:
            listed = len(classes) if isinstance(classes, list) else "no"
            raise CheckpointError(f"checkpoint {path} lists {listed} classes but its fc8 has {n} outputs: "
                                  f"it was edited or mixed from two runs; {FROM_TRAIN}")
    mean = state.get("data_mean")
    if mean is not None and not (isinstance(mean, torch.Tensor) and tuple(mean.shape) == (256, 256, 3)):
        found = tuple(mean.shape) if isinstance(mean, torch.Tensor) else type(mean).__name__
        raise CheckpointError(f"checkpoint {path}: data_mean is {found}, expected the 256x256x3 mean "
                              f"image; {FROM_TRAIN}")


def check_resumable(state, path):
    """Optimizer state, schedule, position and RNG states: without them a run cannot continue exactly."""
    velocity = state.get("optimizer", {}).get("velocity") if isinstance(state.get("optimizer"), dict) else None
    if not isinstance(velocity, dict):
        raise CheckpointError(f"checkpoint {path} has weights but no optimizer state, so a run cannot "
                              f"continue from it: {FROM_TRAIN}, or start a fresh run from its weights "
                              f"with --weights {path}")
    check_tensors(velocity, shapes_of(state, buffers=False), path, "optimizer velocity ")
    wrong = [k for k, kind in RESUME_KEYS.items() if not isinstance(state.get(k), kind)]
    if wrong:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(wrong)} (or holds the wrong type), "
                              f"needed to resume a run: {FROM_TRAIN}")


def model_state(ckpt):
    """The canonical state dict of a training checkpoint or of a bare state dict."""
    return ckpt["model"] if "model" in ckpt and isinstance(ckpt["model"], dict) else ckpt


def num_classes(state, path=""):
    if not (isinstance(state.get("fc8.weight"), torch.Tensor) and state["fc8.weight"].dim() == 2):
        raise CheckpointError(f"{path or 'the checkpoint'} has no fc8.weight: it is not an alexnet_mp "
                              f"canonical state dict (save one with canonical_state_dict())")
    return int(state["fc8.weight"].shape[0])


def check_classes(state, expected, path, data_path):
    """The class COUNT of a checkpoint's weights against a store's (a resumed run)."""
    found = num_classes(state, path)
    if found != expected:
        raise CheckpointError(f"checkpoint {path} has {found} classes but {data_path} has {expected}: "
                              f"use a checkpoint trained on this data, or a new --output-dir")


def class_list(ckpt):
    """The class keys a checkpoint names in fc8's order; None for a bare state dict or placeholders."""
    meta = ckpt.get("classes")
    if not isinstance(meta, dict) or meta.get("placeholder") is True or not isinstance(meta.get("classes"), list):
        return None
    return meta["classes"]


@dataclass
class ClassMatch:
    """How a checkpoint's fc8 outputs meet a store's class list (`match_classes`)."""
    kind: str               # "same", "reordered", "placeholder", "bare" (no list), "count", "other"
    order: list = None      # "reordered": order[i] is the checkpoint's output for the store's class i
    first: str = ""         # "count", "other": the first difference, in words


def match_classes(ckpt, store_classes):
    """Compare the classes of a checkpoint (training, imported or bare) with a store's list, by key."""
    n, theirs = num_classes(model_state(ckpt)), class_list(ckpt)
    if theirs is None:
        kind = "placeholder" if isinstance(ckpt.get("classes"), dict) else "bare"
        return ClassMatch(kind if n == len(store_classes) else "count")
    if theirs == list(store_classes):
        return ClassMatch("same")
    if len(theirs) == len(store_classes) and sorted(theirs) == sorted(store_classes):
        where = {c: i for i, c in enumerate(theirs)}
        return ClassMatch("reordered", [where[c] for c in store_classes])
    missing = [c for c in store_classes if c not in set(theirs)]
    extra = [c for c in theirs if c not in set(store_classes)]
    if missing:
        first = f"the store's class {missing[0]!r} is not among the checkpoint's"
    elif extra:
        first = f"the checkpoint's class {extra[0]!r} is not among the store's"
    else:                   # a repeated key: an edited list
        first = "one of the lists repeats a class"
    more = len(missing) + len(extra) - 1
    first += f" ({more} more difference{'s' if more > 1 else ''})" if more > 0 else ""
    return ClassMatch("count" if n != len(store_classes) else "other", first=first)


def check_class_lists(ckpt, store_classes, path, data_path):
    """`match_classes`, with a one-line error where the outputs cannot be read as the store's classes."""
    match = match_classes(ckpt, store_classes)
    if match.kind == "count":
        n = num_classes(model_state(ckpt), path)
        first = f" ({match.first})" if match.first else ""
        raise CheckpointError(f"checkpoint {path} has {n} classes but {data_path} has {len(store_classes)}"
                              f"{first}: use a checkpoint trained on this data, or fine-tune this one with "
                              f"tools/train.py --weights {path}")
    if match.kind == "other":
        raise CheckpointError(f"checkpoint {path} lists other classes than {data_path}: {match.first}; use a "
                              f"checkpoint trained on these classes, or fine-tune this one with tools/train.py "
                              f"--weights {path}")
    return match


def reorder_fc8(weights, order):
    """`weights` with fc8's rows (and biases) taken in `order`: output i becomes the old output order[i]."""
    index = torch.as_tensor(order, dtype=torch.long)
    return {**weights, "fc8.weight": weights["fc8.weight"][index], "fc8.bias": weights["fc8.bias"][index]}


def placeholder_note(path, data_path, n):
    return (f"note: {path} has no class names (placeholders 0..{n - 1}, imported without --names): its "
            f"{n} outputs are read as {data_path}'s {n} classes in the store's order")


def _cuda_devices(model):
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def _stream_devices(model):
    """{column: the device its dropout draws on}: a column's layers share one device."""
    columns = getattr(model, "columns", None)
    if isinstance(columns, torch.nn.ModuleList):        # the split placements' ColumnNet
        return {col.index: next(col.parameters()).device for col in columns}
    return dict.fromkeys(model.streams.seeds, next(model.parameters()).device)


def rng_state(model):
    """Every generator a training step draws from, in types that weights_only loading
    accepts: torch's CPU generator, the generator of every CUDA device the model uses,
    the columns' dropout streams, numpy's and python's."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "cuda": {str(i): torch.cuda.get_rng_state(i) for i in _cuda_devices(model)},
            "columns": model.stream_state_dict()}


def set_rng_state(state, model, step=0):
    """Restore `rng_state`'s generators; returns None, or the line to log when some could not be.

    The CPU, numpy and python generators move anywhere. A device's generator state is
    its device type's own: the dropout streams and CUDA generators of a run saved on
    another device type (a GPU run resumed on the CPU, or the reverse) are reseeded
    from (seed, replica, column, step) instead, the same on every such resume."""
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    streams = model.streams
    reseeded = [f"column {c}'s dropout stream"
                for c in streams.load_state_dict(state.get("columns", {}), step, _stream_devices(model))]
    for index in _cuda_devices(model):
        saved = state.get("cuda", {}).get(str(index))
        if state_fits(saved, torch.device("cuda", index)):
            torch.cuda.set_rng_state(saved, index)
        else:
            torch.cuda.default_generators[index].manual_seed(
                stream_seed(streams.seed, streams.replica, min(streams.seeds), step, device_index=index))
            reseeded.append(f"cuda:{index}'s generator")
    if not reseeded:
        return None
    return (f"the checkpoint's random state was saved on another device type: {', '.join(reseeded)} "
            f"reseeded from (seed, replica, column, step {step}); weights, velocity, schedule and sampler "
            f"continue exactly, the dropout masks from here on differ from an uninterrupted run's")
