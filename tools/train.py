"""Train the two-column AlexNet with the paper's recipe (§5).

    torchrun --nproc_per_node=2 tools/train.py --data-path STORE     # one column per rank
    python tools/train.py --data-path STORE --devices cuda:0,cuda:1  # two devices, one process
    python tools/train.py --data-path STORE                          # picks a placement itself
    python tools/train.py --data-path STORE --device mps             # one device: cpu, cuda, cuda:N, mps
    python tools/train.py --output-dir runs/demo -b 32 --epochs 2    # the built-in demo set
    python tools/train.py --data-path STORE --columns 1 --no-lrn      # §3's ablations (opt-in; see --help)

STORE is a folder made by tools/prepare_data.py. Resume with --resume auto.
"""
import sys

from alexnet_mp.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
