"""Seconds from SIGTERM to the checkpoint's rename, against SLURM's KillWait and torchrun's 30 s.

    python tools/slurm/stop_time.py --json docs/stop-time.json      # 1000 classes, -b 128, 2 ranks (gloo), 5 trials
    python tools/slurm/stop_time.py --classes 10 -b 8 --signals 1   # a quick look

Each trial starts `torchrun --nproc_per_node=2 tools/train.py` on a store of --classes
classes, SIGTERMs the agent and every worker at once a random 5 to 60 s into training,
and reads what rank 0 reports (OUTPUT_DIR/stopped-by-signal.json). docs/cluster.md
has the figures.
"""
import argparse
import os
import platform
import statistics
import sys
import time

from alexnet_mp.bench.stop_time import measure
from alexnet_mp.files import write_json

WINDOW_S = 30.0       # SLURM's KillWait default, and torchrun's wait for its workers


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("-b", "--batch-size", type=int, default=128)
    p.add_argument("--signals", type=int, default=5, help="trials, each a fresh run signalled once")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    rows = measure(args.classes, args.batch_size, args.signals)
    times = [r["signal_to_checkpoint_s"] for r in rows]
    print(f"{'trial':>5} {'signal at (s)':>14} {'to rename (s)':>14} {'step':>5}  where")
    for i, r in enumerate(rows):
        print(f"{i:>5} {r['delay_s']:>14.1f} {r['signal_to_checkpoint_s']:>14.1f} {r['stopped_at_step']:>5}  "
              f"{r['where']}")
    print(f"max {max(times):.1f} s, median {statistics.median(times):.1f} s, against {WINDOW_S:.0f} s "
          f"(KillWait, torchrun): {'inside' if max(times) < WINDOW_S else 'OUTSIDE'}")
    if args.json:
        write_json(args.json, {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                               "cpus": os.cpu_count(), "classes": args.classes, "batch_size": args.batch_size,
                               "placement": "rank (torchrun, 2 gloo processes)", "trials": rows,
                               "max_s": max(times), "window_s": WINDOW_S})
    return 0


if __name__ == "__main__":
    sys.exit(main())
