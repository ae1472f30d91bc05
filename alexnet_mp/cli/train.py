"""Train the two-column AlexNet with the paper's recipe (§5).

The code behind tools/train.py, whose docstring has the exact command lines.
"""
import argparse
import os
import sys

from alexnet_mp.backends import AMP_DTYPES
from alexnet_mp.config import COLUMN_CHOICES, INIT_CHOICES, INPUT_SCALE_CHOICES, ModelConfig, TrainConfig
from alexnet_mp.cli import tool
from alexnet_mp.train import default_cache_dir, demo_store_path, train

PAPER, PAPER_MODEL = TrainConfig(), ModelConfig()


def _ints(text):
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of epochs, e.g. 30,60,80")


def parser():
    p = argparse.ArgumentParser(description="Train the paper's two-column AlexNet")
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


def train_store_path(argv):
    """The store a command line trains on (the demo store when it names none)."""
    args = parser().parse_args(argv)
    return args.data_path or demo_store_path(args.cache_dir)


@tool
def main(argv=None):
    return train(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
