"""Train the two-column AlexNet with the paper's recipe (§5).

The code behind tools/train.py, whose docstring has the exact command lines.
"""
import argparse
import math
import os
import re
import sys

from alexnet_mp.backends import AMP_DTYPES
from alexnet_mp.config import COLUMN_CHOICES, INIT_CHOICES, INPUT_SCALE_CHOICES, ModelConfig, TrainConfig
from alexnet_mp.cli import ArgumentParser, tool
from alexnet_mp.errors import UsageError
from alexnet_mp.train import default_cache_dir, demo_store_path, train

PAPER, PAPER_MODEL = TrainConfig(), ModelConfig()


def _ints(text):
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of epochs, e.g. 30,60,80")


def parser():
    p = ArgumentParser(description="Train the paper's two-column AlexNet")
    p.add_argument("--data-path", help="prepared store (tools/prepare_data.py); default: the demo set")
    p.add_argument("--output-dir", default="runs/alexnet", help="checkpoints and metrics.jsonl")
    p.add_argument("--devices", help="two devices for the two-device placement, e.g. cuda:0,cuda:1; under "
                                     "torchrun 'cuda' (one GPU per rank, else an error) or 'cpu' (gloo)")
    p.add_argument("-b", "--batch-size", type=int, default=PAPER.batch_size, help="images per replica")
    p.add_argument("--epochs", type=int, default=PAPER.epochs)
    p.add_argument("--lr", type=float, default=PAPER.lr)
    p.add_argument("--momentum", type=float, default=PAPER.momentum)
    p.add_argument("--wd", "--weight-decay", dest="wd", type=float, default=PAPER.weight_decay)
    p.add_argument("--decay-biases", action="store_true", help="also decay biases (the paper decays weights)")
    p.add_argument("--plateau-patience", type=int, default=PAPER.plateau_patience,
                   help="epochs without a new best val error before lr /= 10")
    p.add_argument("--lr-steps", type=_ints, default=[], help="fixed lr drops at these epochs, e.g. 30,60,80")
    p.add_argument("--dropout", type=float, default=PAPER_MODEL.dropout)
    p.add_argument("--init-std", type=float, default=PAPER_MODEL.init_std)
    p.add_argument("--pca-std", type=float, default=PAPER.pca_std)
    p.add_argument("-j", "--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="data loading processes per rank")
    p.add_argument("--resume", help="'auto' (OUTPUT_DIR/checkpoint.pt if present) or a checkpoint path")
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
    return p


def add_speed_flags(p):
    """The opt-in speed modes that depart from the paper's float32 arithmetic (README: deviations)."""
    p.add_argument("--amp", choices=sorted(AMP_DTYPES),
                   help="autocast speed mode (LRN, softmax and loss stay float32); not the paper's arithmetic")
    p.add_argument("--tf32", action="store_true",
                   help="TF32 convolutions and matmuls on Ampere or newer GPUs; not the paper's float32")


def add_variant_flags(p):
    """§3's ablations and two failure modes of re-implementations; each departs from the paper when set.
    --dropout 0 and --pca-std 0 are the other two ablations. All are saved in the checkpoint's config."""
    v = p.add_argument_group("variants (departures from the paper, for tools/study.py)")
    v.add_argument("--columns", type=int, choices=COLUMN_CHOICES, default=PAPER_MODEL.columns,
                   help="1: §3.2's one-GPU net (conv1-4 with 48, 128, 192, 192 kernels; conv5, fc6, fc7 "
                        "not halved); grouped placement only")
    v.add_argument("--no-lrn", dest="lrn", action="store_false", help="drop the LRN after conv1 and conv2 (§3.3)")
    v.add_argument("--pool", type=int, choices=(3, 2), default=PAPER_MODEL.pool_size,
                   help="max-pool window, stride 2: 3 overlaps (§3.4), 2 does not (map sizes stay 27, 13, 6)")
    v.add_argument("--input-scale", choices=INPUT_SCALE_CHOICES, default=PAPER_MODEL.input_scale,
                   help="raw: 0..255 minus the mean image (spec §2); unit: /255 and torchvision's "
                        "per-channel mean and std (a failure mode)")
    v.add_argument("--init", choices=INIT_CHOICES, default=PAPER_MODEL.init,
                   help="paper: N(0, 0.01^2), biases 1/0 (§5); torch: PyTorch's default (a failure mode)")
# (flag, attribute, accepted, what it must be): checked before anything is read or built.
RANGES = (
    ("-b", "batch_size", lambda v: v > 0, "a positive number of images per replica"),
    ("-j", "workers", lambda v: v >= 0, "0 (load in the main process) or more worker processes"),
    ("--epochs", "epochs", lambda v: v > 0, "a positive number of epochs"),
    ("--lr", "lr", lambda v: 0 < v < math.inf, "a positive learning rate, e.g. 0.01"),
    ("--momentum", "momentum", lambda v: 0 <= v < 1, "in [0, 1), e.g. 0.9"),
    ("--wd", "wd", lambda v: 0 <= v < math.inf, "0 or a positive weight decay, e.g. 0.0005"),
    ("--dropout", "dropout", lambda v: 0 <= v < 1, "a probability in [0, 1), e.g. 0.5"),
    ("--init-std", "init_std", lambda v: 0 < v < math.inf, "a positive standard deviation, e.g. 0.01"),
    ("--pca-std", "pca_std", lambda v: 0 <= v < math.inf, "0 (no colour shift) or a positive std, e.g. 0.1"),
    ("--plateau-patience", "plateau_patience", lambda v: v >= 1, "at least 1 epoch"),
    ("--print-freq", "print_freq", lambda v: v > 0, "a positive number of steps"),
    ("--checkpoint-minutes", "checkpoint_minutes", lambda v: 0 <= v < math.inf, "0 (off) or more minutes"),
    ("--stop-at-step", "stop_at_step", lambda v: v >= 0, "0 (off) or a step number"),
    ("--seed", "seed", lambda v: 0 <= v < 2**32, "an integer in [0, 2^32)"),
)
DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def check_args(args):
    """Every argument's range, before anything is read or built: one line naming the flag and the fix."""
    for flag, name, ok, what in RANGES:
        value = getattr(args, name)
        if not ok(value):     # NaN fails every comparison, so it lands here too
            raise UsageError(f"{flag} {value} is out of range: it must be {what}")
    if args.lr_steps and (min(args.lr_steps) <= 0 or args.lr_steps != sorted(set(args.lr_steps))):
        raise UsageError(f"--lr-steps {','.join(map(str, args.lr_steps))} must be increasing positive epochs, "
                         f"e.g. 30,60,80")
    if args.devices is not None:
        names = [d.strip() for d in args.devices.split(",")]
        bad = [d for d in names if not DEVICE.match(d)]
        if bad or not names:
            raise UsageError(f"--devices {args.devices}: '{bad[0] if bad else ''}' is not a device; "
                             f"write two devices as cuda:0,cuda:1 (or cpu,cpu)")
    if args.resume not in (None, "auto") and not os.path.isfile(args.resume):
        raise UsageError(f"--resume {args.resume}: no such file; pass 'auto' (OUTPUT_DIR/checkpoint.pt "
                         f"if present) or the path of a checkpoint.pt")
    return args




def train_store_path(argv):
    """The store a command line trains on (the demo store when it names none)."""
    args = parser().parse_args(argv)
    return args.data_path or demo_store_path(args.cache_dir)


@tool
def main(argv=None):
    return train(check_args(parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
