"""tools/import_caffe.py: Caffe's bvlc_alexnet as a checkpoint of this project.

No download: the tests write their own bvlc_alexnet-shaped .caffemodel files (tests/caffe_writer.py,
which shares no code with the importer), full width, in both NetParameter encodings, and check
the imported network against a Caffe forward pass written here with torch's functional ops.
"""
import csv
import os
import re
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from alexnet_mp import AlexNet, load_for_inference
from alexnet_mp.config import ModelConfig, TrainConfig, check_placement
from alexnet_mp.data.store import Store
from alexnet_mp.data.storecheck import read_classes, read_stats
from alexnet_mp.data.transforms import EvalTransform, TrainTransform
from alexnet_mp.errors import ConfigError
from alexnet_mp.model.arch import conv1_pad, map_sizes

from . import caffe_writer as cw
from .conftest import run_script
from .helpers import assert_close_rel, assert_one_line_result, snapshot

CAFFE_CROP = 227
EDGE = 256 - CAFFE_CROP                        # 29: the last offset of a 227 crop in a 256 image


def caffe_logits(weights, crops_bgr):
    """Caffe's forward pass of bvlc_alexnet at test time, in float64: (N, 3, 227, 227) BGR crops minus
    the BGR mean; LRN over all maps with k = 1; ceil-mode pooling; dropout is the identity."""
    t = {k: (torch.from_numpy(w).double(), torch.from_numpy(b).double()) for k, (w, b) in weights.items()}

    def conv(x, name, **kw):
        return F.relu(F.conv2d(x, *t[name], **kw))

    def lrn(x):
        return F.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=1.0)

    def pool(x):
        return F.max_pool2d(x, 3, 2, ceil_mode=True)
    x = torch.as_tensor(np.ascontiguousarray(crops_bgr), dtype=torch.float64)
    x = pool(lrn(conv(x, "conv1", stride=4)))
    x = pool(lrn(conv(x, "conv2", padding=2, groups=2)))
    x = conv(conv(x, "conv3", padding=1), "conv4", padding=1, groups=2)
    x = pool(conv(x, "conv5", padding=1, groups=2))
    x = F.relu(F.linear(F.relu(F.linear(x.flatten(1), *t["fc6"])), *t["fc7"]))
    return F.linear(x, *t["fc8"])


def caffe_crops(image_rgb, mean_bgr, offsets, mirror=False):
    """Caffe's data layer: the image in BGR, CHW, minus the BGR mean image, cropped at (top, left)."""
    x = np.asarray(image_rgb, np.float64)[..., ::-1].transpose(2, 0, 1) - np.asarray(mean_bgr, np.float64)
    out = [x[:, t:t + CAFFE_CROP, l:l + CAFFE_CROP] for t, l in offsets]
    return np.stack(out + ([c[:, :, ::-1] for c in out] if mirror else []))


def caffe_ten_crop_probs(weights, image_rgb, mean_bgr):
    """Caffe's oversampling: four corners and the centre, and their mirrors; softmax averaged."""
    offsets = [(0, 0), (0, EDGE), (EDGE, 0), (EDGE, EDGE), (EDGE // 2, EDGE // 2)]
    return torch.softmax(caffe_logits(weights, caffe_crops(image_rgb, mean_bgr, offsets, mirror=True)), 1).mean(0)


def import_main(argv):
    from alexnet_mp.cli.import_caffe import main
    return main([str(a) for a in argv])


def write_inputs(folder, classes, seed, encoding="v1", packed=True, names=True, mean_form="binaryproto"):
    """A synthetic bvlc_alexnet-shaped net with its mean and names files in `folder`."""
    rng = np.random.default_rng(seed)
    weights = cw.random_weights(classes, seed)
    model = folder / f"net_{encoding}.caffemodel"
    cw.write_net(model, cw.alexnet_specs(weights), encoding, packed)
    mean_bgr = rng.uniform(70, 150, (3, 256, 256)).astype(np.float32)
    mean = folder / ("mean.binaryproto" if mean_form == "binaryproto" else "mean.npy")
    if mean_form == "binaryproto":
        cw.write_mean(mean, mean_bgr)
    else:
        np.save(mean, mean_bgr.astype(np.float64))       # ilsvrc_2012_mean.npy's form: 3x256x256 float64
    wnids = [f"n{1000000 + 37 * i:08d}" for i in range(classes)]
    path = folder / "synset_words.txt"
    path.write_text("".join(f"{w} thing {i}, Res {i}\n" for i, w in enumerate(wnids)))
    return SimpleNamespace(weights=weights, model=model, mean=mean, mean_bgr=mean_bgr,
                           names=path if names else None, wnids=wnids)


@pytest.fixture(scope="module")
def caffe10(tmp_path_factory):
    """A 10-class net in the 2014 encoding (packed data, 4-d blobs, a .binaryproto mean), imported."""
    folder = tmp_path_factory.mktemp("caffe10")
    inputs = write_inputs(folder, 10, seed=0)
    inputs.checkpoint = folder / "caffe_alexnet.pt"
    assert import_main([inputs.model, "--mean", inputs.mean, "--names", inputs.names,
                        "--output", inputs.checkpoint]) == 0
    inputs.model.unlink()           # 228 MB; the tests below need only the checkpoint
    return inputs


def agreement(inputs, checkpoint, image):
    """Max |ours - Caffe's| over the logits' max |Caffe's|, at the centre crop and the bottom-right corner."""
    model, _, _, mean = load_for_inference(str(checkpoint))
    crops = EvalTransform(mean, crops=10, crop=model.config.crop)(image)
    with torch.no_grad():
        ours = model(crops[[4, 3]])          # the centre (14, 14) and the corner (29, 29)
    ref = caffe_logits(inputs.weights, caffe_crops(image, inputs.mean_bgr, [(14, 14), (EDGE, EDGE)]))
    for i, where in enumerate(("centre", "corner")):
        err = ((ours[i].double() - ref[i]).abs().max() / ref[i].abs().max()).item()
        print(f"{where} crop: max |ours - caffe| / max |caffe| = {err:.2e} (logit scale {ref[i].abs().max():.2f})")
        assert_close_rel(ours[i], ref[i], 1e-5, f"{where} crop")
    return model, crops, ref


def test_2014_encoding_imports_to_caffes_forward_pass(caffe10):
    image = np.random.default_rng(5).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    model, crops, ref = agreement(caffe10, caffe10.checkpoint, image)
    cfg = model.config
    assert (cfg.lrn_across_columns, cfg.lrn_k, cfg.crop, cfg.lrn_alpha, cfg.num_classes) == (True, 1.0, 227, 1e-4, 10)
    assert model.lrn.columns == 1 and conv1_pad(cfg) == 0
    # The test can fail: the same weights with the paper's per-column LRN window are another function.
    paper_lrn = AlexNet(10, config=replace(cfg, lrn_across_columns=False), init=False)
    paper_lrn.load_canonical_state_dict(model.canonical_state_dict())
    with torch.no_grad():
        other = paper_lrn.eval()(crops[[4]])
    assert (other[0].double() - ref[0]).abs().max() > 1e-3 * ref[0].abs().max()


def test_checkpoint_carries_classes_names_mean_and_is_not_resumable(caffe10):
    ckpt = torch.load(caffe10.checkpoint, weights_only=True)
    assert ckpt["classes"]["classes"] == caffe10.wnids
    assert ckpt["classes"]["names"][caffe10.wnids[3]] == "thing 3, Res 3"
    rgb = caffe10.mean_bgr[::-1].transpose(1, 2, 0)
    assert np.array_equal(ckpt["data_mean"].numpy(), rgb) and ckpt["data_mean"].shape == (256, 256, 3)
    assert ckpt["config"]["model"]["lrn_across_columns"] is True and "optimizer" not in ckpt
    # BGR folded into conv1, the dropout factor into fc7 and fc8, nothing else changed.
    w = caffe10.weights
    assert torch.equal(ckpt["model"]["conv1.weight"], torch.from_numpy(w["conv1"][0][:, ::-1].copy()))
    assert torch.equal(ckpt["model"]["fc7.weight"], torch.from_numpy(w["fc7"][0]) * 2)
    assert torch.equal(ckpt["model"]["fc8.weight"], torch.from_numpy(w["fc8"][0]) * 2)
    assert torch.equal(ckpt["model"]["fc6.weight"], torch.from_numpy(w["fc6"][0]))
    assert torch.equal(ckpt["model"]["conv2.bias"], torch.from_numpy(w["conv2"][1]))


def test_current_encoding_unpacked_npy_mean_odd_classes_no_names(tmp_path, capsys):
    inputs = write_inputs(tmp_path, 7, seed=1, encoding="current", packed=False, names=False, mean_form="npy")
    out = tmp_path / "seven.pt"
    out.write_bytes(b"an older import")
    assert import_main([inputs.model, "--mean", inputs.mean, "--output", out, "--force"]) == 0
    printed = capsys.readouterr().out
    assert "current encoding (LayerParameter" in printed and "the classes are numbered 0..6" in printed
    inputs.model.unlink()
    image = np.random.default_rng(6).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    model, _, _ = agreement(inputs, out, image)
    _, classes, names, _ = load_for_inference(str(out))
    assert classes == [str(i) for i in range(7)] and names == {} and model.fc8.weight.shape == (7, 4096)


@pytest.mark.parametrize("form", ["binaryproto-packed", "binaryproto-unpacked-current", "npy", "npy-4d"])
def test_both_mean_forms_become_the_rgb_mean(tmp_path, form):
    from alexnet_mp.caffe.convert import read_mean
    bgr = np.random.default_rng(2).uniform(0, 255, (3, 256, 256)).astype(np.float32)
    path = tmp_path / ("m.npy" if form.startswith("npy") else "m.binaryproto")
    if form == "npy":
        np.save(path, bgr.astype(np.float64))
    elif form == "npy-4d":
        np.save(path, bgr[None])
    else:
        cw.write_mean(path, bgr, packed="unpacked" not in form, encoding="current" if "current" in form else "v1")
    got = read_mean(str(path))
    assert got.shape == (256, 256, 3) and got.dtype == np.float32
    for c, b in ((0, 2), (1, 1), (2, 0)):           # R is Caffe's channel 2, B its channel 0
        assert np.array_equal(got[:, :, c], bgr[b])


def test_names_file_gives_wnids_in_its_order_and_their_names(tmp_path):
    from alexnet_mp.caffe.convert import read_names
    path = tmp_path / "words.txt"
    path.write_text("n02 second\n\nn01   first, with commas\nn03\n")
    assert read_names(str(path)) == (["n02", "n01", "n03"], {"n02": "second", "n01": "first, with commas", "n03": ""})


def _small_net(folder, name="net.caffemodel", encoding="v1", **kw):
    """bvlc_alexnet's layers and settings without weights: enough for the checks that come before them."""
    specs = kw.pop("specs", None) or cw.alexnet_specs({}, **kw)
    path = folder / name
    cw.write_net(path, specs, encoding)
    return path


def _bad(tmp_path, case):
    """(argv, text of the one error line) for one bad input."""
    mean = tmp_path / "mean.binaryproto"
    cw.write_mean(mean, np.full((3, 256, 256), 100.0))
    out = tmp_path / "out.pt"
    net = _small_net(tmp_path)
    if case == "text":
        p = tmp_path / "deploy.prototxt"
        p.write_text('name: "AlexNet"\nlayer {\n  name: "conv1"\n}\n')
        return [p, "--mean", mean, "--output", out], "is not a Caffe NetParameter"
    if case == "mean-as-model":
        return [mean, "--mean", mean, "--output", out], "is not a Caffe NetParameter"
    if case == "empty":
        (tmp_path / "e.caffemodel").write_bytes(b"")
        return [tmp_path / "e.caffemodel", "--mean", mean, "--output", out], "is empty"
    if case == "truncated":
        p = tmp_path / "cut.caffemodel"
        w = {"conv1": (np.zeros((96, 3, 11, 11), np.float32), np.zeros(96, np.float32))}
        cw.write_net(p, cw.alexnet_specs(w))
        data = p.read_bytes()
        p.write_bytes(data[:len(data) // 2])      # inside conv1's weights
        return [p, "--mean", mean, "--output", out], "is truncated"
    specs = {"missing-lrn": cw.without(cw.alexnet_specs({}), "norm2"),
             "missing-fc8": [s for s in cw.alexnet_specs({}) if s["name"] not in ("fc8", "loss")],
             "caffenet-order": cw.alexnet_specs({}, order="caffenet")}
    if case in specs:
        text = {"missing-lrn": "'pool2' is Pooling where bvlc_alexnet has the conv2 LRN layer",
                "missing-fc8": "ends after layer 'drop7'", "caffenet-order": "CaffeNet pools before its LRN"}[case]
        return [_small_net(tmp_path, "s.caffemodel", specs=specs[case]), "--mean", mean, "--output", out], text
    if case in ("width", "groups", "blob-shape", "no-blobs", "lrn-region"):
        specs = cw.alexnet_specs({})
        conv1, conv2 = specs[1], specs[5]
        text = {"width": "'conv1' has num_output 64 where bvlc_alexnet's conv1 has 96",
                "groups": "'conv2' has group 1 where bvlc_alexnet's conv2 has 2",
                "blob-shape": "the weights of layer 'conv1' are 96x3x7x7 where this network needs 96x3x11x11",
                "no-blobs": "'conv1' holds 0 blob(s)",
                "lrn-region": "the LRN is not across channels with an odd window (norm_region 0, local_size 4)"}[case]
        if case == "width":
            conv1["params"]["num_output"] = 64
        elif case == "groups":
            del conv2["params"]["group"]
        elif case == "blob-shape":
            conv1["blobs"] = (np.zeros((96, 3, 7, 7), np.float32), np.zeros(96, np.float32))
        elif case == "lrn-region":
            for norm in (specs[3], specs[7]):
                norm["params"] = dict(norm["params"], local_size=4)
        return [_small_net(tmp_path, "s.caffemodel", specs=specs), "--mean", mean, "--output", out], text
    if case == "mean-shape":
        m = tmp_path / "m227.binaryproto"
        cw.write_mean(m, np.zeros((3, 227, 227)))
        return [net, "--mean", m, "--output", out], "is 1x3x227x227, not a 3x256x256 mean image"
    if case == "mean-hwc-npy":
        m = tmp_path / "m.npy"
        np.save(m, np.zeros((256, 256, 3)))
        return [net, "--mean", m, "--output", out], "is 256x256x3, not a 3x256x256 mean image"
    if case == "names-count":
        n = tmp_path / "words.txt"
        n.write_text("".join(f"n{i:08d} x\n" for i in range(9)))
        return [net, "--mean", mean, "--names", n, "--output", out], "lists 9 classes but"
    if case == "output-exists":
        out.write_bytes(b"keep me")
        return [net, "--mean", mean, "--output", out], "exists: pass --force"
    assert case == "output-folder-missing"
    return [net, "--mean", mean, "--output", tmp_path / "nowhere" / "x.pt"], "does not exist"


BAD = ["text", "mean-as-model", "empty", "truncated", "missing-lrn", "missing-fc8", "caffenet-order", "width",
       "groups", "blob-shape", "no-blobs", "lrn-region", "mean-shape", "mean-hwc-npy", "names-count",
       "output-exists", "output-folder-missing"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    argv, text = _bad(tmp_path, case)
    before = snapshot(tmp_path)
    line = assert_one_line_result(import_main(argv), capsys, text)
    assert snapshot(tmp_path) == before, line
    assert case == "output-exists" or not (tmp_path / "out.pt").exists()


def test_a_real_truncated_download_is_named(tmp_path, capsys):
    """A full-size file cut short, as a download can be: inside fc6's 151 MB of weights."""
    inputs = write_inputs(tmp_path, 10, seed=3)
    data = inputs.model.read_bytes()
    inputs.model.write_bytes(data[:len(data) // 2])
    del data
    argv = [inputs.model, "--mean", inputs.mean, "--output", tmp_path / "x.pt"]
    assert_one_line_result(import_main(argv), capsys, "is truncated")
    assert not (tmp_path / "x.pt").exists()


def test_split_placements_refuse_the_lrn_across_columns():
    from alexnet_mp.distributed.placement import two_device_alexnet
    cfg = ModelConfig(num_classes=10, lrn_across_columns=True)
    with pytest.raises(ConfigError, match="grouped placement only"):
        check_placement(2, "rank", True)
    with pytest.raises(ConfigError, match="grouped placement only"):
        two_device_alexnet(("cpu", "cpu"), 10, config=cfg)
    check_placement(2, "grouped", True)
    assert AlexNet(10, config=cfg, init=False).lrn.columns == 1 and AlexNet(10, init=False).lrn.columns == 2


def test_227_crops_have_no_padding_and_the_paper_map_sizes():
    assert conv1_pad(ModelConfig(crop=227)) == 0 and conv1_pad(ModelConfig()) == 3
    assert map_sizes(ModelConfig(crop=227)) == map_sizes(ModelConfig())
    with pytest.raises(ConfigError, match="crop=300"):
        ModelConfig(crop=300)


def test_transforms_take_their_crop_from_the_config():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, (256, 256, 3))
    got = EvalTransform(mean, crops=10, crop=227)(image).numpy()
    x = (image.astype(np.float64) - mean).transpose(2, 0, 1)
    for i, (t, l) in enumerate([(0, 0), (0, 29), (29, 0), (29, 29), (14, 14)]):
        patch = x[:, t:t + 227, l:l + 227]
        assert np.allclose(got[i], patch, atol=1e-4) and np.allclose(got[i + 5], patch[:, :, ::-1], atol=1e-4)
    train = TrainTransform(mean, np.ones(3), np.eye(3), seed=1, pca_std=0.0, crop=227)
    draws = [train.draw(i)[:2] for i in range(300)]
    assert max(max(d) for d in draws) == 29 and min(min(d) for d in draws) == 0
    top, left, flip, _ = train.draw(7)
    patch = x[:, top:top + 227, left:left + 227]
    assert np.allclose(train(image, 7).numpy(), patch[:, :, ::-1] if flip else patch, atol=1e-4)


def test_evaluate_ten_crops_at_227_with_no_flags(caffe10, tiny_store, tmp_path, capsys):
    from alexnet_mp.cli.evaluate import main
    csv_path = tmp_path / "p.csv"
    # evaluate reads the outputs by class name: the import's, named as the store's classes in its order
    named = torch.load(caffe10.checkpoint, weights_only=True)
    named["classes"] = read_classes(tiny_store)
    torch.save(named, tmp_path / "named.pt")
    assert main(["--checkpoint", str(tmp_path / "named.pt"), "--data-path", tiny_store, "-j", "0", "-b", "5",
                 "--predictions", str(csv_path)]) == 0
    assert "Caffe bvlc_alexnet, centre crop" in capsys.readouterr().out
    rows = list(csv.DictReader(open(csv_path)))
    store, classes = Store(tiny_store, "val"), read_classes(tiny_store)["classes"]
    # evaluate subtracts the store's mean image, as for every checkpoint (eval_loader)
    mean_bgr = read_stats(tiny_store)[0][..., ::-1].transpose(2, 0, 1)
    for i in (7,):
        ref = caffe_ten_crop_probs(caffe10.weights, store[i][0], mean_bgr)
        listed = {rows[i][f"top{k}"]: float(rows[i][f"prob{k}"]) for k in range(1, 6)}
        assert sorted(listed.values(), reverse=True) == pytest.approx(ref.sort(descending=True).values[:5], abs=1e-5)
        for name, p in listed.items():
            assert ref[classes.index(name)].item() == pytest.approx(p, abs=1e-5)


def test_predict_uses_the_checkpoints_caffe_mean(caffe10, tiny_store, tmp_path, capsys):
    from alexnet_mp.cli.predict import main
    image = Store(tiny_store, "val")[3][0]
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    assert main(["--checkpoint", str(caffe10.checkpoint), str(path)]) == 0
    printed = re.findall(r"^\s+([0-9.]+)\s+(n\d+) \((.*)\)$", capsys.readouterr().out, re.M)
    ref = caffe_ten_crop_probs(caffe10.weights, image, caffe10.mean_bgr)
    assert len(printed) == 5
    for p, wnid, name in printed:
        i = caffe10.wnids.index(wnid)
        assert ref[i].item() == pytest.approx(float(p), abs=1.5e-3) and name == f"thing {i}, Res {i}"


def test_filters_draw_each_columns_48_kernels_and_score_them(caffe10, tmp_path, capsys):
    """The synthetic conv1: column 0 grey (score 0), column 1 on one channel (about 2/3)."""
    from alexnet_mp.cli.visualize import main
    from alexnet_mp.eval.figures import SCALE, kernel_position
    out = tmp_path / "filters.png"
    assert main(["filters", "--checkpoint", str(caffe10.checkpoint), "--out", str(out)]) == 0
    printed = [float(v) for v in re.findall(r"column \d: colour-specificity ([0-9.]+)", capsys.readouterr().out)]
    w = caffe10.weights["conv1"][0].astype(np.float64)
    # the share of each kernel's variance that lies across its colour channels, per column
    scores = [np.mean([((k - k.mean(0)) ** 2).sum() / ((k - k.mean()) ** 2).sum() for k in w[c * 48:(c + 1) * 48]])
              for c in (0, 1)]
    assert printed == pytest.approx(scores, abs=6e-4) and printed[0] == 0 and printed[1] > 0.6
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    side = 11 * SCALE
    for j in (0, 47):
        x, y = kernel_position(0, j)
        grey = img[y:y + side, x:x + side]
        assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
        x, y = kernel_position(1, j)
        blue = img[y:y + side, x:x + side]       # Caffe's channel 0 (B) is drawn as blue: BGR was folded
        assert np.ptp(blue[..., 0]) == 0 and np.ptp(blue[..., 1]) == 0 and np.ptp(blue[..., 2]) > 100


def test_neighbours_of_a_training_image_start_with_itself(caffe10, tiny_store, tmp_path, capsys):
    from alexnet_mp.cli.visualize import main
    train = Store(tiny_store, "train")
    query = tmp_path / "q.png"
    Image.fromarray(train[5][0]).save(query)
    assert main(["neighbours", "--checkpoint", str(caffe10.checkpoint), "--data-path", tiny_store,
                 "--query", str(query), "--out", str(tmp_path / "nn.png"), "-k", "3"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.split(": ", 1)[1].split(", ")[0] == train.files[5]
    assert (tmp_path / "nn.png").stat().st_size > 0


def six_class_store(base):
    from alexnet_mp.data import demo_set
    from alexnet_mp.data.prepare import prepare
    src = demo_set.generate(str(base / "src"), train_per_class=2, val_per_class=1, classes=6)
    prepare(src, str(base / "store"), workers=1, log=lambda *a: None)
    return str(base / "store")


def _job(checkpoint, store, out):
    """A --weights run's job as train() builds it, before its first step."""
    from alexnet_mp.distributed.launch import Run
    from alexnet_mp import checkpoint as ckpt_io
    from alexnet_mp.train.loop import Options, build_job
    from alexnet_mp.train.weights import weights_config
    start = ckpt_io.load(str(checkpoint))
    cfg = weights_config(start, str(checkpoint), TrainConfig(batch_size=4))
    run = Run(None, log=lambda *a: None, model=cfg.model)
    opts = Options(data_path=store, output_dir=str(out), weights=str(checkpoint), workers=0)
    try:
        return build_job(opts, cfg, run, read_classes(store), start), start
    finally:
        run.close()


def test_fine_tune_from_the_import_draws_a_new_fc8_and_keeps_the_rest(caffe10, tmp_path):
    store = six_class_store(tmp_path)
    job, start = _job(caffe10.checkpoint, store, tmp_path / "out")
    got, saved = job.parts.net.canonical_state_dict(), start["model"]
    for name in saved:
        if not name.startswith("fc8"):
            assert torch.equal(got[name], saved[name]), name
    assert got["fc8.weight"].shape == (6, 4096) and torch.equal(got["fc8.bias"], torch.zeros(6))
    assert 0.0095 < got["fc8.weight"].std().item() < 0.0105          # §5: N(0, 0.01^2)
    cfg = job.parts.net.config
    assert (cfg.crop, cfg.lrn_across_columns, cfg.lrn_k, cfg.num_classes) == (227, True, 1.0, 6)
    assert job.parts.net.lrn.columns == 1 and job.parts.transform.size == 227
    images, _ = next(iter(job.parts.loader))
    assert images.shape == (4, 3, 227, 227)
    # The store's mean, not Caffe's: every layer adapts to the new images (train/weights.py).
    assert np.array_equal(job.parts.transform.mean, read_stats(store)[0].astype(np.float32))


def test_fine_tune_from_our_own_checkpoint_with_the_same_classes_keeps_fc8(tiny_store, tmp_path):
    from .checkpoints import write_old_format_checkpoint
    path = tmp_path / "ours.pt"
    from alexnet_mp.data.storecheck import read_classes
    net = AlexNet(10, seed=5)
    write_old_format_checkpoint(path, net, classes=read_classes(tiny_store))
    job, _ = _job(path, tiny_store, tmp_path / "out")
    got = job.parts.net.canonical_state_dict()
    assert all(torch.equal(got[k], v) for k, v in net.state_dict().items())
    assert job.parts.transform.size == 224


def test_fine_tune_from_a_checkpoint_of_other_classes_of_the_same_count_draws_fc8_anew(tiny_store, tmp_path):
    """Ten classes both, but not the same ten: keeping fc8 would map the store's classes to the wrong outputs."""
    from .checkpoints import write_old_format_checkpoint
    path = tmp_path / "other.pt"
    net = AlexNet(10, seed=5)
    write_old_format_checkpoint(path, net)                  # classes c0..c9, not the store's
    job, _ = _job(path, tiny_store, tmp_path / "out")
    got = job.parts.net.canonical_state_dict()
    assert torch.equal(got["fc7.weight"], net.state_dict()["fc7.weight"])
    assert not torch.equal(got["fc8.weight"], net.state_dict()["fc8.weight"])


def test_resume_from_the_import_says_to_use_weights(caffe10, tiny_store, tmp_path, capsys):
    from alexnet_mp.cli.train import main
    code = main(["--resume", str(caffe10.checkpoint), "--data-path", tiny_store, "--output-dir",
                 str(tmp_path / "out"), "-j", "0", "-b", "4"])
    assert_one_line_result(code, capsys, f"--weights {caffe10.checkpoint}")


def fine_tune(caffe10, tmp_path):
    """tools/train.py --weights on the import, one epoch on 6 classes; (store, output dir)."""
    store = six_class_store(tmp_path)
    out = tmp_path / "out"
    proc = run_script(["tools/train.py", "--weights", str(caffe10.checkpoint), "--data-path", store,
                       "--output-dir", str(out), "--epochs", "1", "-b", "6", "-j", "0", "--lr", "1e-5"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fc8 is drawn anew" in proc.stdout + proc.stderr
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["config"]["model"]["crop"] == 227 and ckpt["config"]["model"]["lrn_across_columns"] is True
    assert ckpt["model"]["fc8.weight"].shape == (6, 4096) and ckpt["epoch"] == 1
    assert os.path.isfile(out / "model_best.pt")
    return store, out


# slow: two training steps and a validation at 227, and two 0.5 GB checkpoints written
@pytest.mark.slow
def test_train_weights_end_to_end_on_six_classes(caffe10, tmp_path):
    fine_tune(caffe10, tmp_path)


# slow: as above, then one more epoch resumed
@pytest.mark.slow
def test_a_fine_tune_of_the_import_resumes(caffe10, tmp_path):
    store, out = fine_tune(caffe10, tmp_path)
    proc = run_script(["tools/train.py", "--resume", "auto", "--data-path", store, "--output-dir", str(out),
                       "--epochs", "2", "-b", "6", "-j", "0", "--lr", "1e-5"])
    assert "was trained as another variant" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2
