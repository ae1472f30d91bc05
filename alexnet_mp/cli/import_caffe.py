"""Import Caffe's bvlc_alexnet.caffemodel as a checkpoint that every tool takes without flags.

The code behind tools/import_caffe.py, whose docstring has the exact command lines.
"""
import os
import sys
import time

from alexnet_mp.caffe.convert import import_caffemodel, slots
from alexnet_mp.cli import ArgumentParser, check_output_file, shown, tool
from alexnet_mp.errors import UsageError
from alexnet_mp.checkpoint import atomic_save

ZOO_SHA1 = "9116a64c0fbe4459d18f4bb6b56d647b63920377"      # BVLC model zoo, models/bvlc_alexnet/readme.md


def parse_args(argv):
    p = ArgumentParser(description="Import Caffe's bvlc_alexnet.caffemodel (or a fine-tune of it) as an "
                                   "alexnet_mp checkpoint")
    p.add_argument("caffemodel", help="a trained Caffe net of bvlc_alexnet's shape (either NetParameter encoding)")
    p.add_argument("--mean", required=True, help="its mean image: Caffe's imagenet_mean.binaryproto or "
                                                 "ilsvrc_2012_mean.npy (BGR, 3x256x256)")
    p.add_argument("--names", help="Caffe's synset_words.txt: the class list (wnids) and names; without it "
                                   "the classes are numbered")
    p.add_argument("--output", required=True, help="the checkpoint to write, e.g. caffe_alexnet.pt")
    p.add_argument("--force", action="store_true", help="replace --output if it exists")
    args = p.parse_args(argv)
    check_output_file(args.output, "--output", example="caffe_alexnet.pt")
    if os.path.lexists(args.output) and not args.force:
        raise UsageError(f"--output {args.output} exists: pass --force to replace it, or choose another path")
    return args


def report(done, args, seconds):
    cfg = done.config
    zoo = " (the model zoo's bvlc_alexnet)" if done.sha1 == ZOO_SHA1 else ""
    print(f"read {shown(args.caffemodel)}: {done.encoding}, net {done.net_name!r}, sha1 {done.sha1}{zoo}")
    print(f"  AlexNet's {len(slots())} layers in bvlc_alexnet's order; skipped around them: "
          f"{', '.join(done.around) or 'none'}")
    print(f"  {cfg.num_classes} classes; LRN size {cfg.lrn_size}, alpha {cfg.lrn_alpha:g}/{cfg.lrn_size}, beta "
          f"{cfg.lrn_beta:g}, k {cfg.lrn_k:g}, one window across both columns; max-pool {cfg.pool_size}/"
          f"{cfg.pool_stride}; {cfg.crop}x{cfg.crop} crops, no padding before conv1")
    print(f"  converted: conv1 reads RGB (Caffe's BGR channels reversed); fc7 and fc8 weights "
          f"x{1 / (1 - cfg.dropout):g} (Caffe's inverted dropout into the paper's x{1 - cfg.dropout:g} "
          f"at test, spec §1); mean image {shown(args.mean)} from BGR to RGB 256x256x3")
    if not done.names_given:
        print(f"  no --names: the classes are numbered 0..{cfg.num_classes - 1}, recorded as placeholders (a store "
              f"of {cfg.num_classes} classes is taken in its own order); pass --names synset_words.txt for "
              f"ImageNet's wnids and names")
    elif not done.sorted_classes:
        print(f"warning: the classes of {shown(args.names)} are not in sorted order; a store made by "
              f"tools/prepare_data.py sorts its class folders, so its labels would not be fc8's")
    print(f"wrote {shown(args.output)} in {seconds:.1f} s: evaluate, predict and visualize it as it is; not "
          f"resumable: fine-tune with tools/train.py --weights {shown(args.output)} --data-path STORE")


@tool
def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    done = import_caffemodel(args.caffemodel, args.mean, args.names)
    atomic_save(done.checkpoint, args.output)
    report(done, args, time.time() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
