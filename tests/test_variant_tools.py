"""A checkpoint of each variant goes through evaluate.py, predict.py and visualize.py with no
flags: the tools rebuild the variant (and its input scaling) from the checkpoint's config."""
import csv
import glob
import os
from dataclasses import replace

import pytest
import torch

from alexnet_mp import AlexNet
from alexnet_mp.cli import evaluate, predict, visualize
from alexnet_mp.cli.train import parser
from alexnet_mp.config import to_dict
from alexnet_mp.data.store import Store
from alexnet_mp.data.storecheck import read_classes, read_stats
from alexnet_mp import load_for_inference
from alexnet_mp.data.images import to_256
from alexnet_mp.cli.train import config_from_args

from .reference import centre_crop, reference_logits

# name: (train flags, reference kwargs, input scale)
VARIANTS = {"columns1": (["--columns", "1"], {"columns": 1}, "raw"),
            "no-lrn": (["--no-lrn"], {"lrn": False}, "raw"),
            "pool2": (["--pool", "2"], {"pool": 2}, "raw"),
            "no-dropout": (["--dropout", "0"], {"dropout": 0.0}, "raw"),
            "input-unit": (["--input-scale", "unit"], {}, "unit"),
            "init-torch": (["--init", "torch"], {}, "raw")}


def save_variant_checkpoint(store, path, flags):
    """What tools/train.py saves, for a model built from these flags (fc8 scaled: no near-ties)."""
    cfg = config_from_args(parser().parse_args(flags))
    model = AlexNet(10, seed=6, config=cfg.model)
    with torch.no_grad():
        model.fc8.weight.mul_(40)
    torch.save({"model": model.state_dict(), "config": to_dict(cfg), "classes": read_classes(store),
                "data_mean": torch.from_numpy(read_stats(store)[0])}, path)
    return cfg, model.state_dict()


def reference_probs(sd, images, mean, kwargs, scale):
    x = torch.cat([centre_crop(image, mean, scale) for image in images])
    return torch.softmax(reference_logits(sd, x, **kwargs), 1)


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_checkpoint_evaluates_and_predicts_with_no_flags(name, tiny_store, tmp_path, capsys):
    flags, kwargs, scale = VARIANTS[name]
    path = str(tmp_path / "checkpoint.pt")
    cfg, sd = save_variant_checkpoint(tiny_store, path, flags)
    assert load_for_inference(path)[0].config == replace(cfg.model, num_classes=10)
    mean = read_stats(tiny_store)[0]
    table = str(tmp_path / "p.csv")
    assert evaluate.main(["--checkpoint", path, "--data-path", tiny_store, "-j", "0", "--crops", "1",
                          "-b", "10", "--predictions", table]) == 0
    store = Store(tiny_store, "val")
    with open(table) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(store)
    probs = reference_probs(sd, [store[i][0] for i in range(len(store))], mean, kwargs, scale)
    for i, (row, p) in enumerate(zip(rows, probs)):
        assert row["top1"] == store.classes[int(p.argmax())], (name, i)
        assert float(row["prob1"]) == pytest.approx(p.max().item(), abs=2e-5)
    photo = sorted(glob.glob(os.path.join(os.path.dirname(tiny_store), "src", "val", "*", "*.JPEG")))[0]
    capsys.readouterr()
    assert predict.main([photo, "--checkpoint", path, "--crops", "1"]) == 0
    first = capsys.readouterr().out.splitlines()[1].split()
    p = reference_probs(sd, [to_256(photo)], mean, kwargs, scale)[0]
    assert first[1] == store.classes[int(p.argmax())] and float(first[0]) == pytest.approx(p.max().item(), abs=6e-4)


def test_one_column_filters_figure_has_one_block(tiny_store, tmp_path, capsys):
    from PIL import Image

    from alexnet_mp.eval import figures
    path = str(tmp_path / "c1.pt")
    save_variant_checkpoint(tiny_store, path, ["--columns", "1"])
    capsys.readouterr()
    assert visualize.main(["filters", "--checkpoint", path, "--out", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    assert "column 0:" in out and "column 1:" not in out
    save_variant_checkpoint(tiny_store, str(tmp_path / "c2.pt"), [])
    assert visualize.main(["filters", "--checkpoint", str(tmp_path / "c2.pt"), "--out", str(tmp_path / "g.png")]) == 0
    one, two = Image.open(tmp_path / "f.png").size, Image.open(tmp_path / "g.png").size
    assert one[0] == two[0] and 2 * one[1] + figures.GAP == two[1]      # one block of 48, not two


def test_resuming_with_other_variant_flags_is_one_line(tiny_store, tmp_path, capsys):
    """A flag asking for another network, even the paper's own (--columns 2): without it the resume
    takes the checkpoint's network (tests/test_finetune.py)."""
    from alexnet_mp.cli import train as train_cli
    path = str(tmp_path / "checkpoint.pt")
    save_variant_checkpoint(tiny_store, path, ["--columns", "1"])
    capsys.readouterr()
    code = train_cli.main(["--data-path", tiny_store, "--output-dir", str(tmp_path), "-b", "8", "-j", "0",
                           "--resume", path, "--columns", "2"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was trained as another variant (columns: 1 -> 2)" in err[0]
