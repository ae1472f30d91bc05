"""A folder that a run writes into: one run at a time, and a metrics.jsonl that matches its checkpoint.

The lock is `fcntl.flock` on `<folder>/.alexnet_mp.lock`: the kernel drops it
when the holder dies, even by SIGKILL, so a crashed run never blocks the next.
The message the next run prints names the holder's pid, from /proc/locks, or
from the file, where a training run also records its pid and host (a holder
on another machine of a shared file system is not in this one's /proc/locks).
"""
import errno
import fcntl
import json
import os
import socket
import tempfile

from .atomic import atomic_write, remove_stale_temps
from .errors import UsageError

LOCK_NAME = ".alexnet_mp.lock"
# Locks this process holds. fork() copies their descriptors into DataLoader
# workers, and a lock lives while any copy is open: a worker orphaned by a
# SIGKILL of its parent would keep the folder locked until it notices.
_held = []


class FolderLock:
    """An exclusive lock on `folder`, held until `release()` or this process ends."""

    def __init__(self, folder, fix, record=True):
        self.fd = None
        self.path = os.path.join(folder, LOCK_NAME)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise UsageError(f"{folder} is in use by another run ({holder}): wait for it to end, "
                             f"stop it, or {fix}") from None
        if record:       # not for prepare: a re-run on a finished store writes nothing at all
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        _held.append(fd)

    def release(self):
        if self.fd in _held:
            _held.remove(self.fd)
            os.close(self.fd)

    def __del__(self):
        self.release()


def claim(folder, names, flag, log=print, record=True):
    """Create `folder` if needed, lock it, check that files can be created in it, and
    remove the temporary files that a killed run left of `names`; returns the lock.

    `flag` names the folder on the command line, for the messages.
    """
    fix = f"choose another {flag}"
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"{flag} {folder} is a file, not a folder: {fix}")
    try:
        os.makedirs(folder, exist_ok=True)
        lock = FolderLock(folder, fix, record)
        with tempfile.TemporaryFile(dir=folder) as f:      # the lock file may predate a chmod
            f.write(b"x")
    except OSError as e:
        raise UsageError(f"{flag} {folder} cannot be written ({e.strerror}): {fix}, "
                         f"or fix its permissions") from None
    stale = remove_stale_temps(folder, names, all_of_them=True)
    if stale:
        log(f"removed {len(stale)} temporary file(s) left by a run that was killed while writing: "
            f"{', '.join(os.path.basename(p) for p in stale[:3])}")
    return lock


def _read_holder(fd):
    st = os.fstat(fd)
    me = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:      # "1: FLOCK  ADVISORY  WRITE 8830 fe:00:2146378 0 EOF"
            for line in f:
                parts = line.split()
                if "->" not in parts and len(parts) > 5 and parts[1] == "FLOCK" and parts[5] == me:
                    return f"pid {parts[4]}"
    except OSError:
        pass
    try:
        pid, _, host = os.pread(fd, 200, 0).decode(errors="replace").strip().partition(" ")
    except OSError:
        pid = host = ""
    if not pid:
        return "pid unknown"
    return f"pid {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")


def close_inherited_locks():
    """In a forked child: drop its copies of the parent's lock descriptors (the parent keeps the lock)."""
    while _held:
        try:
            os.close(_held.pop())
        except OSError:
            pass


def read_records(path, warn=print):
    """The records of a metrics.jsonl. A line that is not a record (the last one,
    torn by a run killed while writing it) is skipped with one warning."""
    records, bad = [], []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict) and "step" in record and "epoch" in record:
                records.append(record)
            else:
                bad.append(n)
    if bad:
        warn(f"warning: {path}: skipped {len(bad)} unreadable line(s) (line {bad[0]}"
             f"{'' if len(bad) == 1 else ', ...'}), left by a run stopped while writing")
    return records


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


def metrics_writer(path, step=0, epoch=0, warn=print):
    """A function appending one record to metrics.jsonl, after trimming it to (step, epoch)."""
    trim_metrics(path, step, epoch, warn)

    def write(record):
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise OSError(e.errno, e.strerror, path) from e
    return write
