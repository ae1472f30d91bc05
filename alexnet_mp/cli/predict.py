"""Top-5 classes of images, ten-crop by default (§4.1).

The code behind tools/predict.py, whose docstring has the exact command lines.
"""
import os
import sys

import numpy as np
import torch

from alexnet_mp.cli import ArgumentParser, add_device_flag, shown, tool
from alexnet_mp.data.images import IMAGE_EXTENSIONS, to_256
from alexnet_mp.data.transforms import EvalTransform
from alexnet_mp.distributed.placement import input_device, one_device
from alexnet_mp.errors import UsageError
from alexnet_mp.eval.inference import load_for_inference
from alexnet_mp.numerics import configure


def expand(paths):
    """The images to classify: files as given (whatever their name), and the files with an
    image extension in folders. Every input must exist, and some image must be found."""
    found = []
    for path in paths:
        if not os.path.exists(path):
            raise UsageError(f"{path} does not exist: pass image files or folders holding them")
        if os.path.isdir(path):
            found += [os.path.join(d, name) for d, _, names in sorted(os.walk(path))
                      for name in sorted(names) if name.lower().endswith(IMAGE_EXTENSIONS)]
        else:
            found.append(path)
    if not found:
        raise UsageError(f"no images in {', '.join(paths)} (none ends in {'/'.join(IMAGE_EXTENSIONS[:3])}...): "
                         f"pass image files or folders holding them")
    return found


# Images per forward: 80 crops at ten-crop, an evaluation batch's worth, modest on a CPU.
IMAGES_PER_FORWARD = 8


@torch.no_grad()
def classify(model, images, transform, crops, k=5):
    """(probabilities, classes), each (len(images), k) numpy, best first: the top-k of the mean
    of the crops' softmax (§4.1). One forward for all the images and one copy back, not one
    per image (each copy makes the host wait for the device)."""
    x = torch.cat([t.reshape(crops, *t.shape[-3:]) for t in map(transform, images)])
    probs = torch.softmax(model(x.to(input_device(model))).float(), dim=1).reshape(len(images), crops, -1).mean(1)
    top = probs.topk(min(k, probs.shape[1]), dim=1)
    # float64 holds the class indices and the float32 probabilities exactly: one copy for both.
    both = torch.cat([top.values.double(), top.indices.double()], dim=1).cpu().numpy()
    k = top.values.shape[1]
    return both[:, :k].astype(np.float32), both[:, k:].astype(np.int64)


def report(model, paths, transform, crops, classes, names):
    """Print each image's top 5 in the order given, `paths` classified in one forward; returns
    how many were no image (each said in its place)."""
    images = []
    for path in paths:
        try:
            images.append(to_256(path))
        except Exception as e:
            images.append(e)
    readable = [img for img in images if not isinstance(img, Exception)]
    answers = iter(zip(*classify(model, readable, transform, crops))) if readable else iter(())
    for path, image in zip(paths, images):
        if isinstance(image, Exception):
            print(f"{shown(path)}: not an image ({type(image).__name__}), skipped")
            continue
        print(shown(path))
        for prob, i in zip(*next(answers)):
            label = classes[i] + (f" ({names[classes[i]]})" if classes[i] in names else "")
            print(f"  {prob:6.3f}  {label}")
    return len(paths) - len(readable)


@tool
def main(argv=None):
    p = ArgumentParser(description="Top-5 classes of images")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-path", help="prepared store: its classes and mean image (the checkpoint's "
                                       "classes must be the store's, in any order)")
    p.add_argument("--crops", type=int, choices=(1, 10), default=10)
    add_device_flag(p)
    args = p.parse_args(argv)
    paths = expand(args.inputs)
    devices = [one_device(args.device, warn=lambda line: print(line, file=sys.stderr))] if args.device else None
    model, classes, names, mean = load_for_inference(args.checkpoint, args.data_path, devices=devices,
                                                     need_mean=True, log=print)
    configure(input_device(model))      # float32 as tools/evaluate.py runs it (a GPU would run TF32 convs)
    transform = EvalTransform(mean, args.crops, model.config.input_scale, crop=model.config.crop)
    failed = sum(report(model, paths[i:i + IMAGES_PER_FORWARD], transform, args.crops, classes, names)
                 for i in range(0, len(paths), IMAGES_PER_FORWARD))
    if failed == len(paths):
        raise UsageError(f"none of the {failed} file(s) could be read as an image (each is listed above): "
                         f"pass JPEG or PNG files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
