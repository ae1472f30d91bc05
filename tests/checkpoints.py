"""An independent writer of the training checkpoint as the project wrote it before its layout
change (stop 15): every key spelled out here, none taken from the package's own writer."""
import random

import numpy as np
import torch

from alexnet_mp.config import TrainConfig, to_dict


def write_old_format_checkpoint(path, net, *, epoch=1, step=5, data_path="", mean=None, config=None, classes=None):
    """A resumable checkpoint of `net` (a grouped AlexNet) at the start of epoch `epoch`, step `step`."""
    weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
    n = weights["fc8.weight"].shape[0]
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    columns = {str(c): torch.Generator().manual_seed(1000 + c).get_state() for c in range(2)}
    cfg = config or TrainConfig()
    state = {
        "model": weights,
        "optimizer": {"velocity": {k: torch.full_like(v, 1e-6) for k, v in weights.items()}},
        "lr_scheduler": {"lr": 0.01, "patience": 5, "factor": 0.1, "max_drops": 3, "steps": [],
                         "best": 0.9, "bad_epochs": 0, "drops": 0},
        "epoch": epoch, "step": step,
        "rng": [{"torch": torch.get_rng_state(), "python": random.getstate(),
                 "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
                 "cuda": {}, "columns": columns}],
        "sampler": {"epoch": epoch, "start": 0, "seed": cfg.seed},
        "args": {"data_path": data_path, "output_dir": "old", "batch_size": cfg.batch_size},
        "config": to_dict(cfg),
        "classes": classes or {"classes": [f"c{i}" for i in range(n)], "names": {}},
        "best_val_top1_err": 0.9,
        "data_mean": torch.from_numpy(np.full((256, 256, 3), 100.0) if mean is None else mean),
    }
    torch.save(state, path)
    return state
