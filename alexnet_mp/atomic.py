"""Write files so that a crash never leaves half of one: a temporary file, then a rename."""
import os


def atomic_write(path, write, mode="wb"):
    """Call write(f) on a temporary file next to `path`, then rename it over `path`."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
