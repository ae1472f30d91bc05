"""Ten-crop evaluation (spec §4) against an independent PIL loop, and in every placement."""
import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from alexnet_mp import AlexNet
from alexnet_mp.data import demo_set as demo_data
from alexnet_mp.data.loader import EpochSampler
from alexnet_mp.data.store import Store
from alexnet_mp.data.storecheck import read_stats
from alexnet_mp.eval.tencrop import errors, predict
from alexnet_mp.data.prepare import prepare

from .conftest import run_script
from .helpers import assert_one_line_error, free_port


@pytest.fixture(scope="module")
def decisive_checkpoint(tmp_path_factory):
    """A 10-class net whose answers are far from ties (fc8 scaled up), saved bare."""
    model = AlexNet(10, seed=2)
    with torch.no_grad():
        model.fc8.weight.mul_(40)
    path = tmp_path_factory.mktemp("ckpt") / "bare.pt"
    torch.save(model.state_dict(), path)
    return str(path), model.eval()


def _pil_ten_crop_probs(model, image, mean):
    """Independent loop: ten PIL crops of the stored image, one forward each, averaged softmax."""
    pil = Image.fromarray(image)
    probs = []
    for top, left in [(0, 0), (0, 32), (32, 0), (32, 32), (16, 16)]:
        for flip in (False, True):
            box = (left, top, left + 224, top + 224)
            patch = np.asarray(pil.crop(box)).astype(np.float32) - mean[top:top + 224, left:left + 224]
            if flip:
                patch = np.asarray(ImageOps.mirror(pil.crop(box))).astype(np.float32) - \
                    mean[top:top + 224, left:left + 224][:, ::-1]
            x = torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)))[None]
            with torch.no_grad():
                probs.append(torch.softmax(model(x), 1)[0])
    return torch.stack(probs).mean(0)


def _read_predictions(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_ten_crop_errors_equal_an_independent_pil_loop(tiny_store, decisive_checkpoint, tmp_path):
    path, model = decisive_checkpoint
    proc = run_script(["tools/evaluate.py", "--checkpoint", path, "--data-path", tiny_store, "-b", "7",
                       "-j", "0", "--json", str(tmp_path / "e.json"), "--predictions", str(tmp_path / "p.csv")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "paper, 1 CNN, ILSVRC-2012 val, ten-crop" in proc.stdout and "40.7%" in proc.stdout
    res = json.load(open(tmp_path / "e.json"))
    store = Store(tiny_store, "val")
    mean = read_stats(tiny_store)[0].astype(np.float32)
    hit1 = hit5 = 0
    rows = _read_predictions(tmp_path / "p.csv")
    for i, row in enumerate(rows):
        image, label = store[i]
        p = _pil_ten_crop_probs(model, image, mean)
        top = p.topk(5).indices.tolist()
        hit1 += top[0] == label
        hit5 += label in top
        assert [row[f"top{k}"] for k in range(1, 6)] == [store.classes[t] for t in top]
        assert row["path"] == store.files[i]
    assert res["num_images"] == len(store) == len(rows)
    assert res["top1_err"] == pytest.approx(1 - hit1 / len(store))
    assert res["top5_err"] == pytest.approx(1 - hit5 / len(store))
    assert res["crops"] == 10 and set(res) >= {"center_top1_err", "per_class_top1_err", "most_confused"}


class _LogitsFromPixel(torch.nn.Module):
    """Stub network: a crop's logits are its three channel values at pixel (0, 0)."""

    def forward(self, x):
        return x[:, :, 0, 0]


def test_probabilities_are_averaged_not_logits():
    crops = torch.zeros(1, 10, 3, 224, 224)
    crops[0, :7, 0, 0, 0] = 3.0      # seven crops lean to class 0: p0 = e^3 / (e^3 + 2) = 0.91
    crops[0, 7:, 1, 0, 0] = 30.0     # three crops are certain of class 1, with a huge logit
    # mean logits: class 0 = 2.1, class 1 = 9.0 -> 1.  mean probabilities: 0.64 vs 0.33 -> 0.
    logits = crops[0, :, :, 0, 0]
    assert logits.mean(0).argmax().item() == 1 and torch.softmax(logits, 1).mean(0).argmax().item() == 0
    data = torch.utils.data.TensorDataset(crops, torch.tensor([0]))
    loader = torch.utils.data.DataLoader(data, batch_size=1, sampler=EpochSampler(1, shuffle=False))
    result = predict(_LogitsFromPixel(), loader, "cpu", crops=10)
    assert result["top5"][0, 0] == 0 and errors(result)[0] == 0.0


def _torchrun_eval(nproc, ckpt, store, out):
    return run_script(["-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
                       f"--master_port={free_port()}", "tools/evaluate.py", "--checkpoint", ckpt,
                       "--data-path", store, "-b", "3", "-j", "0", "--json", str(out) + ".json",
                       "--predictions", str(out) + ".csv"])


@pytest.fixture(scope="module")
def odd_store(tmp_path_factory):
    """A store whose val split holds 9 images (one of 10 is unreadable)."""
    base = tmp_path_factory.mktemp("odd")
    src = demo_data.generate(str(base / "src"), train_per_class=1, val_per_class=1)
    victim = os.path.join(src, "val", "03_cross", "val_03_00000.JPEG")
    open(victim, "wb").write(b"broken")
    prepare(src, str(base / "store"), workers=1, log=lambda *a: None)
    return str(base / "store")


@pytest.mark.parametrize("nproc", [2, pytest.param(4, marks=pytest.mark.slow)])      # 4: 2 replicas share the images
def test_ranks_equal_one_process_and_count_each_image_once(odd_store, decisive_checkpoint, tmp_path, nproc):
    path, _ = decisive_checkpoint
    one = run_script(["tools/evaluate.py", "--checkpoint", path, "--data-path", odd_store, "-b", "4", "-j", "0",
                      "--json", str(tmp_path / "one.json"), "--predictions", str(tmp_path / "one.csv")])
    assert one.returncode == 0, one.stderr[-3000:]
    proc = _torchrun_eval(nproc, path, odd_store, tmp_path / f"r{nproc}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref, got = json.load(open(tmp_path / "one.json")), json.load(open(tmp_path / f"r{nproc}.json"))
    assert got["num_images"] == ref["num_images"] == 9
    for key in ("top1_err", "top5_err", "center_top1_err", "center_top5_err", "per_class_top1_err"):
        assert got[key] == ref[key], key
    a, b = _read_predictions(tmp_path / "one.csv"), _read_predictions(tmp_path / f"r{nproc}.csv")
    assert [r["path"] for r in a] == [r["path"] for r in b]
    assert [[r[f"top{k}"] for k in range(1, 6)] for r in a] == [[r[f"top{k}"] for k in range(1, 6)] for r in b]
    np.testing.assert_allclose([float(r["prob1"]) for r in a], [float(r["prob1"]) for r in b], atol=1e-5)


def test_bad_checkpoints_and_missing_split_are_one_line(tiny_store, decisive_checkpoint, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    cmd = ["tools/evaluate.py", "--data-path", tiny_store, "-j", "0", "--checkpoint"]
    assert_one_line_error(run_script(cmd + [str(corrupt)]), "the file is corrupt or not an alexnet_mp checkpoint")
    torch.save(AlexNet(4, seed=0).state_dict(), tmp_path / "four.pt")
    assert_one_line_error(run_script(cmd + [str(tmp_path / "four.pt")]), "has 4 classes but")
    assert_one_line_error(run_script(cmd + [decisive_checkpoint[0], "--split", "test"]), "split 'test' is missing")
