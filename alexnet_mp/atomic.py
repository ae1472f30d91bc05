"""Write files so that a crash never leaves half of one: a temporary file, then a rename.

The temporary file is `<path>.tmp<pid>`. A process killed with SIGKILL cannot
remove its own, so whoever writes into that folder next calls
`remove_stale_temps`: a checkpoint's temporary file is as large as the
checkpoint (0.5 GB at 1000 classes) and would otherwise stay forever.
"""
import os
import re

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
