"""The §3 ablation switches and the two failure modes: each changes exactly what it names."""
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch import nn

from alexnet_mp import AlexNet, ModelConfig, canonical_shapes, two_device_alexnet
from alexnet_mp.cli.train import parser
from alexnet_mp.errors import ConfigError
from alexnet_mp.data.store import Store
from alexnet_mp.data.storecheck import read_stats
from alexnet_mp.data.transforms import EvalTransform, TrainTransform
from alexnet_mp.model.arch import ARCH
from alexnet_mp.cli.train import config_from_args

from .helpers import assert_close_rel
from .reference import TORCHVISION_MEAN, TORCHVISION_STD, centre_crop, reference_logits

N = 10


def images(n, seed=0):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed)) * 60


def changed(flags):
    """{dotted config field: value} that the train flags change against the paper's defaults."""
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out
    base, got = flat(asdict(config_from_args(parser().parse_args([])))), \
        flat(asdict(config_from_args(parser().parse_args(flags))))
    return {k: v for k, v in got.items() if base[k] != v and k != "asked"}     # asked: the flags given


@pytest.mark.parametrize("flags, field", [
    (["--columns", "1"], {"model.columns": 1}), (["--no-lrn"], {"model.lrn": False}),
    (["--pool", "2"], {"model.pool_size": 2}), (["--input-scale", "unit"], {"model.input_scale": "unit"}),
    (["--init", "torch"], {"model.init": "torch"}), (["--pca-std", "0"], {"pca_std": 0.0}),
    (["--dropout", "0"], {"model.dropout": 0.0})])
def test_each_flag_changes_exactly_its_config_field(flags, field):
    assert changed(flags) == field


def test_one_column_net_has_the_hand_counted_parameters_and_the_papers_widths():
    # §3.2 footnote: conv1..conv4 with half the kernels (48, 128, 192, 192), conv5 and the fc
    # layers not halved (256, 4096, 4096). One column: every conv reads all of the previous maps.
    expected = (48 * 3 * 11 * 11 + 48            # conv1      17,472
                + 128 * 48 * 5 * 5 + 128         # conv2     153,728
                + 192 * 128 * 3 * 3 + 192        # conv3     221,376
                + 192 * 192 * 3 * 3 + 192        # conv4     331,968
                + 256 * 192 * 3 * 3 + 256        # conv5     442,624
                + 4096 * 256 * 6 * 6 + 4096      # fc6    37,752,832
                + 4096 * 4096 + 4096             # fc7    16,781,312
                + 1000 * 4096 + 1000)            # fc8     4,097,000
    assert expected == 59_798_312
    model = AlexNet(1000, seed=0, config=ModelConfig(columns=1))
    assert sum(p.numel() for p in model.parameters()) == expected
    # "approximately the same number of parameters" as the two-column net's 60,965,224: within 2%.
    assert abs(expected - 60_965_224) / 60_965_224 < 0.02
    seen = {}
    for layer in ARCH:
        getattr(model, layer.name).register_forward_hook(
            lambda m, i, o, name=layer.name: seen.__setitem__(name, tuple(o.shape[1:])))
    model.eval()(images(1))
    assert seen == {"conv1": (48, 55, 55), "conv2": (128, 27, 27), "conv3": (192, 13, 13),
                    "conv4": (192, 13, 13), "conv5": (256, 13, 13), "fc6": (4096,), "fc7": (4096,),
                    "fc8": (1000,)}
    assert all(getattr(model, name).groups == 1 for name in ("conv2", "conv4", "conv5"))


VARIANTS = {"baseline": ({}, {}), "columns1": ({"columns": 1}, {"columns": 1}),
            "no-lrn": ({"lrn": False}, {"lrn": False}), "pool2": ({"pool_size": 2}, {"pool": 2}),
            "no-dropout": ({"dropout": 0.0}, {"dropout": 0.0})}


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_logits_equal_the_spec_written_out_by_hand(name):
    """A mismatch points to a variant field the model ignores (compare the reference's kwargs)."""
    config, ref_kwargs = VARIANTS[name]
    model = AlexNet(N, seed=4, config=ModelConfig(**config)).eval()
    x = images(2)
    with torch.no_grad():
        got = model(x)
    assert_close_rel(got, reference_logits(model.state_dict(), x, **ref_kwargs), 1e-4, name)


def test_no_lrn_equals_the_baseline_with_its_lrn_replaced_by_identity():
    x = images(2)
    baseline, no_lrn = AlexNet(N, seed=1).eval(), AlexNet(N, seed=1, config=ModelConfig(lrn=False)).eval()
    assert all(torch.equal(v, no_lrn.state_dict()[k]) for k, v in baseline.state_dict().items())
    with torch.no_grad():
        with_lrn = baseline(x)
        baseline.lrn = nn.Identity()
        assert torch.equal(no_lrn(x), baseline(x))
    assert not torch.allclose(with_lrn, baseline(x))        # the LRN did matter


def test_pool2_keeps_the_map_sizes_and_takes_the_max_of_disjoint_2x2_blocks():
    model = AlexNet(N, seed=2, config=ModelConfig(pool_size=2)).eval()
    calls = []
    model.pool.register_forward_hook(lambda m, i, o: calls.append((i[0].detach().clone(), o.detach().clone())))
    fc6_in = []
    model.fc6.register_forward_hook(lambda m, i, o: fc6_in.append(i[0].shape[1]))
    model(images(1))
    assert [(tuple(a.shape[2:]), tuple(b.shape[2:])) for a, b in calls] == [((55, 55), (27, 27)),
                                                                          ((27, 27), (13, 13)),
                                                                          ((13, 13), (6, 6))]
    assert fc6_in == [256 * 6 * 6]
    for a, b in calls:
        a = a.numpy()
        n, c, h, _ = a.shape
        k = h // 2                      # 27, 13, 6 windows: the last row and column go unread
        naive = a[:, :, :2 * k, :2 * k].reshape(n, c, k, 2, k, 2).max(axis=(3, 5))
        np.testing.assert_array_equal(b.numpy(), naive)
    # The paper's overlapping 3/2 pooling gives the same sizes from other windows.
    paper = torch.nn.functional.max_pool2d(calls[0][0], 3, 2)
    assert paper.shape == calls[0][1].shape and not torch.equal(paper, calls[0][1])


def test_torch_init_draws_pytorchs_default_and_changes_nothing_else():
    cfg = ModelConfig(init="torch")
    model = AlexNet(1000, seed=0, config=cfg)
    sd = model.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == canonical_shapes(1000)
    # kaiming_uniform(a=sqrt(5)) and the bias rule of nn.Conv2d/nn.Linear: U(-1/sqrt(fan_in), +1/sqrt(fan_in)),
    # fan_in per column (a grouped conv's in_channels / groups x k x k).
    fan_in = {"conv1": 3 * 11 * 11, "conv2": 48 * 5 * 5, "conv3": 256 * 3 * 3, "conv4": 192 * 3 * 3,
              "conv5": 192 * 3 * 3, "fc6": 256 * 6 * 6, "fc7": 4096, "fc8": 4096}
    for name, fan in fan_in.items():
        w, b = sd[f"{name}.weight"], sd[f"{name}.bias"]
        assert torch.nn.init._calculate_fan_in_and_fan_out(w)[0] == fan        # torch's own rule agrees
        bound = 1 / math.sqrt(fan)
        assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound, name
        assert abs(w.std().item() - bound / math.sqrt(3)) < 0.02 * bound, name
        assert b.abs().max() <= bound and b.std() > 0.2 * bound, name        # not the paper's constants
    # Everything else is the paper's: the same weights give the same logits in a paper-init model.
    small = AlexNet(N, seed=3, config=cfg).eval()
    paper = AlexNet(N, config=ModelConfig(), init=False).eval()
    paper.load_canonical_state_dict(small.state_dict())
    x = images(2)
    with torch.no_grad():
        assert torch.equal(small(x), paper(x))
    # One draw for the whole network, sliced by every placement.
    split = two_device_alexnet(("cpu", "cpu"), N, seed=3, config=cfg)
    assert all(torch.equal(v, small.state_dict()[k]) for k, v in split.canonical_state_dict().items())


def test_input_scale_unit_is_torchvisions_scaling_of_the_same_crops(tiny_store):
    store = Store(tiny_store, "train")
    mean, eigval, eigvec = read_stats(tiny_store)
    image = store[3][0]
    # Eval: torchvision's ToTensor + Normalize of the centre crop (an independent implementation).
    got = EvalTransform(mean, crops=1, input_scale="unit")(image)
    torch.testing.assert_close(got[None], centre_crop(image, input_scale="unit"), rtol=1e-5, atol=1e-5)
    raw = EvalTransform(mean, crops=1)(image)
    torch.testing.assert_close(raw[None], centre_crop(image, mean), rtol=1e-5, atol=1e-3)
    # Train: the same crop, flip and PCA draw; only the scaling differs. Undo each scaling: both
    # give the raw pixels plus the same colour shift.
    std = 255 * torch.tensor(TORCHVISION_STD)[:, None, None]
    m = 255 * torch.tensor(TORCHVISION_MEAN)[:, None, None]
    paper = TrainTransform(mean, eigval, eigvec, seed=5)
    unit = TrainTransform(mean, eigval, eigvec, seed=5, input_scale="unit")
    for index in range(6):
        top, left, flip, _ = paper.draw(index)
        mean_crop = torch.from_numpy(np.ascontiguousarray(
            mean[top:top + 224, left:left + 224][:, ::-1 if flip else 1].transpose(2, 0, 1))).float()
        torch.testing.assert_close(unit(image, index) * std + m, paper(image, index) + mean_crop,
                                   rtol=1e-5, atol=2e-3)
    # The model does not know: same weights, same function.
    a = AlexNet(N, seed=0, config=ModelConfig(input_scale="unit")).eval()
    b = AlexNet(N, seed=0).eval()
    x = images(1)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_the_one_column_net_is_refused_outside_the_grouped_placement(tiny_store, tmp_path, monkeypatch, capsys):
    from alexnet_mp.cli import train as train_cli
    with pytest.raises(ConfigError, match="runs in the grouped placement only"):
        two_device_alexnet(("cpu", "cpu"), N, config=ModelConfig(columns=1))
    argv = ["--data-path", tiny_store, "--output-dir", str(tmp_path), "--columns", "1"]
    for extra, env in ((["--devices", "cpu,cpu"], {}), ([], {"RANK": "0", "WORLD_SIZE": "2"})):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        capsys.readouterr()
        assert train_cli.main(argv + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["error: the 1-column net (--columns 1) runs in the grouped placement only: "
                       "run it without torchrun and without --devices"]
    with pytest.raises(ConfigError, match="choose 2 or 1"):
        ModelConfig(columns=3)
