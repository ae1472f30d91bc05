"""Ten-crop evaluation of a checkpoint: the paper's test protocol (§4.1, spec §4).

    python tools/evaluate.py --checkpoint runs/alexnet/model_best.pt --data-path STORE
    torchrun --nproc_per_node=2 tools/evaluate.py --checkpoint C --data-path STORE --json eval.json
    alexnet-eval --checkpoint C --data-path STORE --crops 1 --predictions preds.csv
    python tools/evaluate.py --checkpoint C --data-path STORE --device cpu

--checkpoint takes a training checkpoint or a bare canonical state dict.
Errors are printed as percentages; the JSON holds fractions in 0..1.
"""
import sys

from alexnet_mp.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
