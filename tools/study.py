"""The paper's claims as experiments: the baseline and its ablations, S seeds each, one budget.

    python tools/study.py --dry-run                  # the plan and its estimated time
    python tools/study.py --output-dir runs/study    # the demo set: baseline + 5 ablations, 2 seeds
    python tools/study.py --variants all             # adds the failure modes (input-unit, init-torch)
    python tools/study.py --data-path STORE --seeds 3 --output-dir runs/study-imagenet   # the paper's recipe
    torchrun --nproc_per_node=2 tools/study.py --data-path STORE   # each run uses the launch

Writes OUTPUT_DIR/study.json, study.md (the table beside the paper's numbers) and
study.png (validation curves). Re-running skips finished runs and resumes the
unfinished one. About 30 minutes on a 2-core CPU with the demo preset.
"""
import sys

from alexnet_mp.cli.study import main

if __name__ == "__main__":
    sys.exit(main())
