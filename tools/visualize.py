"""See what the network learned: conv1 kernels per column, training curves, fc7 neighbours.

    python tools/visualize.py filters --checkpoint C --out filters.png
    python tools/visualize.py curves --metrics runs/demo/metrics.jsonl --out curves.png
    python tools/visualize.py neighbours --checkpoint C --data-path STORE --query a.jpg b.jpg --out nn.png

`filters` is the paper's Figure 3 (column 0's 48 kernels above column 1's) and
prints each column's colour-specificity. `neighbours` is Figure 4: the 6
training images nearest each query in fc7 (4096-d, Euclidean).
"""
import sys

from alexnet_mp.cli.visualize import main

if __name__ == "__main__":
    sys.exit(main())
