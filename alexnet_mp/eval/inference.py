"""Load a checkpoint for inference, with what a prediction needs: classes and the mean image.

The network comes back as it was trained: the checkpoint's config says which
variant it is (columns, LRN, pooling, dropout, input scale), so no tool needs
flags to rebuild it.
"""
import numpy as np
import torch

from alexnet_mp.data.storecheck import read_classes, read_stats
from alexnet_mp.distributed.placement import build, gpu_layout
from alexnet_mp import checkpoint as ckpt_io


def load_for_inference(path, data_path=None, placement="grouped", devices=None, need_mean=False, state=None,
                       topology=None, match_classes=True, log=None):
    """(model in eval mode, class folder names, human names, mean image or None).

    Classes and the mean image come from the training checkpoint when it carries
    them, else from the prepared store at `data_path`. With a store, output i is
    the store's class i: the checkpoint's class list must be the store's, or the
    same classes in another order (fc8's rows are then reordered by name); a
    checkpoint without names (a bare state dict, an import's placeholders) must
    have the store's class count. Anything else is a one-line error.
    `match_classes=False`: the store gives only the mean image (fc7 features need no classes).
    `model.config.input_scale` says how to scale its inputs (`alexnet_mp.data.transforms`).
    `state` is the checkpoint already loaded from `path`, if the caller has it.
    `topology`: the run's process groups, for the rank placement (made anew if None).
    `log`: where the note on placeholder names or reordered classes goes (None: nowhere).
    """
    state = ckpt_io.load(path) if state is None else state
    weights = ckpt_io.model_state(state)
    n = ckpt_io.num_classes(weights, path)
    meta = state.get("classes") if isinstance(state.get("classes"), dict) else None
    mean = state.get("data_mean")
    if data_path is not None:
        if match_classes:
            meta = read_classes(data_path)
            weights = _map_outputs(state, weights, meta["classes"], path, data_path, log or (lambda *a: None))
        if need_mean:
            mean = read_stats(data_path)[0]
    if meta is None:
        meta = {"classes": [str(i) for i in range(n)], "names": {}}
    if need_mean and mean is None:
        raise ckpt_io.CheckpointError(f"{path} carries no mean image: pass --data-path with the prepared "
                                      f"store it was trained on")
    if devices is None:
        devices = ["cuda:0" if torch.cuda.is_available() else "cpu"]
    model = build(placement, devices, n, seed=0, config=ckpt_io.model_config(state), topology=topology)
    model.load_canonical_state_dict(weights)
    model = gpu_layout(model, devices)
    if isinstance(mean, torch.Tensor):
        mean = mean.numpy()
    return model.eval(), meta["classes"], meta.get("names", {}), (None if mean is None else np.asarray(mean))


def _map_outputs(state, weights, store_classes, path, data_path, log):
    """The weights whose output i is the store's class i (`ckpt_io.check_class_lists`)."""
    match = ckpt_io.check_class_lists(state, store_classes, path, data_path)
    if match.kind == "placeholder":
        log(ckpt_io.placeholder_note(path, data_path, len(store_classes)))
    if match.kind == "reordered":
        log(f"note: {path} lists {data_path}'s classes in another order: its outputs are mapped to the "
            f"store's classes by name")
        return ckpt_io.reorder_fc8(weights, match.order)
    return weights
