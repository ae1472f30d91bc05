"""Users' files as they come: phone photos tagged with an EXIF orientation, and writes
through symbolic links, FIFOs, devices and a redirected stdout (issue 21)."""
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_mp import AlexNet
from alexnet_mp.cli import benchmark as benchmark_cli
from alexnet_mp.cli import evaluate as evaluate_cli
from alexnet_mp.cli import predict as predict_cli
from alexnet_mp.data.images import to_256
from alexnet_mp.data.prepare import prepare
from alexnet_mp.data.store import Store
from alexnet_mp.data.storecheck import ORIENTED
from alexnet_mp.data.transforms import EvalTransform
from alexnet_mp.eval import figures
from alexnet_mp.eval.visualize import neighbours_file
from alexnet_mp.files import atomic_write, claim, remove_stale_temps

from .conftest import ROOT
from .helpers import assert_one_line_result, snapshot

ORIENTATION_TAG = 0x0112
# A 2x4 grid of 128-pixel blocks, stored 512 wide and 256 high: every block another
# colour, so any turn or mirror moves some colour. 128 is a multiple of JPEG's 16-pixel
# blocks, so the codec blurs only the edges between them.
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0],
                    [0, 255, 255], [255, 0, 255], [255, 255, 255], [0, 0, 0]], np.uint8)
DESIGN = COLOURS.reshape(2, 4, 3).repeat(128, axis=0).repeat(128, axis=1)
# What a viewer shows, by numpy: 6 is "turn 90 degrees clockwise", 3 "turn 180".
SHOWN = {1: DESIGN, 3: np.rot90(DESIGN, 2), 6: np.rot90(DESIGN, -1)}


def central_256(a):
    """The central 256x256 of an image whose shorter side is already 256 (no rescaling)."""
    top, left = (a.shape[0] - 256) // 2, (a.shape[1] - 256) // 2
    return a[top:top + 256, left:left + 256]


def save_tagged(path, orientation):
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    Image.fromarray(DESIGN).save(path, format="JPEG", quality=95, subsampling=0, exif=exif.tobytes())


def upright_reference(path, orientation):
    """The file's own decoded pixels, turned by numpy as SHOWN turns DESIGN, then cropped."""
    with Image.open(path) as img:
        stored = np.asarray(img.convert("RGB"))
    assert stored.shape == DESIGN.shape       # the decoder itself leaves them as stored
    turns = {1: stored, 3: np.rot90(stored, 2), 6: np.rot90(stored, -1)}[orientation]
    return central_256(turns)


def assert_colour_layout(pixels, orientation):
    """Against the drawn design, turned by numpy: the codec's error stays small, and a wrong
    turn (which moves 128-pixel blocks of colours at least 255 apart) is far beyond it."""
    diff = np.abs(pixels.astype(np.int64) - central_256(SHOWN[orientation]).astype(np.int64))
    assert diff.mean() < 3, f"orientation {orientation}: mean error {diff.mean():.2f}"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """{orientation: path} of one tagged JPEG each (1 as the untagged-alike control), in a tree
    of one class folder, ready to prepare."""
    src = tmp_path_factory.mktemp("photos")
    (src / "phone").mkdir()
    paths = {}
    for orientation in (1, 3, 6):
        paths[orientation] = str(src / "phone" / f"orientation{orientation}.jpg")
        save_tagged(paths[orientation], orientation)
    return str(src), paths


@pytest.fixture(scope="module")
def raw_store(photos, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("raw") / "store")
    prepare(photos[0], out, workers=1, log=lambda *a: None, no_val=True)
    return out


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    path = tmp_path_factory.mktemp("bare") / "bare.pt"
    torch.save(AlexNet(10, seed=0).state_dict(), path)
    return str(path)


def stored_pixels(store_path):
    store = Store(store_path, "train")
    return {int(os.path.basename(f)[len("orientation"):-len(".jpg")]): np.asarray(store[i][0])
            for i, f in enumerate(store.files)}


def test_prepare_stores_tagged_photos_the_right_way_up(photos, raw_store, tmp_path):
    _, paths = photos
    raw = stored_pixels(raw_store)
    for orientation, path in paths.items():
        np.testing.assert_array_equal(raw[orientation], upright_reference(path, orientation))
        assert_colour_layout(raw[orientation], orientation)
    jpeg_store = str(tmp_path / "jpeg")
    prepare(photos[0], jpeg_store, workers=1, fmt="jpeg", log=lambda *a: None, no_val=True)
    for orientation, pixels in stored_pixels(jpeg_store).items():
        assert_colour_layout(pixels, orientation)
    for store in (raw_store, jpeg_store):
        with open(os.path.join(store, "classes.json")) as f:
            assert json.load(f)[ORIENTED] is True


def test_predict_and_neighbours_see_the_photo_the_right_way_up(photos, tiny_store, bare, monkeypatch, capsys):
    _, paths = photos
    for orientation, path in paths.items():
        np.testing.assert_array_equal(to_256(path), upright_reference(path, orientation))
    seen = []

    def classify(model, images, transform, crops):
        seen.extend(images)
        return np.full((len(images), 5), 0.1, np.float32), np.tile(np.arange(5), (len(images), 1))

    monkeypatch.setattr(predict_cli, "classify", classify)
    argv = ["--checkpoint", bare, "--data-path", tiny_store, "--crops", "1", paths[6], paths[3]]
    assert predict_cli.main(argv) == 0
    np.testing.assert_array_equal(seen[0], upright_reference(paths[6], 6))
    np.testing.assert_array_equal(seen[1], upright_reference(paths[3], 3))

    class Stop(Exception):
        pass

    queries = []

    def nearest(model, q, loader, device, k):
        queries.append(q)
        raise Stop

    monkeypatch.setattr(figures, "nearest", nearest)
    with pytest.raises(Stop):
        neighbours_file(bare, tiny_store, [paths[6]], "unused.png", k=1)
    with np.load(os.path.join(tiny_store, "train", "stats.npz")) as stats:
        centre = EvalTransform(stats["mean"], crops=1)
    # atol: the mean image may reach the transform in float32; a wrong turn is off by up to 255
    torch.testing.assert_close(queries[0][0], centre(upright_reference(paths[6], 6)), rtol=0, atol=1e-3)


def test_a_store_prepared_before_orientation_keeps_working_and_says_how_to_rebuild(raw_store, tmp_path):
    old = str(tmp_path / "old")
    shutil.copytree(raw_store, old)
    meta_path = os.path.join(old, "classes.json")
    with open(meta_path) as f:
        meta = json.load(f)
    del meta[ORIENTED]                    # what prepare wrote before this record existed
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    src = meta["source"]
    for store, said in ((raw_store, False), (old, True)):
        before, lines = snapshot(store), []
        prepare(src, store, workers=1, log=lines.append, no_val=True)
        assert snapshot(store) == before, "a re-run on a finished store writes nothing"
        notes = [line for line in lines if "EXIF orientation" in line]
        assert len(notes) == (1 if said else 0), lines
    assert f"remove {old} and run `python tools/prepare_data.py {src} {old} --no-val` again" in notes[0]
    assert len(Store(old, "train")) == 3
    with open(meta_path) as f:
        assert ORIENTED not in json.load(f)       # never claimed for images stored sideways


def evaluate(tiny_store, bare, *flags):
    return evaluate_cli.main(["--checkpoint", bare, "--data-path", tiny_store, "-j", "0", "--crops", "1",
                              "-b", "64", *flags])


def test_json_through_a_link_replaces_the_target_and_keeps_the_link(tiny_store, bare, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "eval.json"
    target.write_text("old contents")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert evaluate(tiny_store, bare, "--json", str(link)) == 0
    assert os.readlink(link) == str(target)
    summary = json.loads(target.read_text())
    assert summary["num_images"] == 20 and summary["crops"] == 1 and summary["checkpoint"] == bare
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "link.json"]
    assert os.listdir(elsewhere) == ["eval.json"]


def test_atomic_write_follows_links_even_to_a_file_not_made_yet(tmp_path):
    bigger = tmp_path / "bigger_disk"
    bigger.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint.pt").symlink_to(bigger / "run1.pt")       # dangling until the first save
    (out / "b.txt").symlink_to("a.txt")                         # relative, to a regular file
    (out / "a.txt").write_text("old")
    for content in ("first", "second"):
        atomic_write(str(out / "checkpoint.pt"), lambda f: f.write(content.encode()))
        assert (bigger / "run1.pt").read_text() == content
    atomic_write(str(out / "b.txt"), lambda f: f.write("new"), "w")
    assert (out / "a.txt").read_text() == "new" and os.readlink(out / "b.txt") == "a.txt"
    assert os.path.islink(out / "checkpoint.pt") and os.listdir(bigger) == ["run1.pt"]


def test_temporary_files_left_beside_a_links_target_are_removed_if_their_writer_is_dead(tmp_path):
    with open("/proc/sys/kernel/pid_max") as f:
        dead = int(f.read()) + 1            # above pid_max: no process can have it
    alive = os.getppid()
    bigger, out = tmp_path / "bigger_disk", tmp_path / "out"
    bigger.mkdir()
    out.mkdir()
    (out / "checkpoint.pt").symlink_to(bigger / "run1.pt")
    for folder, name in ((bigger, "run1.pt"), (out, "model_best.pt")):
        for pid in (dead, alive):
            (folder / f"{name}.tmp{pid}").write_bytes(b"half a checkpoint")
    (bigger / f"other.pt.tmp{dead}").write_bytes(b"not ours")
    lock = claim(str(out), ("checkpoint.pt", "model_best.pt"), "--output-dir", log=lambda *a: None)
    lock.release()
    # The lock covers OUTPUT_DIR, so a live writer's file there is a crashed run's too (its
    # pid reused); beside the target only the dead writer's file can be known to be stale.
    assert sorted(os.listdir(bigger)) == sorted([f"run1.pt.tmp{alive}", f"other.pt.tmp{dead}"])
    assert sorted(os.listdir(out)) == sorted(["checkpoint.pt", ".alexnet_mp.lock"])
    assert remove_stale_temps(str(out), ("checkpoint.pt",)) == []


def test_json_into_a_fifo_reaches_its_reader(tiny_store, bare, tmp_path, capsys):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    try:
        code = evaluate(tiny_store, bare, "--json", str(fifo))
    finally:
        if reader.is_alive():      # nothing was written: let the reader see the end of the pipe
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        reader.join(timeout=30)
    assert code == 0 and stat.S_ISFIFO(os.stat(fifo).st_mode)
    summary = json.loads(got[0])
    assert summary["num_images"] == 20 and summary["crops"] == 1
    assert os.listdir(tmp_path) == ["pipe.json"]


def full_device(folder):
    """A character device 1:7 (what /dev/full is) in `folder`; skips where none can be made or written."""
    path = os.path.join(folder, "full")
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 7))
    except PermissionError:
        pytest.skip("this process may not make device files")
    try:
        with open(path, "wb") as f:
            f.write(b"x")
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            os.remove(path)
            pytest.skip(f"this file system forbids device files ({e.strerror})")
        assert e.errno == errno.ENOSPC, e
    return path


def test_json_into_a_full_device_is_one_line_and_the_device_stays(tiny_store, bare, tmp_path, capsys):
    device = full_device(str(tmp_path))
    capsys.readouterr()
    line = assert_one_line_result(evaluate(tiny_store, bare, "--json", device), capsys,
                                  f"{device} cannot be written: the disk is full")
    assert "GiB free" not in line
    assert stat.S_ISCHR(os.stat(device).st_mode) and os.stat(device).st_rdev == os.makedev(1, 7)
    assert os.listdir(tmp_path) == ["full"]


def test_a_write_to_the_file_stdout_goes_to_comes_after_what_was_printed(tmp_path):
    out = tmp_path / "out.txt"
    code = (f"from alexnet_mp.files import write_json\n"
            f"print('before')\n"
            f"write_json({str(out)!r}, {{'a': 1}})\n"
            f"print('after')\n")
    with open(out, "w") as f:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=f, stderr=subprocess.PIPE,
                              env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == 'before\n{\n "a": 1\n}after\n'
    assert os.listdir(tmp_path) == ["out.txt"]


def test_benchmark_on_a_missing_gpu_is_one_line(capsys):
    assert_one_line_result(benchmark_cli.main(["--device", "cuda", "model"]), capsys,
                           "--device cuda: no such GPU here (0 visible)")
