"""A fresh run from a checkpoint's weights (`--weights`): fine-tuning, from one of this
project's checkpoints or an imported one.

The variant is the checkpoint's (its columns, LRN, pooling, crop, input scale): the
weights only mean something in the network they were trained in. A variant flag given
on the command line that asks for another network, even the paper's own value
(`--columns 2` with a one-column checkpoint), is a one-line error. Epoch 0, a new
optimizer and schedule; the store's own mean image and PCA, since every layer then
adapts to the new images.

fc8 is kept where its outputs are the store's classes: the same list, or the same
classes in another order (its rows are then reordered by name), or a checkpoint
without class names (a bare state dict, an import's placeholders) with the store's
class count. Otherwise (another count, other classes) fc8 is drawn anew as the run's
--init draws it (§5) and every other layer keeps the checkpoint's weights.
"""
from alexnet_mp.config import adopt_variant
from alexnet_mp.errors import TrainingError
from alexnet_mp import checkpoint as ckpt_io


def weights_config(saved, path, cfg):
    """`cfg` with the checkpoint's network; a variant field the run asked for (on its command
    line, or away from the paper's default) that contradicts the checkpoint is a one-line error."""
    def refuse(clash):
        said = "; ".join(f"{name}: {theirs!r} in the checkpoint, {asked!r} asked" for name, theirs, asked in clash)
        return TrainingError(f"--weights {path} holds another variant ({said}): drop those flags, the run takes "
                             f"the checkpoint's network")
    return adopt_variant(cfg, ckpt_io.model_config(saved), refuse)


def init_words(cfg):
    """How the run draws a fresh fc8, in the words of its --init and --init-std."""
    if cfg.init == "torch":
        return "--init torch: PyTorch's default, weights and bias ~ U(-1/sqrt(4096), 1/sqrt(4096))"
    return f"§5: N(0, {cfg.init_std:g}^2), bias 0"


def _kept(match, path, n):
    """The log line for an fc8 that is kept, by how its classes met the store's."""
    return {"same": f"--weights {path}: the same {n} classes as the store's, so fc8 is kept",
            "reordered": f"--weights {path} lists the store's {n} classes in another order: fc8 is kept, its "
                         f"rows reordered by name to the store's order",
            "placeholder": f"--weights {path} has no class names (placeholders, imported without --names) and "
                           f"the store's count, {n}: fc8 is kept, its outputs taken as the store's classes in "
                           f"the store's order",
            "bare": f"--weights {path}: the same {n} classes, so fc8 is kept"}[match.kind]


def start_from_weights(saved, path, parts, run):
    """Load the checkpoint's weights into the new run's network, fc8 kept or reordered where its
    outputs are the store's classes, the fresh one (the run's init) otherwise. Every rank calls
    this (a gather in the rank placement)."""
    weights, ours = ckpt_io.model_state(saved), parts.classes["classes"]
    match = ckpt_io.match_classes(saved, ours)
    if match.kind in ("count", "other"):
        theirs = ckpt_io.num_classes(weights, path)
        why = (f"has {theirs} classes and the store {len(ours)}" if match.kind == "count"
               else f"lists other classes than the store's ({match.first})")
        fresh = parts.net.canonical_state_dict()
        weights = {**weights, "fc8.weight": fresh["fc8.weight"], "fc8.bias": fresh["fc8.bias"]}
        run.log(f"--weights {path} {why}: fc8 is drawn anew ({init_words(parts.net.config)}); conv1..fc7 "
                f"start from the checkpoint")
    else:
        if match.kind == "reordered":
            weights = ckpt_io.reorder_fc8(weights, match.order)
        run.log(_kept(match, path, len(ours)))
    parts.net.load_canonical_state_dict(weights)
    run.log(f"starting from the weights in {path} (epoch 0, fresh optimizer)")
