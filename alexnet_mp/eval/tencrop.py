"""Centre-crop and ten-crop evaluation (§4.1 "Testing", spec §4), in any placement.

Ten crops of N images run as one forward of 10N. The softmax probabilities,
not the logits, are averaged over the ten, then top-1 and top-5 are read off
the average. The centre crop's own answer (crop 4 in the spec's order) comes
out of the same pass.
"""
import time

import numpy as np
import torch
import torch.distributed as dist

from alexnet_mp.data.transforms import CENTER
from alexnet_mp.train.numerics import autocast


def _to(batch, device):
    return batch.to(device, non_blocking=True)


@torch.no_grad()
def predict(model, loader, device, crops, log=None, counts_here=True, amp=None):
    """Top-5 classes and probabilities for this process's share of `loader`.

    Returns a dict of numpy arrays: `index` (dataset positions), `label`,
    `top5`/`prob5` (averaged over the crops) and `center_top5`/`center_prob5`.
    `counts_here=False` (column 1 of a pair) computes the same images but returns none.
    """
    model.eval()
    out = {k: [] for k in ("label", "top5", "prob5", "center_top5", "center_prob5")}
    start, seen, total = time.time(), 0, len(loader.sampler)
    for step, (images, labels) in enumerate(loader):
        n = images.shape[0]
        x = _to(images.reshape(-1, *images.shape[-3:]), device)   # crops of N images: one 10N batch
        with autocast(device, amp):
            logits = model(x)
        probs = torch.softmax(logits.float(), dim=1).reshape(n, crops, -1).cpu()
        k = min(5, probs.shape[-1])
        avg = probs.mean(dim=1)
        center = probs[:, CENTER if crops == 10 else 0]
        for key, p in (("", avg), ("center_", center)):
            top = p.topk(k, dim=1)
            out[f"{key}top5"].append(top.indices.numpy())
            out[f"{key}prob5"].append(top.values.numpy())
        out["label"].append(labels.numpy())
        seen += n
        if log and (step % 20 == 0 or seen == total):
            rate = seen / max(time.time() - start, 1e-9)
            log(f"eval [{seen}/{total}]  img/s: {rate:.1f}  eta: {(total - seen) / max(rate, 1e-9):.0f}s")
    result = {k: (np.concatenate(v) if v else np.zeros((0,), np.int64)) for k, v in out.items()}
    result["index"] = np.asarray(loader.sampler.indices(), dtype=np.int64)
    if not counts_here:
        result = {k: v[:0] for k, v in result.items()}
    return result


def gather(result):
    """Concatenate every process's predictions (no-op outside torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return result
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, result)
    merged = {k: np.concatenate([p[k] for p in parts if len(p["label"])]) for k in result}
    order = np.argsort(merged["index"], kind="stable")
    return {k: v[order] for k, v in merged.items()}


def topk_errors(top5, labels):
    """(top-1 error, top-5 error) as fractions, from each example's classes best first
    (up to 5 columns; fewer classes than 5 make top-5 = all of them). NaN for no examples."""
    top5, labels = np.asarray(top5), np.asarray(labels)
    if not len(labels):
        return float("nan"), float("nan")
    hit1 = top5[:, 0] == labels
    hit5 = (top5 == labels[:, None]).any(axis=1)
    return float(1 - hit1.mean()), float(1 - hit5.mean())


def errors(result, prefix=""):
    """(top-1 error, top-5 error) of a `predict` result (prefix "center_": its centre crop's)."""
    return topk_errors(result[f"{prefix}top5"], result["label"])


def summary(result, classes, checkpoint="", crops=10):
    """The evaluation script's JSON record."""
    top1, top5 = errors(result)
    c1, c5 = errors(result, "center_")
    label, pred = result["label"], result["top5"][:, 0]
    per_class = {}
    for i, name in enumerate(classes):
        mask = label == i
        if mask.any():
            per_class[name] = float((pred[mask] != i).mean())
    confused = {}
    for t, p in zip(label[pred != label], pred[pred != label]):
        confused[(int(t), int(p))] = confused.get((int(t), int(p)), 0) + 1
    most = sorted(confused.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    return {"top1_err": top1, "top5_err": top5, "center_top1_err": c1, "center_top5_err": c5,
            "num_images": int(len(label)), "per_class_top1_err": per_class,
            "most_confused": [{"true": classes[t], "predicted": classes[p], "count": n} for (t, p), n in most],
            "checkpoint": checkpoint, "crops": crops}
