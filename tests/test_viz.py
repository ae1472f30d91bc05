"""Figures and prediction (paper Figures 3 and 4)."""
import os

import numpy as np
import pytest
import torch

from alexnet_mp import AlexNet
from alexnet_mp.eval import figures as viz
from alexnet_mp.data.store import Store, StoreDataset
from alexnet_mp.data.storecheck import read_classes, read_stats
from alexnet_mp.data.transforms import EvalTransform

from .conftest import run_script


def _ramps():
    """Column 0's kernels ramp left to right in red; column 1's ramp top to bottom in blue."""
    w = np.zeros((96, 3, 11, 11), np.float32)
    ramp = np.arange(11, dtype=np.float32)
    for j in range(48):
        w[j, 0] = ramp[None, :] * (j + 1)
        w[48 + j, 2] = ramp[:, None] * (j + 1)
    return w


def test_filters_grid_puts_each_columns_48_kernels_in_its_own_block():
    img = np.asarray(viz.filters_grid(_ramps()))
    s, cell = viz.SCALE, 11 * viz.SCALE + viz.PAD
    block = viz.PAD + 3 * cell
    assert img.shape == (2 * block + viz.GAP, viz.PAD + 16 * cell, 3)
    expected_ramp = np.round(255 * np.arange(11) / 10).astype(np.uint8)   # own min..max -> 0..255
    for column in range(2):
        for j in range(48):
            x0 = viz.PAD + (j % 16) * cell
            y0 = column * (block + viz.GAP) + viz.PAD + (j // 16) * cell
            tile = img[y0:y0 + 11 * s, x0:x0 + 11 * s]
            small = tile[::s, ::s]
            if column == 0:
                assert (small[:, :, 0] == expected_ramp[None, :]).all() and (small[:, :, 2] == 0).all()
            else:
                assert (small[:, :, 2] == expected_ramp[:, None]).all() and (small[:, :, 0] == 0).all()
            assert (tile == small.repeat(s, 0).repeat(s, 1)).all()
    assert (img[block:block + viz.GAP] == 255).all()          # the gap between the two blocks


def test_colour_specificity_is_zero_for_grey_and_high_for_one_channel():
    rng = np.random.default_rng(0)
    pattern = rng.normal(size=(10, 1, 11, 11))
    pattern -= pattern.mean(axis=(1, 2, 3), keepdims=True)     # zero mean: all variance is pattern
    grey = np.repeat(pattern, 3, axis=1)
    red = np.concatenate([pattern, np.zeros_like(pattern), np.zeros_like(pattern)], axis=1)
    opponent = np.concatenate([pattern, -pattern, np.zeros_like(pattern)], axis=1)
    np.testing.assert_allclose(viz.colour_specificity(grey), 0, atol=1e-12)
    np.testing.assert_allclose(viz.colour_specificity(red), 2 / 3, rtol=1e-9)   # (2/3)^2 + 2 (1/3)^2
    np.testing.assert_allclose(viz.colour_specificity(opponent), 1.0, rtol=1e-9)


def test_nearest_in_fc7_equals_brute_force_numpy(tiny_store):
    model = AlexNet(10, seed=5).eval()
    store = Store(tiny_store, "train")
    centre = EvalTransform(read_stats(tiny_store)[0], crops=1)
    data = StoreDataset(store, centre)
    queries = torch.stack([centre(Store(tiny_store, "val")[i][0]) for i in (0, 7, 13)])
    loader = torch.utils.data.DataLoader(data, batch_size=7)
    dist, idx = viz.nearest(model, queries, loader, "cpu", k=6)
    with torch.no_grad():
        feats = model.features(torch.stack([data[i][0] for i in range(len(data))])).double().numpy()
        q = model.features(queries).double().numpy()
    brute = np.sqrt(((q[:, None, :] - feats[None, :, :]) ** 2).sum(-1))
    np.testing.assert_array_equal(idx, np.argsort(brute, axis=1, kind="stable")[:, :6])
    np.testing.assert_allclose(dist, np.sort(brute, axis=1)[:, :6], rtol=1e-5)   # float32 batches differ


@pytest.fixture(scope="module")
def training_like_checkpoint(tiny_store, tmp_path_factory):
    model = AlexNet(10, seed=2)
    with torch.no_grad():
        model.fc8.weight.mul_(40)
    path = tmp_path_factory.mktemp("pred") / "ckpt.pt"
    meta = read_classes(tiny_store)
    meta["names"] = {meta["classes"][0]: "a disc"}
    torch.save({"model": model.state_dict(), "classes": meta,
                "data_mean": torch.from_numpy(read_stats(tiny_store)[0].astype(np.float32))}, path)
    return str(path), model.eval()


def test_predict_prints_top5_and_skips_a_non_image(tiny_store, training_like_checkpoint, tmp_path):
    path, model = training_like_checkpoint
    val = Store(tiny_store, "val")
    image = os.path.join(os.path.dirname(tiny_store), "src", "val", val.files[0])
    junk = tmp_path / "notes.JPEG"
    junk.write_text("not an image")
    proc = run_script(["tools/predict.py", "--checkpoint", path, image, str(junk)])
    assert proc.returncode == 0, proc.stderr
    assert f"{junk}: not an image" in proc.stdout
    lines = proc.stdout.splitlines()
    start = lines.index(image)
    rows = [line.split(None, 1) for line in lines[start + 1:start + 6]]
    probs = [float(p) for p, _ in rows]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    # Independent: the stored 256x256 image's ten crops through the same weights.
    mean = read_stats(tiny_store)[0]
    with torch.no_grad():
        p = torch.softmax(model(EvalTransform(mean, 10)(val[0][0])), 1).mean(0)
    top = p.topk(5)
    assert [name.split(" (")[0] for _, name in rows] == [val.classes[i] for i in top.indices.tolist()]
    np.testing.assert_allclose(probs, top.values.numpy(), atol=2e-3)


def test_filters_command_prints_each_columns_score(training_like_checkpoint, tmp_path):
    proc = run_script(["tools/visualize.py", "filters", "--checkpoint", training_like_checkpoint[0],
                       "--out", str(tmp_path / "f.png")])
    assert proc.returncode == 0, proc.stderr
    assert "column 0: colour-specificity" in proc.stdout and "column 1: colour-specificity" in proc.stdout
    assert os.path.getsize(tmp_path / "f.png") > 0
