"""See what the network learned: conv1 kernels per column, training curves, fc7 neighbours;
and the network itself, the paper's Figure 2.

    python tools/visualize.py filters --checkpoint C --out filters.png
    python tools/visualize.py curves --metrics runs/demo/metrics.jsonl --out curves.png
    python tools/visualize.py neighbours --checkpoint C --data-path STORE --query a.jpg b.jpg --out nn.png
    python tools/visualize.py arch --out arch.png                    # the paper's net (docs/arch.png)
    python tools/visualize.py arch --columns 1 --no-lrn --out a.png  # a variant, with train's flags
    python tools/visualize.py arch --checkpoint C --out arch.png     # the net a checkpoint holds

`filters` is the paper's Figure 3 (column 0's 48 kernels above column 1's) and
prints each column's colour-specificity. `neighbours` is Figure 4: the 6
training images nearest each query in fc7 (4096-d, Euclidean); --device runs it on
cpu, cuda, cuda:N or mps. `arch` is Figure 2 drawn from the architecture table the
code builds the network from: each column's maps and map sizes, LRN and pooling,
and in red the layers that read both columns (conv3, fc6, fc7, fc8).
"""
import sys

from alexnet_mp.cli.visualize import main

if __name__ == "__main__":
    sys.exit(main())
