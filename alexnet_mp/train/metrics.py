"""A run's metrics.jsonl: read with torn lines skipped, and cut back to what its checkpoint covers."""
import json
import os

from alexnet_mp.files import atomic_write, read_records


def covered(record, step, epoch):
    """Whether a checkpoint at (step, epoch) already holds what `record` reports.

    A validation record of epoch e is written before the checkpoint that starts
    epoch e + 1, so it belongs to the checkpoint only if that one is past e.
    """
    if "val_top1_err" in record:
        return record["epoch"] < epoch
    return record["step"] <= step


def trim_metrics(path, step, epoch, warn=print):
    """Cut metrics.jsonl back to what the checkpoint at (step, epoch) covers; the
    steps after it are run again and logged again, exactly once."""
    if not os.path.isfile(path):
        return
    with open(path, "rb") as f:
        before = f.read()
    keep = [r for r in read_records(path, warn) if covered(r, step, epoch)]
    text = "".join(json.dumps(r) + "\n" for r in keep)
    if text.encode() != before:
        atomic_write(path, lambda f: f.write(text), "w")


def open_metrics(path, step=0, epoch=0, warn=print):
    """A function appending one record to metrics.jsonl, after trimming it to (step, epoch)."""
    trim_metrics(path, step, epoch, warn)

    def write(record):
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise OSError(e.errno, e.strerror, path) from e
    return write
