"""Everything a training run can check before its first step, checked before it.

A store without val/ used to fail after a whole epoch, and an output dir that
cannot be written at the first checkpoint; both lost the epoch. `check` runs
in `alexnet_mp.train.loop` before the model is built. Rank 0 does the work (only it
writes files); under torchrun every rank then raises the same error, so that
the run stops as one instead of waiting in a collective.
"""
import math
import os
import shutil

import torch.distributed as dist

from alexnet_mp.data.store import Store
from alexnet_mp.data.storecheck import read_stats
from alexnet_mp.errors import UsageError
from alexnet_mp.files import claim, write_target
from alexnet_mp.model.arch import canonical_shapes

OUTPUT_FILES = ("checkpoint.pt", "model_best.pt", "metrics.jsonl")


def checkpoint_bytes(num_classes):
    """Weights and velocity (the optimizer state) in float32; the rest is small."""
    params = sum(math.prod(shape) for shape in canonical_shapes(num_classes).values())
    return 2 * 4 * params


def check(opts, run, num_classes):
    """The store, the output dir and free space; returns the output dir's lock, to hold while training."""
    failure = lock = None
    if run.main:
        try:
            check_store(opts.data_path)
            lock = check_output_dir(opts, num_classes, run.log)
        except Exception as e:         # every rank must learn of it, not only rank 0
            failure = e
    if run.distributed:
        word = [None if failure is None else (str(failure) if isinstance(failure, UsageError)
                                              else f"{type(failure).__name__} on rank 0")]
        dist.broadcast_object_list(word, src=0)
        if word[0] is not None and failure is None:
            raise UsageError(word[0])      # printed by rank 0 only
    if failure is not None:
        raise failure
    return lock


def check_store(path):
    """Both splits open (every file consistent, at least one image each) and the statistics load."""
    for split in ("train", "val"):      # val: the error after each epoch is the plateau schedule's input
        Store(path, split)
    read_stats(path)


def check_output_dir(opts, num_classes, log):
    out = opts.output_dir
    lock = claim(out, OUTPUT_FILES, "--output-dir", log)
    ckpt = os.path.join(out, "checkpoint.pt")
    if not opts.resume and os.path.isfile(ckpt):
        raise UsageError(f"{out} already holds the checkpoint.pt of a run: continue it with --resume auto, "
                         f"or choose another --output-dir (a fresh run would overwrite it)")
    # checkpoint.pt may be a link to a bigger disk: the space that counts is where it lands.
    landing = os.path.dirname(write_target(ckpt)[0])
    need, free = 2 * checkpoint_bytes(num_classes), shutil.disk_usage(landing).free
    if free < need:
        log(f"warning: {free / 2**30:.2f} GiB free in {landing}, less than two checkpoints need "
            f"({need / 2**30:.2f} GiB: checkpoint.pt is written beside the old one, and model_best.pt): "
            f"free some space or the first checkpoint may fail")
    return lock
