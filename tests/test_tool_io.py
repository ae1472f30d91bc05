"""visualize, predict and evaluate: every output path, missing input and empty result is one line.

Output paths are checked before any work, so each case also asserts that
nothing was written.
"""
import os

import pytest
import torch

from alexnet_mp import AlexNet
from alexnet_mp.cli import evaluate as evaluate_cli
from alexnet_mp.cli import predict as predict_cli
from alexnet_mp.cli import visualize as visualize_cli

from .helpers import assert_one_line_result, read_only_folder


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    path = tmp_path_factory.mktemp("bare") / "bare.pt"
    torch.save(AlexNet(10, seed=0).state_dict(), path)
    return str(path)


def test_bad_output_paths_are_one_line_before_any_work(tiny_store, bare, tmp_path, capsys):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    missing = tmp_path / "no" / "such"
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"epoch": 0, "step": 1, "loss": 2.3, "lr": 0.01, "train_top1_err": 0.9, '
                       '"train_top5_err": 0.5}\n')
    ev = ["--checkpoint", bare, "--data-path", tiny_store, "-j", "0"]
    cases = [
        (visualize_cli.main, ["filters", "--checkpoint", bare, "--out", str(folder)],
         f"--out {folder} is a folder: pass a file name in it, e.g. {folder / 'out.png'}"),
        (visualize_cli.main, ["filters", "--checkpoint", bare, "--out", str(missing / "f.png")],
         f"--out {missing / 'f.png'}: the folder {missing} does not exist; create it or choose another path"),
        (visualize_cli.main, ["filters", "--checkpoint", bare, "--out", str(tmp_path / "f.xyz")],
         "the file type '.xyz' is not one this can write; end the name with one of .png"),
        (visualize_cli.main, ["curves", "--metrics", str(metrics), "--out", str(tmp_path / "curves")],
         "the file type '' is not one this can write"),
        (visualize_cli.main, ["neighbours", "--checkpoint", bare, "--data-path", tiny_store, "--query", bare,
                              "--out", str(folder)], "is a folder"),
        (evaluate_cli.main, ev + ["--json", str(folder)], f"--json {folder} is a folder"),
        (evaluate_cli.main, ev + ["--predictions", str(missing / "p.csv")], f"the folder {missing} does not exist"),
    ]
    for main, argv, message in cases:
        assert_one_line_result(main(argv), capsys, message)
    assert os.listdir(folder) == [] and not missing.parent.exists()
    assert sorted(os.listdir(tmp_path)) == ["a_folder", "metrics.jsonl"]


def test_unwritable_output_folder_is_one_line(bare, tmp_path, capsys):
    locked = read_only_folder(tmp_path / "locked")
    code = visualize_cli.main(["filters", "--checkpoint", bare, "--out", str(locked / "f.png")])
    assert_one_line_result(code, capsys, "cannot be written in")


def test_missing_inputs_and_empty_results_are_one_line(tiny_store, bare, tmp_path, capsys):
    empty, junk_dir = tmp_path / "empty", tmp_path / "junk"
    empty.mkdir()
    junk_dir.mkdir()
    (junk_dir / "notes.txt").write_text("not an image")
    (junk_dir / "fake.jpg").write_text("not an image either")
    no_records, torn = tmp_path / "none.jsonl", tmp_path / "torn.jsonl"
    no_records.write_text("\n")
    out = str(tmp_path / "fig.png")
    pred = ["--checkpoint", bare, "--data-path", tiny_store]
    cases = [
        (predict_cli.main, pred + [str(tmp_path / "nowhere.jpg")],
         f"{tmp_path / 'nowhere.jpg'} does not exist: pass image files or folders holding them"),
        (predict_cli.main, pred + [str(empty)], f"no images in {empty} (none ends in .jpg/.jpeg/.png...)"),
        (predict_cli.main, pred + [str(junk_dir)], "none of the 1 file(s) could be read as an image"),
        (visualize_cli.main, ["curves", "--metrics", str(tmp_path / "nowhere.jsonl"), "--out", out],
         "no metrics file at"),
        (visualize_cli.main, ["curves", "--metrics", str(no_records), "--out", out], "holds no records yet"),
        (visualize_cli.main, ["filters", "--checkpoint", str(tmp_path / "nowhere.pt"), "--out", out],
         "no checkpoint at"),
        (visualize_cli.main, ["neighbours", "--checkpoint", bare, "--data-path", tiny_store, "-k", "41",
                              "--query", str(junk_dir / "fake.jpg"), "--out", out],
         "-k 41 is more than the 40 training images"),
        (visualize_cli.main, ["neighbours", "--checkpoint", bare, "--data-path", tiny_store, "-k", "0",
                              "--query", str(junk_dir / "fake.jpg"), "--out", out], "-k 0 is out of range"),
        (visualize_cli.main, ["neighbours", "--checkpoint", bare, "--data-path", tiny_store,
                              "--query", str(junk_dir / "fake.jpg"), "--out", out], "cannot read query image"),
        (evaluate_cli.main, ["--checkpoint", bare, "--data-path", tiny_store, "-b", "0"], "-b 0 is out of range"),
        (evaluate_cli.main, ["--checkpoint", bare, "--data-path", tiny_store, "--split", "test"],
         "split 'test' is missing"),
    ]
    for main, argv, message in cases:
        assert_one_line_result(main(argv), capsys, message)
    assert not os.path.exists(out)
    # A torn last line (a run killed while writing it) is skipped with one warning, not an error.
    records = "".join(f'{{"epoch": 0, "step": {s}, "loss": {3 - s / 10}, "lr": 0.01, "train_top1_err": 0.8, '
                      f'"train_top5_err": 0.4}}\n' for s in range(1, 6))
    torn.write_text(records + '{"epoch": 0, "step": 6, "lo')
    assert visualize_cli.main(["curves", "--metrics", str(torn), "--out", out]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipped 1 unreadable line(s) (line 6)" in err[0] and os.path.getsize(out) > 0
