"""The demo: train on the built-in procedural dataset, ten-crop evaluate, draw the figures.

    python tools/demo.py --output-dir runs/demo
    alexnet-demo --output-dir runs/demo

It sizes itself to 10 minutes (--budget-minutes; 0 runs the whole preset):
it times a training step first and trains as many of the preset's 6 epochs as
fit, printing the plan. The demo set (10 shape classes, 1,200
training and 200 validation images) is generated and prepared once into the
cache folder. The model, init, LRN, dropout, update rule and augmentation are
the paper's; the preset below departs from the paper's recipe only where a
CPU budget of minutes forces it, and says so when it starts.
"""
import sys

from alexnet_mp.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
