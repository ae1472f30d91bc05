"""The console scripts' code; `tools/*.py` are thin launchers of these for a checkout.

Every tool's `main(argv)` goes through `tool`: the project's errors
(`UsageError`) and the OS errors a user can fix (a missing path, a permission,
a full disk) become one line on stderr and exit code 2. Anything else is a bug
and keeps its traceback.
"""
import errno
import functools
import os
import shutil
import sys

from ..errors import UsageError

# OS errors whose fix is the user's: a path, a permission, disk space.
USER_ERRNOS = {errno.ENOENT: "does not exist", errno.EACCES: "is not accessible (permission denied)",
               errno.EPERM: "is not accessible (operation not permitted)", errno.EROFS: "is on a read-only file system",
               errno.EISDIR: "is a folder, not a file", errno.ENOTDIR: "is not a folder",
               errno.ENOSPC: "cannot be written: the disk is full", errno.EDQUOT: "cannot be written: disk quota exceeded",
               errno.EEXIST: "already exists", errno.ENAMETOOLONG: "is too long a name", errno.EIO: "gave an I/O error"}


def _free_space(path):
    folder = os.path.dirname(os.path.abspath(path)) or "."
    while not os.path.isdir(folder) and folder != os.path.dirname(folder):
        folder = os.path.dirname(folder)
    try:
        return f"{shutil.disk_usage(folder).free / 2**30:.1f} GiB free in {folder}"
    except OSError:
        return "free space unknown"


def os_error_line(e):
    """One line for an OSError a user can fix, or None for one that is a bug."""
    if e.errno not in USER_ERRNOS:
        return None
    path = e.filename if e.filename is not None else "a file"
    line = f"{path} {USER_ERRNOS[e.errno]}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
        return f"{line} ({_free_space(str(path))}): free some space or choose another --output-dir; " \
               f"files written before stay intact"
    return f"{line}: check the path and its permissions"


def report(message):
    """Print an error line; under torchrun only rank 0 speaks."""
    if os.environ.get("RANK", "0") == "0":
        print(f"error: {message}", file=sys.stderr)


def tool(main):
    """Wrap a tool's main(argv): user errors -> one line and exit 2; the rest propagates."""
    @functools.wraps(main)
    def wrapped(argv=None):
        try:
            return main(argv) or 0
        except UsageError as e:
            report(str(e))
        except OSError as e:
            line = os_error_line(e)
            if line is None:
                raise
            report(line)
        return 2
    return wrapped
