"""The prepared store, its statistics and the paper's crops (spec §2, §4)."""
import io
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision import transforms

from alexnet_mp.data import demo_set as demo_data
from alexnet_mp.data.store import Store
from alexnet_mp.data.storecheck import read_classes, read_stats
from alexnet_mp.data.transforms import CENTER, EvalTransform, TrainTransform
from alexnet_mp.errors import StoreError
from alexnet_mp.data.prepare import prepare

from alexnet_mp.cli import prepare_data


def _photo(w, h, seed):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w)[None, :, None] * rng.uniform(0.2, 1, size=3)
    return Image.fromarray((base + rng.integers(0, 40, size=(h, w, 3))).clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def quirky_tree(tmp_path_factory):
    """train/{a,b}/ with a CMYK JPEG, a PNG named .JPEG, greyscale, a truncated JPEG, text named .JPEG."""
    root = tmp_path_factory.mktemp("src")
    for c in ("a", "b"):
        os.makedirs(root / "train" / c)
        for i in range(3):
            _photo(300 + 20 * i, 280, seed=hash((c, i)) % 1000).save(root / "train" / c / f"ok{i}.JPEG")
    _photo(320, 400, 1).convert("CMYK").save(root / "train" / "a" / "cmyk.JPEG", format="JPEG")
    _photo(400, 300, 2).save(root / "train" / "a" / "png.JPEG", format="PNG")
    _photo(260, 500, 3).convert("L").save(root / "train" / "b" / "grey.JPEG")
    buf = io.BytesIO()
    _photo(300, 300, 4).save(buf, format="JPEG")
    (root / "train" / "b" / "truncated.JPEG").write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    (root / "train" / "b" / "text.JPEG").write_text("not an image")
    (root / "train" / "b" / "notes.txt").write_text("a stray file")
    return root


@pytest.fixture(scope="module")
def store(quirky_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("store")
    lines = []
    prepare(str(quirky_tree), str(out), workers=2, log=lines.append, no_val=True)
    return out, lines


def _torchvision_256(path):
    """Independent reference: PIL's own RGB conversion, then torchvision's Resize + CenterCrop."""
    img = Image.open(path).convert("RGB")
    return np.asarray(transforms.CenterCrop(256)(transforms.Resize(256)(img)))


def test_quirky_images_convert_like_pils_own_conversion(quirky_tree, store):
    out, _ = store
    train = Store(str(out), "train")
    for rel in ("a/cmyk.JPEG", "a/png.JPEG", "b/grey.JPEG", "a/ok0.JPEG"):
        image, _ = train[train.files.index(rel)]
        assert np.array_equal(image, _torchvision_256(quirky_tree / "train" / rel)), rel


def test_undecodable_files_are_reported_and_counted(store):
    out, lines = store
    report = (out / "train" / "report.txt").read_text()
    assert "b/truncated.JPEG" in report and "b/text.JPEG" in report
    assert len(report.splitlines()) == 2
    assert "train: 9 images converted, 2 could not be decoded" in "\n".join(lines)
    assert any("skipped 1 entries that are not images" in line and "notes.txt" in line for line in lines)
    train = Store(str(out), "train")
    assert len(train) == 9 and read_classes(str(out))["classes"] == ["a", "b"]


def test_jpeg_store_holds_the_same_images_within_jpeg_loss(quirky_tree, store, tmp_path):
    raw_out, _ = store
    lines = []
    prepare(str(quirky_tree), str(tmp_path / "jpeg"), workers=2, fmt="jpeg", log=lines.append, no_val=True)
    assert "train: 9 images converted, 2 could not be decoded" in "\n".join(lines)
    raw, jpeg = Store(str(raw_out), "train"), Store(str(tmp_path / "jpeg"), "train")
    assert jpeg.format == "jpeg" and jpeg.files == raw.files
    for i in range(len(raw)):
        a, b = raw[i][0].astype(np.float64), jpeg[i][0].astype(np.float64)
        # These test images carry uniform per-pixel noise of 0..40, the worst case for JPEG;
        # the loss must still be small and unbiased (no colour shift).
        assert b.shape == (256, 256, 3) and np.abs(a - b).mean() < 4.0, raw.files[i]
        assert np.abs((a - b).mean(axis=(0, 1))).max() < 0.5, raw.files[i]
    size = os.path.getsize(tmp_path / "jpeg" / "train" / "images.jpg")
    assert size < os.path.getsize(raw_out / "train" / "images.u8") / 3
    mean, _, _ = read_stats(str(tmp_path / "jpeg"))
    np.testing.assert_allclose(mean, np.stack([jpeg[i][0] for i in range(len(jpeg))]).mean(0), rtol=1e-6)
    again = []
    prepare(str(quirky_tree), str(tmp_path / "jpeg"), workers=2, fmt="jpeg", log=again.append, no_val=True)
    assert not any("img/s" in line for line in again)


def test_class_list_keeps_human_names_from_a_mapping_file(quirky_tree, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("a first class, alias\nb second class\n")   # LOC_synset_mapping.txt style
    prepare(str(quirky_tree), str(tmp_path / "named"), workers=1, names_file=str(names), log=lambda *a: None,
            no_val=True)
    meta = read_classes(str(tmp_path / "named"))
    assert meta == {"classes": ["a", "b"], "names": {"a": "first class, alias", "b": "second class"},
                    "source": str(quirky_tree), "exif_orientation": True,
                    "layout": "an ImageNet-style tree (train/)", "no_val": True,
                    "prepared_with": {"format": "raw", "labels": None, "names": str(names)}}


def test_rerun_does_no_work(quirky_tree, store):
    out, _ = store
    before = {f: os.stat(out / "train" / f).st_mtime_ns for f in ("images.u8", "status.u8", "stats.npz")}
    lines = []
    prepare(str(quirky_tree), str(out), workers=2, log=lines.append, no_val=True)
    assert not any("img/s" in line for line in lines)
    assert {f: os.stat(out / "train" / f).st_mtime_ns for f in before} == before


def test_mean_image_and_pca_match_numpy(store):
    out, _ = store
    train = Store(str(out), "train")
    pixels = np.stack([train[i][0] for i in range(len(train))]).astype(np.float64)
    mean, eigval, eigvec = read_stats(str(out))
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-6)
    cov = np.cov((pixels / 255.0).reshape(-1, 3).T, bias=True)
    np.testing.assert_allclose(eigvec @ np.diag(eigval) @ eigvec.T, cov, rtol=1e-6)
    np.testing.assert_allclose(np.sort(eigval), np.linalg.eigvalsh(cov), rtol=1e-6)
    assert eigval[0] >= eigval[1] >= eigval[2]


def _transform(seed=0):
    rng = np.random.default_rng(0)
    mean = rng.uniform(50, 200, size=(256, 256, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return TrainTransform(mean, np.array([0.2175, 0.0188, 0.0045]), q, seed=seed), rng


def test_every_crop_offset_is_reachable_and_uniform():
    t, _ = _transform()
    counts = np.zeros((33, 33))
    draws = 33 * 33 * 25
    for i in range(draws):
        top, left, _, _ = t.draw(i)
        counts[top, left] += 1
    assert (counts > 0).all()
    expected = draws / counts.size
    chi2 = ((counts - expected) ** 2 / expected).sum()
    dof = counts.size - 1
    assert chi2 < dof + 6 * np.sqrt(2 * dof)     # far in the tail only if not uniform


def test_train_crop_flip_mean_and_pca_against_numpy():
    t, rng = _transform()
    image = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    flips = 0
    for i in range(40):
        top, left, flip, alpha = t.draw(i)
        flips += flip
        expected = image.astype(np.float64)[top:top + 224, left:left + 224] - t.mean[top:top + 224, left:left + 224]
        if flip:
            expected = expected[:, ::-1]
        got = t(image, i).numpy().transpose(1, 2, 0).astype(np.float64)
        shift = got - expected
        # The PCA shift is one colour added to every pixel, 255 * P (alpha * lambda).
        np.testing.assert_allclose(shift, np.broadcast_to(shift[0, 0], shift.shape), atol=1e-3)
        np.testing.assert_allclose(shift[0, 0], 255 * t.eigvec @ (alpha * t.eigval), atol=1e-3)
    assert 8 < flips < 32


def test_pca_alpha_is_normal_with_std_01():
    t, _ = _transform()
    shifts = np.stack([t.shift(t.draw(i)[3]) for i in range(4000)]).astype(np.float64)
    alphas = (shifts / 255.0) @ t.eigvec / t.eigval      # invert 255 * P diag(lambda) alpha
    assert np.abs(alphas.mean(axis=0)).max() < 0.01
    np.testing.assert_allclose(alphas.std(axis=0), 0.1, rtol=0.05)
    kurtosis = ((alphas / alphas.std(axis=0)) ** 4).mean(axis=0)
    np.testing.assert_allclose(kurtosis, 3.0, atol=0.3)


def test_train_transform_is_deterministic_per_epoch():
    t, rng = _transform(seed=3)
    image = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    a = t(image, 5)
    assert torch.equal(a, _transform(seed=3)[0](image, 5))
    t.epoch = 1
    assert not torch.equal(a, t(image, 5))


def test_ten_crops_equal_naive_pil_in_spec_order():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, size=(256, 256, 3)).astype(np.float32)
    got = EvalTransform(mean, crops=10)(image).numpy()
    pil, mean_pil = Image.fromarray(image), [Image.fromarray(mean[..., c], mode="F") for c in range(3)]
    offsets = [(0, 0), (0, 32), (32, 0), (32, 32), (16, 16)]    # spec §4, (top, left)
    expected = []
    for flip in (False, True):
        for top, left in offsets:
            box = (left, top, left + 224, top + 224)
            patch, mpatch = pil.crop(box), [m.crop(box) for m in mean_pil]
            if flip:
                patch, mpatch = ImageOps.mirror(patch), [m.transpose(Image.FLIP_LEFT_RIGHT) for m in mpatch]
            m = np.stack([np.asarray(x) for x in mpatch], axis=-1)
            expected.append((np.asarray(patch).astype(np.float32) - m).transpose(2, 0, 1))
    assert got.shape == (10, 3, 224, 224)
    assert np.array_equal(got, np.stack(expected))
    assert np.array_equal(EvalTransform(mean, crops=1)(image).numpy(), got[CENTER])


def test_demo_dataset_is_identical_when_generated_twice(tmp_path):
    a = demo_data.generate(str(tmp_path / "a"), train_per_class=2, val_per_class=1)
    b = demo_data.generate(str(tmp_path / "b"), train_per_class=2, val_per_class=1)
    files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    assert len(files) == 30 and len(os.listdir(os.path.join(a, "train"))) == 10
    for f in files:
        assert open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read(), f


def test_empty_class_folder_is_one_line_with_the_fix(tmp_path, capsys):
    os.makedirs(tmp_path / "src" / "train" / "empty")
    assert prepare_data.main([str(tmp_path / "src"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "empty has no images: add images or remove the folder" in err


def test_missing_store_and_missing_stats_name_the_path_and_fix(store, tmp_path):
    with pytest.raises(StoreError, match=r"no prepared store at .*nowhere: make one with"):
        Store(str(tmp_path / "nowhere"), "train")
    out, _ = store
    os.rename(out / "train" / "stats.npz", out / "train" / "stats.bak")
    try:
        with pytest.raises(StoreError, match=r"missing statistics .*stats.npz: re-run"):
            read_stats(str(out))
    finally:
        os.rename(out / "train" / "stats.bak", out / "train" / "stats.npz")
    with pytest.raises(StoreError, match="split 'val' is missing"):
        Store(str(out), "val")
