"""Train the two-column AlexNet with the paper's recipe (§5).

The code behind tools/train.py, whose docstring has the exact command lines.
"""
import os
import sys
from dataclasses import fields

from alexnet_mp.cli import (ArgumentParser, add_device_flag, add_speed_flags, add_variant_flags, check_one_placement,
                            check_ranges, epoch_list, tool)
from alexnet_mp.config import ModelConfig, TrainConfig
from alexnet_mp.data.demo_set import default_cache_dir, demo_store
from alexnet_mp.distributed.placement import DEVICE_NAME as DEVICE
from alexnet_mp.errors import UsageError
from alexnet_mp.train.loop import Options, train

PAPER, PAPER_MODEL = TrainConfig(), ModelConfig()
# The flags that set the network are those whose argparse dest is a ModelConfig field (or named in
# DEST_FIELDS). They default to None, the paper's value filled in by config_from_args: a flag given,
# even at the paper's value, is one the user asked for (TrainConfig.asked).
DEST_FIELDS = {"pool": "pool_size"}
MODEL_FIELDS = {f.name for f in fields(ModelConfig)}


def model_fields(args):
    """{ModelConfig field: value} of the network flags given on the command line."""
    named = {DEST_FIELDS.get(dest, dest): value for dest, value in vars(args).items()}
    return {name: value for name, value in named.items() if name in MODEL_FIELDS and value is not None}


def parser():
    p = ArgumentParser(description="Train the paper's two-column AlexNet")
    p.add_argument("--data-path", help="prepared store (tools/prepare_data.py); default: the demo set")
    p.add_argument("--output-dir", default="runs/alexnet", help="checkpoints and metrics.jsonl")
    p.add_argument("--devices", help="two devices for the two-device placement, e.g. cuda:0,cuda:1; under "
                                     "torchrun 'cuda' (one GPU per rank, else an error) or 'cpu' (gloo)")
    add_device_flag(p)
    p.add_argument("-b", "--batch-size", type=int, default=PAPER.batch_size, help="images per replica")
    p.add_argument("--epochs", type=int, default=PAPER.epochs)
    p.add_argument("--lr", type=float, default=PAPER.lr)
    p.add_argument("--momentum", type=float, default=PAPER.momentum)
    p.add_argument("--wd", "--weight-decay", dest="wd", type=float, default=PAPER.weight_decay)
    p.add_argument("--decay-biases", action="store_true", help="also decay biases (the paper decays weights)")
    p.add_argument("--plateau-patience", type=int, default=PAPER.plateau_patience,
                   help="epochs without a new best val error before lr /= 10")
    p.add_argument("--lr-steps", type=epoch_list, default=[], help="fixed lr drops at these epochs, e.g. 30,60,80")
    p.add_argument("--dropout", type=float, help=f"default: the paper's {PAPER_MODEL.dropout} (§4.2)")
    p.add_argument("--init-std", type=float, help=f"default: the paper's {PAPER_MODEL.init_std} (§5)")
    p.add_argument("--pca-std", type=float, default=PAPER.pca_std)
    p.add_argument("-j", "--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="data loading processes per rank")
    p.add_argument("--resume", help="'auto' (OUTPUT_DIR/checkpoint.pt if present) or a checkpoint path")
    p.add_argument("--weights", help="start a fresh run (epoch 0, new optimizer) from this checkpoint's weights: "
                                     "fine-tuning; the network is the checkpoint's")
    p.add_argument("--checkpoint-minutes", type=float, default=30.0, help="also checkpoint this often (0: off)")
    p.add_argument("--print-freq", type=int, default=10)
    p.add_argument("--stop-at-step", type=int, default=0,
                   help="stop cleanly, as on SIGTERM, after this global step (time-boxed jobs, tests)")
    p.add_argument("--seed", type=int, default=PAPER.seed)
    add_speed_flags(p)
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms only, cudnn autotuning off: GPU runs resume bit for bit")
    p.add_argument("--cache-dir", default=default_cache_dir(), help="where the demo set is generated")
    add_variant_flags(p)
    network = [dest for dest in vars(p.parse_args([])) if DEST_FIELDS.get(dest, dest) in MODEL_FIELDS]
    p.set_defaults(**dict.fromkeys(network))
    return p


def check_args(args):
    """Every argument's range, before anything is read or built: one line naming the flag and the fix."""
    check_ranges(args)
    check_one_placement(args)
    if args.head == "gap" and args.dropout is not None:
        raise UsageError(f"--dropout {args.dropout:g} with --head gap: dropout acts on fc6 and fc7 (§4.2), which "
                         f"the gap head does not have; drop --dropout")
    if args.devices is not None:
        names = [d.strip() for d in args.devices.split(",")]
        bad = [d for d in names if not DEVICE.match(d)]
        if bad or not names:
            raise UsageError(f"--devices {args.devices}: '{bad[0] if bad else ''}' is not a device; "
                             f"write two devices as cuda:0,cuda:1 (or cpu,cpu)")
    for flag, path in (("--resume", args.resume if args.resume != "auto" else None), ("--weights", args.weights)):
        if path is not None and not os.path.isfile(path):
            raise UsageError(f"{flag} {path}: no such file; pass " + (
                "'auto' (OUTPUT_DIR/checkpoint.pt if present) or the path of a checkpoint.pt" if flag == "--resume"
                else "a checkpoint.pt, model_best.pt or an imported checkpoint"))
    return args


def config_from_args(args):
    # --dropout, --init-std and §3's ablations and failure modes (the "variants" flags)
    given = model_fields(args)
    model = ModelConfig(**given)
    return TrainConfig(batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                       weight_decay=args.wd, decay_biases=args.decay_biases, epochs=args.epochs,
                       plateau_patience=args.plateau_patience, lr_steps=tuple(args.lr_steps),
                       pca_std=args.pca_std, seed=args.seed, model=model, asked=tuple(sorted(given)))


def options_from_args(args, data_path):
    return Options(data_path=data_path, output_dir=args.output_dir, devices=args.devices, device=args.device,
                   workers=args.workers,
                   resume=args.resume, weights=args.weights, checkpoint_minutes=args.checkpoint_minutes,
                   print_freq=args.print_freq, stop_at_step=args.stop_at_step, amp=args.amp, tf32=args.tf32,
                   deterministic=args.deterministic)


@tool
def main(argv=None):
    args = check_args(parser().parse_args(argv))
    speaks = os.environ.get("RANK", "0") == "0"         # under torchrun, rank 0 prints
    store = args.data_path or demo_store(args.cache_dir, log=print if speaks else (lambda *a: None))
    return train(options_from_args(args, store), config_from_args(args)).code


if __name__ == "__main__":
    sys.exit(main())
