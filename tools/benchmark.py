"""Speed of the faithful network and its input pipeline, as ratios measured side by side.

    python tools/benchmark.py --json bench.json            # every section
    python tools/benchmark.py model tencrop -b 32           # chosen sections
    python tools/benchmark.py -b 128 --amp bf16             # on a GPU: the bf16 speed mode
    python tools/benchmark.py --quick                      # a short smoke run (CI), no goals checked
    python tools/benchmark.py model prepare --json docs/bench-prepare.json   # docs/prepare-speed.md's figures

Sections: model (torchvision alexnet vs the grouped placement, train and eval),
tworank (2 gloo processes on the CPU, or the two-device placement on two GPUs,
vs grouped; skipped on a machine with one GPU), tencrop (ten-crop vs
centre-crop evaluation), data (our training pipeline vs a torchvision-style one,
per worker process), lrn (the two LRN layers' share of a training step),
scaling (the rank placement with 1 and 2 pairs of gloo processes on the CPU, each
step split into compute, exchange and exposed data-parallel communication;
indicative only, as the processes share the machine's cores), prepare (how
long tools/prepare_data.py takes: img/s per worker on 500x375 and multi-megapixel
JPEGs, Pillow's draft decoding and its pixel difference, prepare() end to end at
-j 1 and -j 2, and what a kill mid-split costs; docs/prepare-speed.md). Each
figure is the median of --repeats timed runs after a warm-up; the spread
(min..max) is printed beside it. Float32 unless --tf32 or --amp asks for a
speed mode; on a GPU, channels_last and cudnn autotuning, as training uses.
"""
import sys

from alexnet_mp.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
