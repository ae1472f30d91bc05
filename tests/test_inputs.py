"""Bad command lines and bad sources: one line naming the fix, exit 2, nothing created.

Every case runs the tool's main(argv) in-process, as the console script does.
"""
import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from alexnet_mp.cli import evaluate as evaluate_cli
from alexnet_mp.cli import predict as predict_cli
from alexnet_mp.cli import prepare_data
from alexnet_mp.cli import train as train_cli
from alexnet_mp.data.store import Store
from alexnet_mp.data.prepare import prepare

from .helpers import assert_one_line_result, read_only_folder, snapshot

BAD_TRAIN_ARGS = [
    (["-b", "0"], "-b 0 is out of range: it must be a positive number of images per replica"),
    (["-b", "abc"], "argument -b/--batch-size: invalid int value: 'abc'"),
    (["-j", "-1"], "-j -1 is out of range: it must be 0 (load in the main process) or more"),
    (["--epochs", "0"], "--epochs 0 is out of range: it must be a positive number of epochs"),
    (["--lr", "0"], "--lr 0.0 is out of range: it must be a positive learning rate"),
    (["--lr", "nan"], "--lr nan is out of range"),
    (["--lr", "inf"], "--lr inf is out of range"),
    (["--momentum", "1"], "--momentum 1.0 is out of range: it must be in [0, 1)"),
    (["--momentum", "-0.1"], "--momentum -0.1 is out of range"),
    (["--wd", "-0.0001"], "--wd -0.0001 is out of range: it must be 0 or a positive weight decay"),
    (["--dropout", "1"], "--dropout 1.0 is out of range: it must be a probability in [0, 1)"),
    (["--init-std", "0"], "--init-std 0.0 is out of range: it must be a positive standard deviation"),
    (["--pca-std", "-0.1"], "--pca-std -0.1 is out of range"),
    (["--plateau-patience", "0"], "--plateau-patience 0 is out of range: it must be at least 1 epoch"),
    (["--print-freq", "0"], "--print-freq 0 is out of range: it must be a positive number of steps"),
    (["--checkpoint-minutes", "-1"], "--checkpoint-minutes -1.0 is out of range"),
    (["--stop-at-step", "-3"], "--stop-at-step -3 is out of range"),
    (["--seed", "-1"], "--seed -1 is out of range: it must be an integer in [0, 2^32)"),
    (["--lr-steps", "0,30"], "--lr-steps 0,30 must be increasing positive epochs"),
    (["--lr-steps", "60,30"], "--lr-steps 60,30 must be increasing positive epochs"),
    (["--lr-steps", "30,x"], "'30,x' is not a comma-separated list of epochs, e.g. 30,60,80"),
    (["--devices", "gpu0,gpu1"], "--devices gpu0,gpu1: 'gpu0' is not a device; write two devices as cuda:0,cuda:1"),
    (["--devices", "cuda:x,cuda:1"], "'cuda:x' is not a device"),
    (["--resume", "nowhere.pt"], "--resume nowhere.pt: no such file; pass 'auto'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("extra, message", BAD_TRAIN_ARGS, ids=[" ".join(a) for a, _ in BAD_TRAIN_ARGS])
def test_out_of_range_training_arguments_are_one_line(tiny_store, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    code = train_cli.main(["--data-path", tiny_store, "--output-dir", str(out)] + extra)
    assert_one_line_result(code, capsys, message)
    assert not out.exists()


def _image(path, size=(40, 32), seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def flat_val_tree(tmp_path_factory):
    """train/{a,b}/ and a flat val/ folder labelled by a CSV."""
    root = tmp_path_factory.mktemp("flat")
    for i, rel in enumerate(("train/a/0.png", "train/a/1.png", "train/b/0.png", "val/v0.png", "val/v1.png")):
        _image(str(root / rel), seed=i)
    return root


def _csv(tmp_path, content):
    path = tmp_path / "labels.csv"
    path.write_bytes(content)
    return str(path)


BAD_CSVS = [
    (b"filename,class\nv0.png,a\nv1.png\n", "line 3 ('v1.png') is not a 'filename,class' row: fix or remove it"),
    (b"v0.png,a\nv1.png,zebra\n", "line 2: class 'zebra' of v1.png is not a class folder of train/"),
    (b"v0.png,a\nv9.png,b\n", "line 2: {val}/v9.png does not exist: fix the file name or remove the row"),
    (b"v0.png,a\nv1.png,caf\xe9\n", "line 2 is not UTF-8 text (b'v1.png,caf\\xe9'): save the --labels CSV as UTF-8"),
    (b"v0.png,a\nv0.png,b\n", "line 2: v0.png is listed again (first on line 1): remove one row"),
    (b"filename,class\n", "has no 'filename,class' rows: it must label the images in {val}"),
]


@pytest.mark.parametrize("content, message", BAD_CSVS)
def test_bad_label_csv_rows_are_named(flat_val_tree, tmp_path, capsys, content, message):
    out = tmp_path / "store"
    code = prepare_data.main([str(flat_val_tree), str(out), "-j", "1", "--labels", _csv(tmp_path, content)])
    assert_one_line_result(code, capsys, message.format(val=flat_val_tree / "val"))
    assert not out.exists()


def test_bad_prepare_paths_are_one_line(flat_val_tree, tmp_path, capsys):
    src, csv_path = str(flat_val_tree), _csv(tmp_path, b"v0.png,a\nv1.png,b\n")
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    names = tmp_path / "names.txt"
    names.write_bytes(b"a first\nb caf\xe9\n")
    lab = ["--labels", csv_path]
    cases = [
        ([src, str(a_file)] + lab, f"OUT {a_file} is a file, not a folder: choose another OUT"),
        ([src, str(a_file / "store")] + lab,
         f"OUT {a_file / 'store'} cannot be written (Not a directory): choose another OUT"),
        ([src, str(flat_val_tree / "train" / "store")] + lab, "is inside the source tree"),
        ([str(a_file), str(tmp_path / "o")], f"source folder {a_file} is a file, not a folder"),
        ([src, str(tmp_path / "o"), "--names", str(names)] + lab, "line 2 is not UTF-8 text"),
        ([src, str(tmp_path / "o"), "--labels", str(tmp_path / "none.csv")], "none.csv does not exist"),
        ([src, str(tmp_path / "o"), "--format", "png"] + lab, "argument --format: invalid choice: 'png'"),
        ([src, str(tmp_path / "o"), "-j", "0"] + lab, "-j 0 is out of range: it must be at least 1"),
    ]
    for argv, message in cases:
        assert_one_line_result(prepare_data.main(argv), capsys, message)
    assert a_file.read_text() == "keep me"
    assert not (tmp_path / "o").exists() and not (flat_val_tree / "train" / "store").exists()


def test_unwritable_out_and_output_dir_are_one_line(flat_val_tree, tiny_store, tmp_path, capsys):
    locked = read_only_folder(tmp_path / "locked")
    code = prepare_data.main([str(flat_val_tree), str(locked / "store"), "--labels",
                              _csv(tmp_path, b"v0.png,a\nv1.png,b\n")])
    assert_one_line_result(code, capsys, "cannot be written (Permission denied): choose another OUT")
    code = train_cli.main(["--data-path", tiny_store, "--output-dir", str(locked), "-j", "0"])
    assert_one_line_result(code, capsys, f"--output-dir {locked} cannot be written (Permission denied): "
                                         f"choose another --output-dir")
    assert os.listdir(locked) == []


def test_rerun_on_a_finished_store_writes_nothing(tiny_store, capsys):
    src = os.path.join(os.path.dirname(tiny_store), "src")
    before = snapshot(tiny_store)
    assert prepare_data.main([src, tiny_store, "-j", "1"]) == 0
    assert snapshot(tiny_store) == before
    assert "train: 40 images converted, 0 could not be decoded" in capsys.readouterr().out


def _png16(a):
    """A 16-bit PNG written by hand (PIL cannot write 16-bit RGB): the independent source."""
    a = np.asarray(a, dtype=">u2")
    h, w = a.shape[:2]
    colour = 0 if a.ndim == 2 else 2

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + a[y].tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16_bit_pngs_keep_their_high_byte_not_clipped(tmp_path):
    rng = np.random.default_rng(7)
    grey, rgb = rng.integers(0, 65536, size=(300, 256)), rng.integers(0, 65536, size=(300, 256, 3))
    for rel, pixels in (("train/a/grey16.png", grey), ("train/b/rgb16.png", rgb)):
        os.makedirs(os.path.dirname(tmp_path / "src" / rel), exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(_png16(pixels))
    assert Image.open(io.BytesIO(_png16(grey))).mode == "I;16"       # the case convert("RGB") clips
    prepare(str(tmp_path / "src"), str(tmp_path / "store"), workers=1, log=lambda *a: None, no_val=True)
    store = Store(str(tmp_path / "store"), "train")
    # 256 wide, 300 tall: no resize, the central 256 rows (from row 22) are kept.
    expected = {"a/grey16.png": np.repeat((grey >> 8)[22:278, :, None], 3, axis=2),
                "b/rgb16.png": (rgb >> 8)[22:278]}
    for name, want in expected.items():
        got = store[store.files.index(name)][0]
        assert np.array_equal(got, want.astype(np.uint8)), name
    assert 100 < got.mean() < 155          # clipping would give 255 almost everywhere


def test_file_names_that_are_not_utf8_reach_the_report_and_csv(tmp_path, capsys):
    src = os.fsencode(str(tmp_path / "src"))
    for i, rel in enumerate((b"train/a/0.png", b"train/b/1.png", b"val/a/caf\xe9.png", b"val/b/2.png")):
        _image(os.fsdecode(os.path.join(src, rel)), seed=i)
    with open(os.path.join(src, b"train/b/bad\xff.png"), "wb") as f:
        f.write(b"not an image")
    store = str(tmp_path / "store")
    assert prepare_data.main([os.fsdecode(src), store, "-j", "1"]) == 0
    assert b"b/bad\xff.png\t" in (tmp_path / "store" / "train" / "report.txt").read_bytes()
    import torch
    from alexnet_mp import AlexNet
    torch.save(AlexNet(2, seed=0).state_dict(), tmp_path / "bare.pt")
    csv_path = tmp_path / "p.csv"
    assert evaluate_cli.main(["--checkpoint", str(tmp_path / "bare.pt"), "--data-path", store, "-j", "0",
                              "--crops", "1", "--predictions", str(csv_path)]) == 0
    assert b"\na/caf\xe9.png,a," in csv_path.read_bytes()
    capsys.readouterr()
    assert predict_cli.main(["--checkpoint", str(tmp_path / "bare.pt"), "--data-path", store, "--crops", "1",
                             os.fsdecode(os.path.join(src, b"val/a"))]) == 0
    assert "caf\\xe9.png" in capsys.readouterr().out


def test_an_output_dir_under_a_file_is_one_line_before_training(tiny_store, tmp_path, capsys):
    """Unwritable for root too, unlike a read-only folder: a file where a folder must be."""
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    code = train_cli.main(["--data-path", tiny_store, "--output-dir", str(a_file / "run"), "-j", "0"])
    assert_one_line_result(code, capsys, f"--output-dir {a_file / 'run'} cannot be written")
    assert a_file.read_text() == "keep me" and os.listdir(tmp_path) == ["a_file"]
