"""Damaged stores and checkpoints: found when they open, one line naming the file and the fix.

Each case damages a copy of a real prepared store or of a real training
checkpoint, then runs the tool in-process: exit 2, one line, and nothing
written. For stores, re-running the command the message names repairs them.
"""
import os
import shutil

import numpy as np
import pytest
import torch

from alexnet_mp.data import demo_set as demo_data
from alexnet_mp.cli import evaluate as evaluate_cli
from alexnet_mp.cli import predict as predict_cli
from alexnet_mp.cli import train as train_cli
from alexnet_mp.data.store import Store
from alexnet_mp.data.prepare import prepare

from .helpers import assert_one_line_result


def _src(store):
    return os.path.join(os.path.dirname(store), "src")


@pytest.fixture(scope="module")
def jpeg_store(tiny_store, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("jpeg") / "store")
    prepare(_src(tiny_store), out, workers=1, fmt="jpeg", log=lambda *a: None)
    return out


def _truncate(path, keep=0.5):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep) if keep < 1 else size - keep)


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _first_jpeg_offset(store):
    return int(np.fromfile(os.path.join(store, "train", "offsets.i64"), np.int64)[0])


# (format, file, damage, what the line says after the path, repaired by re-running prepare)
DAMAGE = [
    ("raw", "classes.json", os.remove, "is missing: rebuild the store with `python tools/prepare_data.py SRC ", True),
    ("raw", "classes.json", lambda p: _write(p, b'{"classes": ["a"'), "is corrupt (JSONDecodeError)", False),
    ("raw", "train/index.json", _truncate, "is corrupt (JSONDecodeError)", True),
    ("raw", "train/index.json", lambda p: _write(p, b'{"files": ["x"], "labels": [99]}'),
     "has labels outside the 10 classes of classes.json", False),
    ("raw", "train/status.u8", os.remove, "is missing", False),
    ("raw", "train/status.u8", lambda p: _truncate(p, 1), "is truncated (39 bytes; 40 for 40 images)", False),
    ("raw", "train/status.u8", lambda p: _poke(p, 3, b"\x07"), "holds the value 7 (0, 1 or 2 expected)", False),
    ("raw", "train/images.u8", _truncate, "is truncated (3932160 bytes; 7864320 for 40 images of 256x256x3)",
     True),
    ("raw", "val/images.u8", lambda p: _poke(p, os.path.getsize(p), b"\0"), "is longer than expected", False),
    ("raw", "train/images.u8", os.remove, "is missing", True),
    ("raw", "train/stats.npz", _truncate, "is corrupt (BadZipFile)", True),
    ("jpeg", "train/offsets.i64", os.remove, "is missing", False),
    ("jpeg", "val/images.jpg", os.remove, "is missing", False),
    ("jpeg", "train/images.jpg", _truncate, "is truncated or out of step with offsets.i64", True),
    ("jpeg", "train/offsets.i64", lambda p: _truncate(p, 8), "is truncated (632 bytes; 640 for 40 (offset, length)",
     False),
    ("jpeg", "train/images.jpg", lambda p: _poke(p, _first_jpeg_offset(os.path.dirname(os.path.dirname(p))), b"\0\0"),
     "holds no JPEG image at byte", False),
]


@pytest.mark.parametrize("fmt, name, damage, message, repair", DAMAGE,
                         ids=[f"{f}:{n}:{m[:20]}" for f, n, _, m, _ in DAMAGE])
def test_damaged_store_is_one_line_naming_the_file_and_the_rebuild(tiny_store, jpeg_store, tmp_path, capsys,
                                                                   fmt, name, damage, message, repair):
    good = tiny_store if fmt == "raw" else jpeg_store
    store = str(tmp_path / "store")
    shutil.copytree(good, store)
    damage(os.path.join(store, name))
    out = tmp_path / "out"
    code = train_cli.main(["--data-path", store, "--output-dir", str(out), "-j", "0"])
    line = assert_one_line_result(code, capsys, f"{os.path.join(store, name)} {message}")
    if name != "classes.json":
        flag = " --format jpeg" if fmt == "jpeg" else ""       # the command rebuilds the store it names
        assert f"rebuild the store with `python tools/prepare_data.py {_src(tiny_store)} {store}{flag}`" in line
    assert not out.exists()
    if repair:       # the command in the message repairs it
        prepare(_src(tiny_store), store, workers=1, fmt=fmt, log=lambda *a: None)
        fixed, ref = Store(store, "train"), Store(good, "train")
        assert fixed.files == ref.files and np.array_equal(fixed[7][0], ref[7][0])


def test_missing_or_empty_split_is_one_line_before_training(tiny_store, tmp_path, capsys):
    store = str(tmp_path / "store")
    shutil.copytree(tiny_store, store)
    shutil.rmtree(os.path.join(store, "val"))
    code = train_cli.main(["--data-path", store, "--output-dir", str(tmp_path / "out"), "-j", "0"])
    assert_one_line_result(code, capsys, f"split 'val' is missing from the store {store}")
    # A val/ whose every image is unreadable: a real source, prepared.
    src = demo_data.generate(str(tmp_path / "src"), train_per_class=1, val_per_class=1)
    for d, _, names in os.walk(os.path.join(src, "val")):
        for name in names:
            with open(os.path.join(d, name), "wb") as f:
                f.write(b"broken")
    prepare(src, str(tmp_path / "empty"), workers=1, log=lambda *a: None)
    for main, argv in ((train_cli.main, ["--output-dir", str(tmp_path / "out")]),
                       (evaluate_cli.main, ["--checkpoint", str(tmp_path / "unused.pt")])):
        code = main(["--data-path", str(tmp_path / "empty"), "-j", "0"] + argv)
        assert_one_line_result(code, capsys, f"split 'val' of the store {tmp_path / 'empty'} has no images "
                                             f"(10 could not be decoded, listed in")
    no_stats = str(tmp_path / "no_stats")
    shutil.copytree(tiny_store, no_stats)
    os.remove(os.path.join(no_stats, "train", "stats.npz"))
    code = train_cli.main(["--data-path", no_stats, "--output-dir", str(tmp_path / "out"), "-j", "0"])
    assert_one_line_result(code, capsys, f"missing statistics {os.path.join(no_stats, 'train', 'stats.npz')}: "
                                         f"re-run `python tools/prepare_data.py")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def trained(tiny_store, tmp_path_factory):
    """A real training checkpoint, after one step."""
    out = tmp_path_factory.mktemp("trained")
    assert train_cli.main(["--data-path", tiny_store, "--output-dir", str(out), "-b", "8", "-j", "0",
                           "--stop-at-step", "1", "--checkpoint-minutes", "0"]) == 0
    return torch.load(out / "checkpoint.pt", weights_only=True)


def _without(key):
    def edit(state):
        del state[key]
    return edit


def _set(path, value):
    def edit(state):
        *parents, last = path
        for p in parents:
            state = state[p]
        state[last] = value
    return edit


def _shorter_class_list(state):
    state["classes"]["classes"] = state["classes"]["classes"][:5]


BAD_CHECKPOINTS = [
    (_set(("model", "fc7.bias"), None), "checkpoint {p}: fc7.bias is NoneType, expected a float tensor of shape (4096,)"),
    (lambda s: s["model"].pop("fc7.bias"), "checkpoint {p} lacks fc7.bias: it is not a complete alexnet_mp checkpoint"),
    (_set(("model", "fc6.weight"), torch.zeros(4096, 100)),
     "checkpoint {p}: fc6.weight is (4096, 100), expected a float tensor of shape (4096, 9216)"),
    (_shorter_class_list, "checkpoint {p} lists 5 classes but its fc8 has 10 outputs"),
    (_without("optimizer"), "checkpoint {p} has weights but no optimizer state, so a run cannot continue from it"),
    (_set(("optimizer", "velocity", "fc8.weight"), torch.zeros(3, 3)),
     "checkpoint {p}: optimizer velocity fc8.weight is (3, 3), expected a float tensor of shape (10, 4096)"),
    (_without("sampler"), "checkpoint {p} lacks sampler (or holds the wrong type), needed to resume a run"),
    (_set(("data_mean",), torch.zeros(3, 256, 256)), "checkpoint {p}: data_mean is (3, 256, 256), expected the 256x256x3"),
]


@pytest.mark.parametrize("edit, message", BAD_CHECKPOINTS, ids=[m.split(": ")[-1][:30] for _, m in BAD_CHECKPOINTS])
def test_damaged_checkpoint_is_one_line_and_writes_nothing(tiny_store, trained, tmp_path, capsys, edit, message):
    state = {k: (dict(v) if isinstance(v, dict) else v) for k, v in trained.items()}
    state["model"], state["optimizer"] = dict(trained["model"]), {"velocity": dict(trained["optimizer"]["velocity"])}
    state["classes"] = dict(trained["classes"])
    edit(state)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    out = tmp_path / "out"
    code = train_cli.main(["--data-path", tiny_store, "--output-dir", str(out), "-b", "8", "-j", "0",
                           "--resume", str(path)])
    assert_one_line_result(code, capsys, message.format(p=path))
    assert not (out / "checkpoint.pt").exists() and not (out / "metrics.jsonl").exists()
    if "optimizer" not in message and "sampler" not in message:      # inference reads the same checks
        image = os.path.join(_src(tiny_store), "val", Store(tiny_store, "val").files[0])
        assert_one_line_result(predict_cli.main(["--checkpoint", str(path), image]), capsys, message.format(p=path))
