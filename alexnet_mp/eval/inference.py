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
                       topology=None):
    """(model in eval mode, class folder names, human names, mean image or None).

    Classes and the mean image come from the training checkpoint when it carries
    them, else from the prepared store at `data_path` (which then must match).
    `model.config.input_scale` says how to scale its inputs (`alexnet_mp.data.transforms`).
    `state` is the checkpoint already loaded from `path`, if the caller has it.
    `topology`: the run's process groups, for the rank placement (made anew if None).
    """
    state = ckpt_io.load(path) if state is None else state
    weights = ckpt_io.model_state(state)
    n = ckpt_io.num_classes(weights, path)
    meta = state.get("classes") if isinstance(state.get("classes"), dict) else None
    mean = state.get("data_mean")
    if data_path is not None:
        meta = read_classes(data_path)
        ckpt_io.check_classes(weights, len(meta["classes"]), path, data_path)
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
