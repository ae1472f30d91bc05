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
from alexnet_mp.numerics import autocast


def _to(batch, device):
    return batch.to(device, non_blocking=True)


@torch.no_grad()
def predict(model, loader, device, crops, log=None, counts_here=True, amp=None):
    """Top-5 classes and probabilities for this process's share of `loader`.

    Returns a dict of numpy arrays: `index` (dataset positions), `label`,
    `top5`/`prob5` (averaged over the crops) and `center_top5`/`center_prob5`.
    `counts_here=False` (column 1 of a pair) computes the same images but returns none.
    The answers stay on the device until the last batch and then cross in one copy:
    a copy per batch would make the host wait for every batch's forward in turn.
    """
    model.eval()
    answers, labels_seen = [], []
    start, seen, total = time.time(), 0, len(loader.sampler)
    for step, (images, labels) in enumerate(loader):
        n = images.shape[0]
        x = _to(images.reshape(-1, *images.shape[-3:]), device)   # crops of N images: one 10N batch
        with autocast(device, amp):
            logits = model(x)
        probs = torch.softmax(logits.float(), dim=1).reshape(n, crops, -1)
        answers.append(_top(probs, crops))
        labels_seen.append(labels.numpy())
        seen += n           # counted from the loader, without asking the device
        if log and (step % 20 == 0 or seen == total):
            rate = seen / max(time.time() - start, 1e-9)
            log(f"eval [{seen}/{total}]  img/s: {rate:.1f}  eta: {(total - seen) / max(rate, 1e-9):.0f}s")
    result = _unpack(torch.cat(answers).cpu() if answers else None)
    result["label"] = np.concatenate(labels_seen) if labels_seen else np.zeros((0,), np.int64)
    result["index"] = np.asarray(loader.sampler.indices(), dtype=np.int64)
    if not counts_here:
        result = {k: v[:0] for k, v in result.items()}
    return result


ANSWERS = ("top5", "prob5", "center_top5", "center_prob5")


def _top(probs, crops):
    """(N, 4k) float64 on the device: the averaged and the centre crop's top-k classes and
    probabilities side by side. float64 holds both exactly (class indices are far below
    2^53, float32 probabilities are float64 numbers), so the whole answer is one copy."""
    k = min(5, probs.shape[-1])
    parts = []
    for p in (probs.mean(dim=1), probs[:, CENTER if crops == 10 else 0]):
        top = p.topk(k, dim=1)
        parts += [top.indices.double(), top.values.double()]
    return torch.cat(parts, dim=1)


def _unpack(packed):
    """The `predict` answers as numpy arrays, from `_top`'s rows (None: no batches)."""
    if packed is None:
        return {key: np.zeros((0,), np.int64) for key in ANSWERS}
    k = packed.shape[1] // len(ANSWERS)
    cols = packed.numpy().reshape(len(packed), len(ANSWERS), k)
    return {key: cols[:, i].astype(np.float32 if key.endswith("prob5") else np.int64)
            for i, key in enumerate(ANSWERS)}


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
