"""torch.hub entry points: the two-column AlexNet of Krizhevsky, Sutskever and Hinton (2012).

    import torch
    net = torch.hub.load("OWNER/alexnet_mp", "alexnet", num_classes=1000, seed=0)
    net = torch.hub.load("path/to/a/checkout", "alexnet", source="local", num_classes=10)
    net = torch.hub.load("path/to/a/checkout", "alexnet_from_checkpoint", source="local",
                         path="runs/alexnet/model_best.pt")

No pretrained weights are published and nothing is downloaded: `alexnet` starts from
the paper's initialisation (§5), drawn from `seed`; `alexnet_from_checkpoint` reads a
checkpoint file that tools/train.py (or tools/import_caffe.py) wrote. torchvision's
`alexnet` is the one-column variant without LRN; this is the paper's network, its
two columns and their per-column LRN included.
"""
# What the entry points import (torch.hub checks each before it loads one); the data
# pipeline's pillow and torchvision are imported only where images are read.
dependencies = ["torch", "numpy"]

from alexnet_mp import ModelConfig as _ModelConfig  # noqa: E402 (torch.hub reads `dependencies` first)
from alexnet_mp.distributed.placement import rank_alexnet as _rank_alexnet  # noqa: E402
from alexnet_mp.distributed.placement import two_device_alexnet as _two_device_alexnet  # noqa: E402
from alexnet_mp.eval.inference import load_for_inference as _load_for_inference  # noqa: E402
from alexnet_mp.model.net import AlexNet as _AlexNet  # noqa: E402


def alexnet(num_classes=1000, seed=0, device=None, **variant):
    """The paper's two-column AlexNet on one device (the grouped placement: the columns'
    own-column layers are grouped convolutions), initialised as §5 says from `seed`
    (None: torch's global generator).

    `variant`: ModelConfig fields for §3's ablations, e.g. columns=1 (§3.2's one-GPU net),
    lrn=False, pool_size=2, dropout=0.0. `net.canonical_state_dict()` is the checkpoint
    format every placement and tool of the project reads.
    """
    return _AlexNet(num_classes, seed=seed, config=_ModelConfig(num_classes=num_classes, **variant), device=device)


def alexnet_two_device(devices=("cuda:0", "cuda:1"), num_classes=1000, seed=0, **variant):
    """Column 0 on devices[0], column 1 on devices[1] in one process, as the paper trained
    it on two GPUs; activations cross only at conv3, fc6, fc7 and fc8 (§3.2). The same
    weights as `alexnet` from the same seed. ("cpu", "cpu") runs it without GPUs."""
    return _two_device_alexnet(devices, num_classes, seed=seed, config=_ModelConfig(num_classes=num_classes, **variant))


def alexnet_rank(device, num_classes=1000, seed=0, **variant):
    """This process's column (rank % 2) of a torchrun job, one column per process; call it
    after torch.distributed.init_process_group, in every rank (world size a multiple of 2)."""
    return _rank_alexnet(device, num_classes, seed=seed, config=_ModelConfig(num_classes=num_classes, **variant))


def alexnet_from_checkpoint(path, device=None, data_path=None):
    """A checkpoint of this project (a training checkpoint, model_best.pt, an imported Caffe
    model or a bare canonical state dict), as the network it was trained as, in eval mode,
    on `device` (default: the first GPU, else the CPU).

    The returned module also carries `classes` (the class folder names, fc8's order),
    `class_names` (human names where the store had them) and `data_mean` (the 256x256x3
    mean image to subtract, or None); `data_path`: the prepared store, for a bare state
    dict's classes and mean. Inputs: see `alexnet_mp.data.transforms.EvalTransform`.
    """
    devices = None if device is None else [str(device)]
    net, classes, names, mean = _load_for_inference(path, data_path, devices=devices)
    net.classes, net.class_names, net.data_mean = classes, names, mean
    return net
