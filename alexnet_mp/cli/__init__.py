"""The console scripts' code; `tools/*.py` are thin launchers of these for a checkout.

Each module parses one tool's arguments into config objects, calls the library
and prints; no module here imports another. What they share is here: the flags
several tools take and their ranges, and the error wrapper.

Every tool's `main(argv)` goes through `tool`: the project's errors
(`UsageError`) and the OS errors a user can fix (a missing path, a permission,
a full disk) become one line on stderr and exit code 2. Anything else is a bug
and keeps its traceback.
"""
import argparse
import errno
import functools
import math
import os
import shutil
import stat
import sys
import tempfile

from alexnet_mp.config import COLUMN_CHOICES, HEAD_CHOICES, INIT_CHOICES, INPUT_SCALE_CHOICES, ModelConfig
from alexnet_mp.distributed.placement import DEVICE_NAME
from alexnet_mp.errors import UsageError
from alexnet_mp.files import write_target
from alexnet_mp.numerics import AMP_DTYPES

PAPER_MODEL = ModelConfig()

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


def _is_device(path):
    try:
        mode = os.stat(path).st_mode
    except (OSError, TypeError, ValueError):
        return False
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def os_error_line(e):
    """One line for an OSError a user can fix, or None for one that is a bug."""
    if e.errno not in USER_ERRNOS:
        return None
    path = e.filename if e.filename is not None else "a file"
    line = f"{path} {USER_ERRNOS[e.errno]}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO) and _is_device(path):
        # /dev/full, a tape: written directly, so the free space of its folder says nothing
        return f"{line}: write to a file on a disk with room instead"
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


def epoch_list(text):
    """argparse type of --lr-steps: comma-separated epochs."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of epochs, e.g. 30,60,80")


def add_speed_flags(p):
    """The opt-in speed modes that depart from the paper's float32 arithmetic (README: deviations)."""
    p.add_argument("--amp", choices=sorted(AMP_DTYPES),
                   help="autocast speed mode (LRN, softmax and loss stay float32); not the paper's arithmetic")
    p.add_argument("--tf32", action="store_true",
                   help="TF32 convolutions and matmuls on Ampere or newer GPUs; not the paper's float32")


def device_name(text):
    """argparse type of --device: cpu, cuda, cuda:N or mps (tools/benchmark.py's values)."""
    if not DEVICE_NAME.match(text):
        raise argparse.ArgumentTypeError(f"'{text}' is not a device: pass cpu, cuda, cuda:N or mps")
    return text


def add_device_flag(p):
    """--device, torchvision's flag: the one-device (grouped) placement on that device."""
    p.add_argument("--device", type=device_name,
                   help="run the grouped placement on this device: cpu, cuda, cuda:N or mps (Apple GPU); "
                        "a device not here falls back with a warning. Default: the first GPU, else the CPU")


def check_one_placement(args):
    """--device (one device) and --devices (two) ask for different placements: one of them, not both."""
    if args.device is not None and getattr(args, "devices", None) is not None:
        raise UsageError(f"--device {args.device} and --devices {args.devices} both given: --device runs the "
                         f"one-device placement, --devices a,b the two-device one; pass one of them")


def add_variant_flags(p):
    """§3's ablations and two failure modes of re-implementations; each departs from the paper when set.
    --dropout 0 and --pca-std 0 are the other two ablations. All are saved in the checkpoint's config."""
    v = p.add_argument_group("variants (departures from the paper, for tools/study.py)")
    v.add_argument("--columns", type=int, choices=COLUMN_CHOICES, default=PAPER_MODEL.columns,
                   help="1: §3.2's one-GPU net (conv1-4 with 48, 128, 192, 192 kernels; conv5, fc6, fc7 "
                        "not halved); grouped placement only")
    v.add_argument("--no-lrn", dest="lrn", action="store_false", help="drop the LRN after conv1 and conv2 (§3.3)")
    v.add_argument("--pool", type=int, choices=(3, 2), default=PAPER_MODEL.pool_size,
                   help="max-pool window, stride 2: 3 overlaps (§3.4), 2 does not (map sizes stay 27, 13, 6)")
    v.add_argument("--input-scale", choices=INPUT_SCALE_CHOICES, default=PAPER_MODEL.input_scale,
                   help="raw: 0..255 minus the mean image (spec §2); unit: /255 and torchvision's "
                        "per-channel mean and std (a failure mode)")
    v.add_argument("--init", choices=INIT_CHOICES, default=PAPER_MODEL.init,
                   help="paper: N(0, 0.01^2), biases 1/0 (§5); torch: PyTorch's default (a failure mode)")
    v.add_argument("--batch-norm", dest="batch_norm", action="store_true",
                   help="later work, not the paper's: BatchNorm after every conv, before its ReLU, per column; "
                        "with --no-lrn it replaces the LRN")
    v.add_argument("--head", choices=HEAD_CHOICES, default=PAPER_MODEL.head,
                   help="fc: fc6, fc7, fc8 (Figure 2); gap (later work): each column's conv5 maps averaged "
                        "over their positions, then fc8 alone (no fc6, fc7 or dropout)")


# (flag, attribute, accepted, what it must be): the ranges of the training flags, which the
# study's budget flags share; checked before anything is read or built.
RANGES = (
    ("-b", "batch_size", lambda v: v > 0, "a positive number of images per replica"),
    ("-j", "workers", lambda v: v >= 0, "0 (load in the main process) or more worker processes"),
    ("--epochs", "epochs", lambda v: v > 0, "a positive number of epochs"),
    ("--lr", "lr", lambda v: 0 < v < math.inf, "a positive learning rate, e.g. 0.01"),
    ("--momentum", "momentum", lambda v: 0 <= v < 1, "in [0, 1), e.g. 0.9"),
    ("--wd", "wd", lambda v: 0 <= v < math.inf, "0 or a positive weight decay, e.g. 0.0005"),
    ("--dropout", "dropout", lambda v: 0 <= v < 1, "a probability in [0, 1), e.g. 0.5"),
    ("--init-std", "init_std", lambda v: 0 < v < math.inf, "a positive standard deviation, e.g. 0.01"),
    ("--pca-std", "pca_std", lambda v: 0 <= v < math.inf, "0 (no colour shift) or a positive std, e.g. 0.1"),
    ("--plateau-patience", "plateau_patience", lambda v: v >= 1, "at least 1 epoch"),
    ("--print-freq", "print_freq", lambda v: v > 0, "a positive number of steps"),
    ("--checkpoint-minutes", "checkpoint_minutes", lambda v: 0 <= v < math.inf, "0 (off) or more minutes"),
    ("--stop-at-step", "stop_at_step", lambda v: v >= 0, "0 (off) or a step number"),
    ("--seed", "seed", lambda v: 0 <= v < 2**32, "an integer in [0, 2^32)"),
)


def check_ranges(args):
    """Every range in RANGES that `args` has a value for: one line naming the flag and the fix."""
    for flag, name, ok, what in RANGES:
        value = getattr(args, name, None)
        if value is not None and not ok(value):     # NaN fails every comparison, so it lands here too
            raise UsageError(f"{flag} {value} is out of range: it must be {what}")
    steps = getattr(args, "lr_steps", None)
    if steps and (min(steps) <= 0 or steps != sorted(set(steps))):
        raise UsageError(f"--lr-steps {','.join(map(str, steps))} must be increasing positive epochs, "
                         f"e.g. 30,60,80")


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
    real, atomic = write_target(path)
    if not atomic:          # a FIFO or a device is written as it is: it only has to take writes
        if not os.access(path, os.W_OK):
            raise UsageError(f"{flag} {path} cannot be written (permission denied): choose a file you can write to")
        return
    folder = os.path.dirname(real)           # a link's target is where the temporary file goes
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
