"""The fine-tune path kept whole (issue 26, points 6 and 7): class names matched by name between a
checkpoint and a store, variant flags that the user gave, resuming a variant fine-tune, the fc8
redraw line, and a lock released twice.

The checkpoints are written here from a network's state dict (or, for the import, a .caffemodel
written by tests/caffe_writer.py); the expected fc8 is the test's own permutation of those rows."""
import csv
import os

import numpy as np
import pytest
import torch

from alexnet_mp import AlexNet, ModelConfig
from alexnet_mp.cli.train import config_from_args, parser
from alexnet_mp.config import TrainConfig, to_dict
from alexnet_mp.data.storecheck import read_classes
from alexnet_mp.errors import UsageError

from . import caffe_writer as cw
from .helpers import assert_one_line_result


def save_checkpoint(path, sd, classes, cfg=None):
    """A checkpoint as train.py saves it for inference: weights, config, classes, mean."""
    state = {"model": sd, "classes": classes, "data_mean": torch.full((256, 256, 3), 110.0)}
    if cfg is not None:
        state["config"] = to_dict(cfg)
    torch.save(state, path)
    return str(path)


def decisive(seed=3, cfg=None):
    """A 10-class net whose answers are far from ties (fc8 scaled up); its state dict."""
    net = AlexNet(10, seed=seed, config=cfg)
    with torch.no_grad():
        net.fc8.weight.mul_(40)
        net.fc8.bias.copy_(torch.linspace(-1, 1, 10))     # distinct biases: a row moved shows
    return {k: v.clone() for k, v in net.state_dict().items()}


def reversed_rows(sd):
    return {**sd, "fc8.weight": sd["fc8.weight"].flip(0), "fc8.bias": sd["fc8.bias"].flip(0)}


def job(checkpoint, store, out, flags=()):
    """A --weights run's job as train() builds it, before its first step; (job, logged lines)."""
    from alexnet_mp import checkpoint as ckpt_io
    from alexnet_mp.distributed.launch import Run
    from alexnet_mp.train.loop import Options, build_job
    from alexnet_mp.train.weights import weights_config
    lines = []
    start = ckpt_io.load(str(checkpoint))
    cfg = weights_config(start, str(checkpoint), config_from_args(parser().parse_args(["-b", "4", *flags])))
    run = Run(None, log=lines.append, model=cfg.model)
    opts = Options(data_path=store, output_dir=str(out), weights=str(checkpoint), workers=0)
    try:
        return build_job(opts, cfg, run, read_classes(store), start), lines
    finally:
        run.close()


# --- an import without --names ---------------------------------------------------------------

@pytest.fixture(scope="module")
def unnamed_import(tmp_path_factory):
    """A 10-class bvlc_alexnet-shaped net imported without --names; (checkpoint, Caffe's fc8 weights)."""
    from alexnet_mp.cli.import_caffe import main
    folder = tmp_path_factory.mktemp("unnamed")
    weights = cw.random_weights(10, seed=4)
    model, mean = folder / "net.caffemodel", folder / "mean.binaryproto"
    cw.write_net(model, cw.alexnet_specs(weights))
    cw.write_mean(mean, np.full((3, 256, 256), 100.0))
    out = folder / "imported.pt"
    assert main([str(model), "--mean", str(mean), "--output", str(out)]) == 0
    model.unlink()
    return out, weights["fc8"]


def test_an_import_without_names_records_placeholders_and_weights_keeps_its_fc8(unnamed_import, tiny_store,
                                                                                  tmp_path):
    path, (fc8_w, fc8_b) = unnamed_import
    meta = torch.load(path, weights_only=True)["classes"]
    assert meta["placeholder"] is True and meta["classes"] == [str(i) for i in range(10)]
    built, lines = job(path, tiny_store, tmp_path / "out")           # tiny_store: 10 named classes
    got = built.parts.net.canonical_state_dict()
    # Caffe's fc8 with its inverted dropout folded in (x2, spec §1), rows in Caffe's order
    assert torch.equal(got["fc8.weight"], torch.from_numpy(fc8_w) * 2)
    assert torch.equal(got["fc8.bias"], torch.from_numpy(fc8_b))
    assert any("placeholders" in line and "fc8 is kept" in line for line in lines), lines


# --- evaluate and predict with a store: class lists, by name ----------------------------------

def _evaluate(checkpoint, store, out, capsys):
    from alexnet_mp.cli.evaluate import main
    capsys.readouterr()
    assert main(["--checkpoint", checkpoint, "--data-path", store, "-j", "0", "--crops", "1", "-b", "10",
                 "--predictions", str(out)]) == 0
    printed = capsys.readouterr().out
    with open(out) as f:
        return list(csv.DictReader(f)), printed


def _predict(checkpoint, store, image, capsys):
    from alexnet_mp.cli.predict import main
    capsys.readouterr()
    assert main([image, "--checkpoint", checkpoint, "--data-path", store, "--crops", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    return [line for line in lines if line.startswith("  ")], lines


def _first_val_image(store):
    root = os.path.join(os.path.dirname(store), "src", "val")
    folder = sorted(os.listdir(root))[4]
    return os.path.join(root, folder, sorted(os.listdir(os.path.join(root, folder)))[0])


def test_evaluate_and_predict_map_a_checkpoints_other_class_order_by_name(tiny_store, tmp_path, capsys):
    """The same weights saved with the store's order and with the reverse order (fc8's rows reversed
    with it) are one classifier: evaluate's and predict's answers, by class name, are the same."""
    classes = read_classes(tiny_store)
    sd = decisive()
    straight = save_checkpoint(tmp_path / "straight.pt", sd, classes)
    backwards = save_checkpoint(tmp_path / "backwards.pt", reversed_rows(sd),
                                {"classes": classes["classes"][::-1], "names": {}})
    ref, _ = _evaluate(straight, tiny_store, tmp_path / "a.csv", capsys)
    got, printed = _evaluate(backwards, tiny_store, tmp_path / "b.csv", capsys)
    assert "in another order" in printed
    # Read unmapped, the reversed checkpoint would name each answer by its mirror (class i as 9 - i).
    for a, b in zip(ref, got):
        assert [a[f"top{k}"] for k in range(1, 6)] == [b[f"top{k}"] for k in range(1, 6)]
        assert float(a["prob1"]) == pytest.approx(float(b["prob1"]), abs=1e-6)
    image = _first_val_image(tiny_store)
    assert _predict(backwards, tiny_store, image, capsys)[0] == _predict(straight, tiny_store, image, capsys)[0]


@pytest.mark.parametrize("tool", ["evaluate", "predict"])
def test_a_checkpoint_of_other_classes_is_one_line_naming_the_first_difference(tool, tiny_store, tmp_path,
                                                                               capsys):
    from alexnet_mp.cli import evaluate, predict
    classes = read_classes(tiny_store)["classes"]
    other = classes[:7] + ["dog", "cat", "emu"]
    path = save_checkpoint(tmp_path / "other.pt", decisive(), {"classes": other, "names": {}})
    argv = {"evaluate": (evaluate.main, ["--checkpoint", path, "--data-path", tiny_store, "-j", "0"]),
            "predict": (predict.main, [_first_val_image(tiny_store), "--checkpoint", path,
                                       "--data-path", tiny_store])}[tool]
    capsys.readouterr()
    line = assert_one_line_result(argv[0](argv[1]), capsys, f"lists other classes than {tiny_store}")
    assert f"the store's class {classes[7]!r} is not among the checkpoint's (5 more differences)" in line


def test_a_checkpoint_with_placeholder_names_evaluates_with_a_note(tiny_store, tmp_path, capsys):
    classes = read_classes(tiny_store)
    sd = decisive()
    named = save_checkpoint(tmp_path / "named.pt", sd, classes)
    unnamed = save_checkpoint(tmp_path / "unnamed.pt", sd, {"classes": [str(i) for i in range(10)], "names": {},
                                                            "placeholder": True})
    ref, _ = _evaluate(named, tiny_store, tmp_path / "a.csv", capsys)
    got, printed = _evaluate(unnamed, tiny_store, tmp_path / "b.csv", capsys)
    notes = [line for line in printed.splitlines() if "placeholders" in line]
    assert len(notes) == 1 and "read as" in notes[0], printed
    assert [r["top1"] for r in got] == [r["top1"] for r in ref]


# --- --weights: fc8 rows by name, the run's init ----------------------------------------------

def test_weights_keep_fc8_reordered_by_name_when_the_store_has_the_classes_in_another_order(tiny_store,
                                                                                          tmp_path):
    classes = read_classes(tiny_store)
    sd = decisive()
    path = save_checkpoint(tmp_path / "backwards.pt", reversed_rows(sd),
                           {"classes": classes["classes"][::-1], "names": {}})
    built, lines = job(path, tiny_store, tmp_path / "out")
    got = built.parts.net.canonical_state_dict()
    assert torch.equal(got["fc8.weight"], sd["fc8.weight"]) and torch.equal(got["fc8.bias"], sd["fc8.bias"])
    assert torch.equal(got["fc7.weight"], sd["fc7.weight"])
    assert any("another order" in line and "reordered by name" in line for line in lines), lines


@pytest.mark.parametrize("flags, said", [(["--init-std", "0.02"], "N(0, 0.02^2), bias 0"),
                                         (["--init", "torch"], "--init torch: PyTorch's default")])
def test_the_fc8_redraw_line_names_the_runs_init(flags, said, tiny_store, tmp_path):
    net = AlexNet(7, seed=1)                                   # 7 classes against the store's 10
    path = save_checkpoint(tmp_path / "seven.pt", net.state_dict(),
                           {"classes": [f"c{i}" for i in range(7)], "names": {}})
    built, lines = job(path, tiny_store, tmp_path / "out", flags)
    redraw = [line for line in lines if "drawn anew" in line]
    assert len(redraw) == 1 and said in redraw[0], lines
    w = built.parts.net.canonical_state_dict()["fc8.weight"]
    if flags[0] == "--init-std":
        assert 0.0195 < w.std().item() < 0.0205                 # 40,960 draws: std within 1% of 0.02
    else:
        bound = 1 / 64                                          # U(-1/sqrt(4096), 1/sqrt(4096))
        assert w.abs().max().item() <= bound and w.abs().max().item() > 0.99 * bound


# --- variant flags with --weights, and resuming a variant fine-tune ---------------------------

@pytest.mark.parametrize("variant, asked, clash", [
    (["--columns", "1"], ["--columns", "2"], "columns: 1 in the checkpoint, 2 asked"),
    (["--pool", "2"], ["--pool", "3"], "pool_size: 2 in the checkpoint, 3 asked"),
    (["--dropout", "0"], ["--dropout", "0.5"], "dropout: 0.0 in the checkpoint, 0.5 asked")])
def test_a_variant_flag_at_the_papers_value_against_a_variant_checkpoint_is_one_line(variant, asked, clash,
                                                                                     tiny_store, tmp_path, capsys):
    from alexnet_mp.cli.train import main
    cfg = config_from_args(parser().parse_args(variant))
    path = save_checkpoint(tmp_path / "variant.pt", AlexNet(10, seed=0, config=cfg.model).state_dict(),
                           read_classes(tiny_store), cfg)
    capsys.readouterr()
    code = main(["--weights", path, "--data-path", tiny_store, "--output-dir", str(tmp_path / "out"), "-j", "0",
                 "-b", "4", "--stop-at-step", "1", "--checkpoint-minutes", "0", *asked])
    assert_one_line_result(code, capsys, f"--weights {path} holds another variant ({clash})")
    assert not os.path.exists(tmp_path / "out" / "checkpoint.pt")


def test_a_weights_fine_tune_of_a_variant_resumes_with_resume_auto_alone(tiny_store, tmp_path, capsys):
    from alexnet_mp.cli.train import main
    cfg = TrainConfig(model=ModelConfig(columns=1, lrn=False))
    path = save_checkpoint(tmp_path / "variant.pt", AlexNet(10, seed=0, config=cfg.model).state_dict(),
                           read_classes(tiny_store), cfg)
    out = tmp_path / "out"
    common = ["--data-path", tiny_store, "--output-dir", str(out), "-j", "0", "-b", "4", "--epochs", "3",
              "--checkpoint-minutes", "0", "--lr", "1e-5"]
    assert main(["--weights", path, "--stop-at-step", "1", *common]) == 0
    capsys.readouterr()
    assert main(["--resume", "auto", "--stop-at-step", "2", *common]) == 0
    assert "resumed from" in capsys.readouterr().out
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 2
    assert (saved["config"]["model"]["columns"], saved["config"]["model"]["lrn"]) == (1, False)


# --- a lock released twice ---------------------------------------------------------------------

def test_a_second_release_does_not_unlock_another_folder_that_reused_the_descriptor(tmp_path):
    from alexnet_mp.files import FolderLock
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = FolderLock(str(tmp_path / "a"), "choose another folder")
    number = a.fd
    a.release()
    b = FolderLock(str(tmp_path / "b"), "choose another folder")
    assert b.fd == number                           # the OS hands out the lowest free number again
    a.release()
    del a                                           # __del__ releases once more
    with pytest.raises(UsageError, match="is in use by another run"):
        FolderLock(str(tmp_path / "b"), "choose another folder")
    b.release()
    FolderLock(str(tmp_path / "b"), "choose another folder").release()     # and b's own release lets go
