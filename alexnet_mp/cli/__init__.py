"""The console scripts' code; `tools/*.py` are thin launchers of these for a checkout.

Every tool's `main(argv)` goes through `tool`: the project's errors
(`UsageError`) and the OS errors a user can fix (a missing path, a permission,
a full disk) become one line on stderr and exit code 2. Anything else is a bug
and keeps its traceback.
"""
import argparse
import errno
import functools
import os
import shutil
import sys
import tempfile

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


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a malformed command line is one line too, not the usage block and a line."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def check_at_least(*checks):
    """(flag, value, lowest allowed) for each count a tool takes: one line before any work."""
    for flag, value, low in checks:
        if value < low:
            raise UsageError(f"{flag} {value} is out of range: it must be at least {low}")


def check_output_file(path, flag, extensions=None, example="out.json"):
    """Before any work: `path` can be created as a file (its folder exists and takes files,
    it is not a folder itself) and, if `extensions` are given, has one of them."""
    if os.path.isdir(path):
        example = f"out{extensions[0]}" if extensions else example
        raise UsageError(f"{flag} {path} is a folder: pass a file name in it, e.g. {os.path.join(path, example)}")
    ext = os.path.splitext(path)[1].lower()
    if extensions and ext not in extensions:
        raise UsageError(f"{flag} {path}: the file type '{ext}' is not one this can write; "
                         f"end the name with one of {', '.join(extensions[:6])}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{flag} {path}: the folder {folder} does not exist; create it or choose another path")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UsageError(f"{flag} {path} cannot be written in {folder} ({e.strerror}): choose a folder "
                         f"you can write to") from None


def shown(path):
    """A file name for the terminal: bytes that are not UTF-8 as \\xNN escapes, as the OS has them."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _survive_undecodable_names():
    # File names that are not valid UTF-8 reach Python as lone surrogates; printing
    # one would raise. Shown escaped (\xe9) instead.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def tool(main):
    """Wrap a tool's main(argv): user errors -> one line and exit 2; the rest propagates."""
    @functools.wraps(main)
    def wrapped(argv=None):
        _survive_undecodable_names()
        try:
            return main(argv) or 0
        except UsageError as e:
            report(str(e))
        except OSError as e:
            line = os_error_line(e)
            if line is None:
                raise
            report(line)
        except KeyboardInterrupt:      # training handles Ctrl-C itself; this is any other tool, or startup
            report("interrupted (Ctrl-C): files are written whole or not at all; run the command again to "
                   "continue")
            return 130
        return 2
    return wrapped
