"""A fresh run from a checkpoint's weights (`--weights`): fine-tuning, from one of this
project's checkpoints or an imported one.

The variant is the checkpoint's (its columns, LRN, pooling, crop, input scale): the
weights only mean something in the network they were trained in. Epoch 0, a new
optimizer and schedule; the store's own mean image and PCA, since every layer then
adapts to the new images. Where the classes differ from the store's (their count,
or the list the checkpoint carries), fc8 is drawn anew as §5 draws it and every
other layer keeps the checkpoint's weights.
"""
from dataclasses import fields, replace

from alexnet_mp.config import ModelConfig
from alexnet_mp.errors import TrainingError
from alexnet_mp import checkpoint as ckpt_io

# Not part of the variant: the class count follows the store, the init is spent.
NOT_VARIANT = ("num_classes", "init", "init_std")


def weights_config(saved, path, cfg):
    """`cfg` with the checkpoint's network; a variant field set away from the paper's
    default that contradicts the checkpoint is a one-line error."""
    theirs, paper = ckpt_io.model_config(saved), ModelConfig()
    clash = [f"{f.name}: {getattr(theirs, f.name)!r} in the checkpoint, {getattr(cfg.model, f.name)!r} asked"
             for f in fields(ModelConfig) if f.name not in NOT_VARIANT
             and getattr(cfg.model, f.name) != getattr(paper, f.name)
             and getattr(cfg.model, f.name) != getattr(theirs, f.name)]
    if clash:
        raise TrainingError(f"--weights {path} holds another variant ({'; '.join(clash)}): drop the variant "
                            f"flags, the run takes the checkpoint's network")
    keep = {name: getattr(cfg.model, name) for name in NOT_VARIANT}
    return replace(cfg, model=replace(theirs, **keep))


def start_from_weights(saved, path, parts, run):
    """Load the checkpoint's weights into the new run's network; fc8 stays the fresh one
    (§5's draw) where the class counts differ. Every rank calls this (a gather in the rank placement)."""
    weights = ckpt_io.model_state(saved)
    theirs, ours = ckpt_io.num_classes(weights, path), parts.classes["classes"]
    listed = saved.get("classes", {}).get("classes") if isinstance(saved.get("classes"), dict) else None
    if theirs != len(ours) or (listed is not None and listed != ours):
        why = (f"has {theirs} classes and the store {len(ours)}" if theirs != len(ours)
               else "lists other classes than the store's (or in another order)")
        fresh = parts.net.canonical_state_dict()
        weights = {**weights, "fc8.weight": fresh["fc8.weight"], "fc8.bias": fresh["fc8.bias"]}
        run.log(f"--weights {path} {why}: fc8 is drawn anew (§5: N(0, 0.01^2), bias 0); conv1..fc7 start "
                f"from the checkpoint")
    else:
        run.log(f"--weights {path}: the same {theirs} classes" + (" as the store's" if listed else "")
                + ", so fc8 is kept")
    parts.net.load_canonical_state_dict(weights)
    run.log(f"starting from the weights in {path} (epoch 0, fresh optimizer)")
