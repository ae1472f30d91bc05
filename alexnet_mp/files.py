"""Files written so that nothing is lost: atomic writes, JSON, and one writer per folder.

Atomic writes: a temporary file `<path>.tmp<pid>`, then a rename, so a crash never
leaves half a file. A process killed with SIGKILL cannot remove its temporary
file, so whoever writes into that folder next calls `remove_stale_temps`: a
checkpoint's temporary file is as large as the checkpoint (0.5 GB at 1000
classes) and would otherwise stay forever.

The folder lock is `fcntl.flock` on `<folder>/.alexnet_mp.lock`: the kernel drops
it when the holder dies, even by SIGKILL, so a crashed run never blocks the next.
The message the next run prints names the holder's pid, from /proc/locks, or
from the file, where a training run also records its pid and host (a holder
on another machine of a shared file system is not in this one's /proc/locks).
"""
import errno
import fcntl
import json
import os
import re
import socket
import tempfile

from alexnet_mp.errors import UsageError

_TEMP = re.compile(r"^(?P<name>.+)\.tmp(?P<pid>\d+)$")


def temp_path(path):
    return f"{path}.tmp{os.getpid()}"


def atomic_write(path, write, mode="wb"):
    """Call write(f) on a temporary file next to `path`, then rename it over `path`.

    An OSError (a full disk, an I/O error) names `path`, not the temporary file,
    and leaves whatever was at `path` before untouched.
    """
    tmp = temp_path(path)
    kwargs = {} if "b" in mode else {"encoding": "utf-8", "errors": "surrogateescape"}
    try:
        with open(tmp, mode, **kwargs) as f:
            write(f)
        os.replace(tmp, path)
    except Exception as e:
        cause = os_error_in(e)
        # A write through a file object (torch.save, np.savez) raises without a file
        # name, and torch.save's zip writer then hides it behind a RuntimeError of its
        # own; the user needs the OS error, and the path they asked for, not the temporary one.
        if cause is not None and cause.filename in (None, tmp):
            raise OSError(cause.errno, cause.strerror, path) from e
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def os_error_in(e):
    """The OSError that `e` is, or that it was raised while handling; None if there is none."""
    while e is not None and not isinstance(e, OSError):
        e = e.__cause__ or e.__context__
    return e


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # alive, someone else's
        return True
    return True


def remove_stale_temps(folder, names, all_of_them=False):
    """Remove `<name>.tmp<pid>` files in `folder` for `name` in `names`; returns the paths removed.

    Only those whose writer is dead, unless `all_of_them` (the caller holds the
    folder's lock, so no live process of ours can be writing there).
    """
    removed = []
    try:
        entries = os.listdir(folder)
    except FileNotFoundError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry)
        if not m or m.group("name") not in names:
            continue
        pid = int(m.group("pid"))
        if pid != os.getpid() and (all_of_them or not pid_alive(pid)):
            path = os.path.join(folder, entry)
            try:
                os.remove(path)
                removed.append(path)
            except FileNotFoundError:
                pass
    return removed


def write_json(path, obj, indent=1):
    """`obj` as JSON at `path`, atomically."""
    atomic_write(path, lambda f: json.dump(obj, f, indent=indent), "w")


def read_json(path):
    """The JSON at `path`, or None where there is no such file."""
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return json.loads(f.read())


# One run per folder.
LOCK_NAME = ".alexnet_mp.lock"
# Locks this process holds. fork() copies their descriptors into DataLoader
# workers, and a lock lives while any copy is open: a worker orphaned by a
# SIGKILL of its parent would keep the folder locked until it notices.
_held = []


class FolderLock:
    """An exclusive lock on `folder`, held until `release()` or this process ends.
    `wait`: block until the holder lets go, instead of refusing."""

    def __init__(self, folder, fix, record=True, wait=False):
        self.fd = None
        self.path = os.path.join(folder, LOCK_NAME)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
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


def _close_inherited_locks():
    """In a forked child (a DataLoader worker): drop its copies of the parent's lock
    descriptors; the parent keeps the lock."""
    while _held:
        try:
            os.close(_held.pop())
        except OSError:
            pass


os.register_at_fork(after_in_child=_close_inherited_locks)
