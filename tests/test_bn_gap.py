"""BatchNorm in place of LRN and the global-average-pool head (issue 29): parameter counts from
the widths, the placements against each other and against a recomputation written out here with
torch.nn.functional (it reads neither ARCH nor the model), the tools from a checkpoint alone,
and the study's variants."""
import csv
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from alexnet_mp import AlexNet, ModelConfig, rank_alexnet
from alexnet_mp.checkpoint import atomic_save, model_config
from alexnet_mp.cli import evaluate, study
from alexnet_mp.cli import train as train_cli
from alexnet_mp.config import to_dict, TrainConfig
from alexnet_mp.data.store import Store
from alexnet_mp.data.storecheck import read_stats
from alexnet_mp.distributed.parallel import Topology
from alexnet_mp.distributed.placement import two_device_alexnet
from alexnet_mp.eval.archfig import layout
from alexnet_mp.eval.figures import CAPTION, feature_space, neighbours_grid
from alexnet_mp.eval.inference import load_for_inference
from alexnet_mp.study import estimate
from alexnet_mp.study.variants import choose_variants
from alexnet_mp.train.diagnose import cause_of
from alexnet_mp.train.health import Health
from alexnet_mp.train.optim import PaperSGD, param_groups
from alexnet_mp.train.step import train_step

from .helpers import assert_close_rel, assert_one_line_result, run_ranks
from .reference import centre_crop

BN_SMALL = ModelConfig(num_classes=10, batch_norm=True, head="gap", lrn=False)     # a checkpoint of 2.6 M
GAP = ModelConfig(num_classes=7, head="gap", batch_norm=True)
CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")
# At 0.01 the first step of a BatchNorm net on 4 raw-pixel images takes the loss from 3.7 to 0.9, and
# the second magnifies float32's rounding to 1e-4 of conv1's scale between any two placements.
LR = 0.001


def batch(n=4, classes=10):
    g = torch.Generator().manual_seed(11)
    return torch.randn(n, 3, 224, 224, generator=g) * 60, torch.randint(0, classes, (n,), generator=g)


@torch.no_grad()
def recompute(sd, x, lrn=True, bn=False, head="fc", dropout=0.5, columns=2):
    """Eval-mode logits of canonical state `sd`, written out by hand: BatchNorm with the running
    statistics; for the "gap" head each pooled conv5 map's mean, then fc8 on those means."""
    def norm(a):
        if not lrn:
            return a
        op = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
        return torch.cat([op(h) for h in a.chunk(columns, 1)], 1)

    def conv(a, name, **kw):
        a = F.conv2d(a, sd[f"{name}.weight"], sd[f"{name}.bias"], **kw)
        if bn:
            a = F.batch_norm(a, sd[f"{name}_bn.running_mean"], sd[f"{name}_bn.running_var"],
                             sd[f"{name}_bn.weight"], sd[f"{name}_bn.bias"], False, 0.0, 1e-5)
        return F.relu(a)

    x = F.pad(x, (0, 3, 0, 3))
    x = F.max_pool2d(norm(conv(x, "conv1", stride=4)), 3, 2)
    x = F.max_pool2d(norm(conv(x, "conv2", padding=2, groups=columns)), 3, 2)
    x = conv(conv(x, "conv3", padding=1), "conv4", padding=1, groups=columns)
    x = F.max_pool2d(conv(x, "conv5", padding=1, groups=columns), 3, 2)
    if head == "gap":
        return F.linear(x.mean((2, 3)), sd["fc8.weight"], sd["fc8.bias"])
    for name in ("fc6", "fc7"):
        x = F.relu(F.linear(x.flatten(1), sd[f"{name}.weight"], sd[f"{name}.bias"])) * (1 - dropout)
    return F.linear(x, sd["fc8.weight"], sd["fc8.bias"])


def test_parameter_counts_follow_from_the_widths():
    """Figure 2's maps per column (48, 128, 192, 192, 128; 2048, 2048) and kernels: the paper's
    60,965,224; BatchNorm adds a scale and shift per map; the gap head keeps the convs and an fc8
    that reads 2 x 128 means."""
    maps = {"conv1": 96, "conv2": 256, "conv3": 384, "conv4": 384, "conv5": 256}
    reads = {"conv1": 3 * 11 * 11, "conv2": 48 * 5 * 5, "conv3": 256 * 3 * 3, "conv4": 192 * 3 * 3,
             "conv5": 192 * 3 * 3}
    convs = sum(maps[n] * reads[n] + maps[n] for n in maps)
    fcs = (256 * 6 * 6 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    bn = 2 * sum(maps.values())
    head = 256 * 1000 + 1000
    expected = [(ModelConfig(), convs + fcs), (ModelConfig(batch_norm=True), convs + fcs + bn),
                (ModelConfig(head="gap"), convs + head)]
    assert (convs + fcs, bn, convs, head) == (60_965_224, 2 * 1_376, 2_334_080, 257_000)     # the issue's
    assert convs + fcs + bn == 60_967_976 and convs + head == 2_591_080
    for cfg, n in expected:
        model = AlexNet(config=cfg, init=False)
        assert sum(p.numel() for p in model.parameters()) == n, cfg
    # The running statistics are buffers, in the canonical state; the batch counter is not.
    sd = AlexNet(config=ModelConfig(batch_norm=True, head="gap"), seed=0).canonical_state_dict()
    assert {k for k in sd if k.startswith("conv1_bn")} == {f"conv1_bn.{t}" for t in
                                                           ("weight", "bias", "running_mean", "running_var")}
    assert "fc6.weight" not in sd and sd["fc8.weight"].shape == (1000, 256)


def _steps(model, x, y, steps=2):
    optimizer = PaperSGD(param_groups(model, 5e-4), lr=LR)
    for _ in range(steps):
        train_step(model.train(), optimizer, x, y)
    return model


def _ranks(rank, world, bn_path):
    topology = Topology()
    x, y = batch(classes=GAP.num_classes)
    gap = _steps(rank_alexnet("cpu", GAP.num_classes, seed=2, config=GAP, topology=topology), x, y)
    out = {"state": gap.canonical_state_dict(), "logits": gap.eval()(x)}
    loaded = load_for_inference(bn_path, placement="rank", devices=["cpu"], topology=topology)[0]
    out["bn_loaded_logits"] = loaded(x)
    return out


def _bn_checkpoint(path):
    """A BatchNorm network with running statistics away from their init, saved as tools/train.py does."""
    model = AlexNet(10, seed=4, config=BN_SMALL)
    with torch.no_grad():
        for name in CONVS:
            bn = getattr(model, f"{name}_bn")
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
    atomic_save({"model": model.canonical_state_dict(), "config": to_dict(TrainConfig(model=BN_SMALL))}, path)
    return model.canonical_state_dict()


def test_batchnorm_and_gap_agree_across_placements_and_with_the_recomputation(tmp_path):
    """Two gloo ranks (a column each) and the grouped net with BatchNorm and the gap head: two
    training steps give the same weights and running statistics (each column normalises its own
    maps by the same batch statistics), and the logits are the mean of each pooled conv5 map, then
    fc8, in both. A BatchNorm checkpoint loads in the grouped, two-device and rank placements and
    computes the recomputation's logits (without LRN, and the gap head: the fc head's BatchNorm
    checkpoint goes through tools/evaluate.py below)."""
    path = str(tmp_path / "bn.pt")
    sd = _bn_checkpoint(path)
    results = run_ranks(2, _ranks, path)
    x, y = batch(classes=GAP.num_classes)
    grouped = _steps(AlexNet(GAP.num_classes, seed=2, config=GAP), x, y)
    want = grouped.canonical_state_dict()
    assert not torch.equal(want["conv2_bn.running_var"], torch.ones(256))        # the steps moved them
    assert_close_rel(grouped.eval()(x), recompute(want, x, bn=True, head="gap"), 1e-4, "grouped gap")
    ref_bn = recompute(sd, x, lrn=False, bn=True, head="gap")
    for r in results:
        for name, t in want.items():
            if name.endswith(".bias"):
                # At the scale of their init (0 or 1): a conv bias before BatchNorm gets no gradient
                # (BatchNorm subtracts each map's mean) but rounding noise, BatchNorm's shift a sum
                # that nearly cancels.
                assert (r["state"][name] - t).abs().max() < 1e-5, name
            else:
                assert_close_rel(r["state"][name], t, 1e-4, name)
        assert_close_rel(r["logits"], recompute(r["state"], x, bn=True, head="gap"), 1e-4, "rank gap")
        assert_close_rel(r["bn_loaded_logits"], ref_bn, 1e-4, "rank load")
    for placement, devices in (("grouped", ["cpu"]), ("two-device", ["cpu", "cpu"])):
        model = load_for_inference(path, placement=placement, devices=devices)[0]
        assert_close_rel(model(x), ref_bn, 1e-4, placement)
    features = two_device_alexnet(("cpu", "cpu"), 7, seed=2, config=GAP).eval().features(x)
    assert features.shape == (4, 256)        # the gap head's features: one mean per conv5 map


@pytest.mark.parametrize("flags", [["--batch-norm", "--no-lrn"], ["--head", "gap"]], ids=["batchnorm", "gap"])
def test_each_switch_trains_and_evaluates_from_its_checkpoint_alone(flags, tiny_store, tmp_path, capsys):
    """tools/train.py with the switch, then tools/evaluate.py with no flags: the checkpoint's config
    rebuilds the network, whose predictions are the recomputation's; resuming it with the other
    switch is one line."""
    out = str(tmp_path / "run")
    assert train_cli.main(["--data-path", tiny_store, "--output-dir", out, "-b", "8", "--stop-at-step", "2",
                           "-j", "0", "--lr", "0.001", "--checkpoint-minutes", "0"] + flags) == 0
    path = f"{out}/checkpoint.pt"
    state = torch.load(path, weights_only=True)
    cfg = model_config(state)
    assert (cfg.batch_norm, cfg.lrn, cfg.head) == ((True, False, "fc") if "--batch-norm" in flags
                                                   else (False, True, "gap"))
    if cfg.batch_norm:      # trained: the running statistics saved are no longer the init's
        assert not torch.equal(state["model"]["conv1_bn.running_mean"], torch.zeros(96))
    table = str(tmp_path / "p.csv")
    assert evaluate.main(["--checkpoint", path, "--data-path", tiny_store, "-j", "0", "--crops", "1",
                          "-b", "10", "--predictions", table]) == 0
    store, mean = Store(tiny_store, "val"), read_stats(tiny_store)[0]
    x = torch.cat([centre_crop(store[i][0], mean) for i in range(len(store))])
    probs = torch.softmax(recompute(state["model"], x, lrn=cfg.lrn, bn=cfg.batch_norm, head=cfg.head), 1)
    with open(table) as f:
        rows = list(csv.DictReader(f))
    for row, p in zip(rows, probs):
        assert float(row["prob1"]) == pytest.approx(p.max().item(), abs=2e-5)
    capsys.readouterr()
    other = ["--head", "gap"] if cfg.batch_norm else ["--batch-norm"]
    code = train_cli.main(["--data-path", tiny_store, "--output-dir", out, "-b", "20", "-j", "0",
                           "--resume", path] + other)
    line = assert_one_line_result(code, capsys, "was trained as another variant (")
    assert ("head: 'fc' -> 'gap'" if cfg.batch_norm else "batch_norm: False -> True") in line


def test_dropout_with_the_gap_head_is_one_line(tiny_store, tmp_path, capsys):
    code = train_cli.main(["--data-path", tiny_store, "--output-dir", str(tmp_path), "--head", "gap",
                           "--dropout", "0.3"])
    assert_one_line_result(code, capsys, "--dropout 0.3 with --head gap")


def test_health_covers_the_convs_of_the_gap_head_and_reads_batchnorms_output():
    """No fc6 or fc7 to measure; with BatchNorm a layer's output is BatchNorm's, after the ReLU: an
    RMS near sqrt(1/2) of unit-variance maps, whatever the raw pixels' scale. The no-signal cause
    (conv1 drowned by the biases) is not read for a BatchNorm net."""
    model = AlexNet(7, seed=0, config=GAP)
    health = Health(model)
    optimizer = PaperSGD(param_groups(model, 5e-4), lr=0.01)
    health.arm()
    x, y = batch(4, 7)
    train_step(model.train(), optimizer, x, y)
    figures = health.read(optimizer)
    assert list(figures) == list(CONVS)
    assert 0.4 < figures["conv1"]["rms"] < 0.8, figures["conv1"]      # ReLU of N(0, 1): sqrt(1/2)
    assert cause_of(figures, batch_norm=True) is None
    assert cause_of(figures)[0] == "no-signal"


def test_figure_2_draws_the_gap_head_and_marks_batchnorm():
    boxes = layout(ModelConfig(num_classes=7, head="gap", batch_norm=True, lrn=False))
    assert [b.layer for b in boxes if b.column in (-1, 0)] == ["input", *CONVS, "fc8"]
    conv5, fc8 = [b for b in boxes if b.layer == "conv5"][0], [b for b in boxes if b.layer == "fc8"][0]
    assert conv5.average and conv5.maps == 128 and fc8.exchange and fc8.maps == 4       # 7 classes: 4 / 3
    assert all(b.lrn == "BN" for b in boxes if b.layer in CONVS)
    assert not any(b.average for b in layout(ModelConfig()))


def test_the_study_names_the_later_variants_and_all_keeps_its_meaning(tiny_store, tmp_path, monkeypatch, capsys):
    """The dry run plans them by name and times each as a network of its own (the timing itself
    replaced here: tests/test_study.py runs the real one)."""
    timed = []
    monkeypatch.setattr(estimate, "time_network", lambda cfg, *a, **k: timed.append(cfg) or (0.1, 0.2, 0.01))
    monkeypatch.setattr(estimate, "time_save", lambda *a: 0.5)
    assert "batchnorm" not in [v.name for v in choose_variants("all")]
    chosen = {v.name: v for v in choose_variants("batchnorm,gap")}
    assert list(chosen) == ["baseline", "batchnorm", "gap"]
    assert chosen["batchnorm"].config(TrainConfig()).model == ModelConfig(batch_norm=True, lrn=False)
    assert chosen["gap"].config(TrainConfig()).model == ModelConfig(head="gap")
    assert study.main(["--data-path", tiny_store, "--output-dir", str(tmp_path / "s"), "--dry-run", "-b", "2",
                       "--epochs", "1", "--variants", "batchnorm,gap"]) == 0
    out = capsys.readouterr().out
    for name, overrides in (("batchnorm", "batch_norm=True, lrn=False"), ("gap", "head=gap")):
        assert any(line.split()[:1] == [name] and overrides in line for line in out.splitlines()), out
    assert math.isfinite(float(out.split("estimated ")[1].split()[0]))
    networks = [(c.batch_norm, c.lrn, c.head) for c in timed[1:]]        # after the unseen warm-up
    assert networks == [(False, True, "fc"), (True, False, "fc"), (False, True, "gap")]


def test_a_bare_state_dict_says_its_switches_by_its_tensors_and_another_net_refuses_it(tmp_path):
    """A bare state dict carries no config: BatchNorm's tensors and fc8's width tell the variant,
    so the tools rebuild it; a network of the other variant refuses it in one line naming it."""
    state = AlexNet(7, seed=0, config=GAP).canonical_state_dict()
    path = str(tmp_path / "bare.pt")
    torch.save(state, path)
    got = model_config(torch.load(path, weights_only=True))
    assert (got.batch_norm, got.head, got.num_classes) == (True, "gap", 7)
    x, _ = batch(2)
    assert_close_rel(load_for_inference(path)[0](x), recompute(state, x, bn=True, head="gap"), 1e-4, "bare")
    with pytest.raises(ValueError, match=r"another variant of the network \(head='gap', batch_norm=True\)"):
        AlexNet(7, seed=0, config=ModelConfig(num_classes=7, lrn=False)).load_canonical_state_dict(state)


def test_the_neighbours_caption_names_the_feature_space():
    assert "fc7" in feature_space(ModelConfig()) and "conv5" in feature_space(GAP)
    image = np.zeros((8, 8, 3), np.uint8)
    plain = neighbours_grid([image], [[image]], size=16)
    captioned = neighbours_grid([image], [[image]], size=16, caption=feature_space(GAP))
    assert captioned.size == (plain.size[0], plain.size[1] + CAPTION)
    assert np.asarray(captioned)[plain.size[1]:].min() < 255        # the caption's text is drawn
