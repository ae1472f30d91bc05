"""Top-5 classes of images, ten-crop by default (§4.1).

The code behind tools/predict.py, whose docstring has the exact command lines.
"""
import os
import sys

import torch

from alexnet_mp.cli import ArgumentParser, shown, tool
from alexnet_mp.data.images import IMAGE_EXTENSIONS, to_256
from alexnet_mp.data.transforms import EvalTransform
from alexnet_mp.distributed.placement import input_device
from alexnet_mp.errors import UsageError
from alexnet_mp.eval.inference import load_for_inference


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


@torch.no_grad()
def classify(model, image, transform, crops):
    x = transform(image)
    x = x.reshape(crops, *x.shape[-3:]).to(input_device(model))
    return torch.softmax(model(x).float(), dim=1).mean(0).cpu()


@tool
def main(argv=None):
    p = ArgumentParser(description="Top-5 classes of images")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-path", help="prepared store, for a bare state dict's classes and mean image")
    p.add_argument("--crops", type=int, choices=(1, 10), default=10)
    args = p.parse_args(argv)
    paths = expand(args.inputs)
    model, classes, names, mean = load_for_inference(args.checkpoint, args.data_path, need_mean=True)
    transform = EvalTransform(mean, args.crops, model.config.input_scale)
    failed = 0
    for path in paths:
        try:
            image = to_256(path)
        except Exception as e:
            print(f"{shown(path)}: not an image ({type(e).__name__}), skipped")
            failed += 1
            continue
        probs = classify(model, image, transform, args.crops)
        top = probs.topk(min(5, len(classes)))
        print(shown(path))
        for prob, i in zip(top.values.tolist(), top.indices.tolist()):
            label = classes[i] + (f" ({names[classes[i]]})" if classes[i] in names else "")
            print(f"  {prob:6.3f}  {label}")
    if failed == len(paths):
        raise UsageError(f"none of the {failed} file(s) could be read as an image (each is listed above): "
                         f"pass JPEG or PNG files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
