"""Files written so that nothing is lost: atomic writes, JSON, and one writer per folder.

Atomic writes: a temporary file `<path>.tmp<pid>`, then a rename, so a crash never
leaves half a file. A process killed with SIGKILL cannot remove its temporary
file, so whoever writes into that folder next calls `remove_stale_temps`: a
checkpoint's temporary file is as large as the checkpoint (0.5 GB at 1000
classes) and would otherwise stay forever.

A write first resolves what its path is (`write_target`): a rename over a
symbolic link, a FIFO or a device would put a regular file in its place. A link
is followed, so the temporary file and the rename happen beside its final
target; anything else that is not a regular file (a FIFO, /dev/full, a
terminal) is written directly, as is this process's own stdout or stderr.

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
import stat
import sys
import tempfile

from alexnet_mp.errors import UsageError

_TEMP = re.compile(r"^(?P<name>.+)\.tmp(?P<pid>\d+)$")


def temp_path(path):
    return f"{path}.tmp{os.getpid()}"


def write_target(path):
    """(the path a write of `path` lands on, whether it is written through a temporary
    file and a rename): a regular file or a new one, at the end of any symbolic links,
    atomically; a FIFO, a device or a folder as given, directly."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        st = None          # a new file, or a link to one not made yet: created at the link's end
    if st is not None and not stat.S_ISREG(st.st_mode):
        return path, False
    return os.path.realpath(path), True


def atomic_write(path, write, mode="wb"):
    """Call write(f) on a temporary file beside `path` (beside the final target of a
    symbolic link), then rename it over that; see `write_target` for FIFOs and devices.

    An OSError (a full disk, an I/O error) names the file written, not the temporary
    one, and leaves whatever was there before untouched.
    """
    kwargs = {} if "b" in mode else {"encoding": "utf-8", "errors": "surrogateescape"}
    stream = _std_stream(path)
    if stream is not None:
        return _write_through(path, write, mode, kwargs, stream)
    real, atomic = write_target(path)
    if not atomic:
        return _write_through(path, write, mode, kwargs)
    tmp = temp_path(real)
    try:
        with open(tmp, mode, **kwargs) as f:
            write(f)
        os.replace(tmp, real)
    except Exception as e:
        _raise_naming(e, real if os.path.islink(path) else path, tmp)
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _raise_naming(e, path, tmp=None):
    cause = os_error_in(e)
    # A write through a file object (torch.save, np.savez) raises without a file
    # name, and torch.save's zip writer then hides it behind a RuntimeError of its
    # own; the user needs the OS error, and the file they are writing, not the temporary
    # one. A link's target, not the link: the free space in the message is of its disk.
    if cause is not None and cause.filename in (None, tmp):
        raise OSError(cause.errno, cause.strerror, path) from e


def _std_stream(path):
    """The file descriptor (1 or 2) that `path` is open as (/dev/stdout, or the file that
    stdout is redirected to), or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    for fd in (1, 2):
        try:
            other = os.fstat(fd)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (other.st_dev, other.st_ino):
            return fd
    return None


def _write_through(path, write, mode, kwargs, fd=None):
    """Write without a temporary file: into what `path` is, or through descriptor `fd`.
    Through a copy of the descriptor, after what was printed before: opening the file
    that stdout is redirected to would truncate it, or write over the printed lines."""
    try:
        if fd is None:
            f = open(path, mode, **kwargs)
        else:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:
                    stream.flush()
            f = os.fdopen(os.dup(fd), mode, **kwargs)      # fdopen never truncates
        with f:
            write(f)
    except Exception as e:
        _raise_naming(e, path)
        raise


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
    """Remove `<name>.tmp<pid>` files in `folder` for `name` in `names`, and beside the
    final target of each `name` that is a symbolic link (its temporary files are made
    there); returns the paths removed.

    Only those whose writer is dead, unless `all_of_them` (the caller holds the
    folder's lock, so no live process of ours can be writing there). Beside a link's
    target, always only the dead writers': the lock does not cover that folder.
    """
    home = os.path.realpath(folder)
    places = {home: (folder, set(names))}
    for name in names:
        real, atomic = write_target(os.path.join(folder, name))
        if atomic:
            where, target = os.path.split(real)
            places.setdefault(where, (where, set()))[1].add(target)
    removed = []
    for where, (shown, targets) in places.items():
        removed += _remove_temps(shown, targets, all_of_them and where == home)
    return removed


def _remove_temps(folder, names, all_of_them):
    removed = []
    try:
        entries = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
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
        """Let go once: the descriptor is forgotten, so a second call (__del__ after release())
        cannot close another lock that the OS has since given the same number."""
        fd, self.fd = self.fd, None
        if fd is not None and fd in _held:
            _held.remove(fd)
            os.close(fd)

    def __del__(self):
        self.release()


def claim(folder, names, flag, log=print, record=True):
    """Create `folder` if needed, lock it, check that files can be created in it, and
    remove the temporary files that a killed run left of `names`; returns the lock.

    `flag` names the folder on the command line, for the messages.
    """
    fix = f"choose another {flag}"
    real = os.path.realpath(folder)       # a link to a folder not made yet: made at its end
    if os.path.exists(real) and not os.path.isdir(real):
        raise UsageError(f"{flag} {folder} is a file, not a folder: {fix}")
    try:
        os.makedirs(real, exist_ok=True)
        lock = FolderLock(folder, fix, record)
        with tempfile.TemporaryFile(dir=real) as f:      # the lock file may predate a chmod
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
