"""Training health figures: equal to a recomputation from the test's own hooks, measured only when armed."""
import numpy as np
import pytest
import torch

from alexnet_mp import AlexNet, ModelConfig, two_device_alexnet
from alexnet_mp.train.health import Health
from alexnet_mp.train.optim import PaperSGD, param_groups
from alexnet_mp.train.step import train_step

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")


def _batch(n=4, classes=10):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 224, 224, generator=g) * 60, torch.randint(0, classes, (n,), generator=g)


def _reference(outputs, modules, optimizer):
    """The three figures from the layers' raw outputs, in numpy: per map (conv) or neuron (fc),
    dead when not positive anywhere in the batch; RMS after the ReLU; RMS(velocity) / RMS(weight)."""
    ref = {}
    for name in LAYERS:
        parts = [o.numpy().astype(np.float64) for o in outputs[name]]
        dead = total = sq = count = 0
        for o in parts:
            units = o.transpose(1, 0, *range(2, o.ndim)).reshape(o.shape[1], -1)
            dead += int((units.max(axis=1) <= 0).sum())
            total += units.shape[0]
            sq += (np.maximum(o, 0) ** 2).sum()
            count += o.size
        w = np.concatenate([m.weight.detach().numpy().ravel() for m in modules[name]]).astype(np.float64)
        v = np.concatenate([optimizer.state[m.weight]["velocity"].numpy().ravel()
                            for m in modules[name]]).astype(np.float64)
        ref[name] = {"dead": dead / total, "rms": np.sqrt(sq / count),
                     "update_ratio": np.sqrt((v ** 2).mean()) / np.sqrt((w ** 2).mean())}
    return ref


@pytest.mark.parametrize("placement", ["grouped", "two-device"])
def test_health_figures_equal_a_recomputation_from_hooks(placement):
    """A mismatch points to the unit a figure counts (a map, not a position), to the columns of
    a split placement not being pooled, or to the update taken from something other than the velocity."""
    cfg = ModelConfig(num_classes=10, dropout=0.0)
    net = (AlexNet(10, seed=0, config=cfg) if placement == "grouped"
           else two_device_alexnet(("cpu", "cpu"), 10, seed=0, config=cfg))
    with torch.no_grad():              # kill a third of conv3's maps: a dead fraction that is not 0
        for m in (net.conv3,) if placement == "grouped" else [c.conv3 for c in net.columns]:
            m.bias[::3] = -1e4
    health = Health(net)
    modules = health.modules
    outputs = {name: [] for name in LAYERS}
    hooks = [m.register_forward_hook(lambda mod, i, o, name=name: outputs[name].append(o.detach().clone()))
             for name in LAYERS for m in modules[name]]
    optimizer = PaperSGD(param_groups(net, 5e-4), lr=0.01)
    x, y = _batch()
    train_step(net.train(), optimizer, x, y)            # a first step: the velocity is not zero after it
    for o in outputs.values():
        o.clear()
    health.arm()
    train_step(net, optimizer, x, y)
    got = health.read(optimizer)
    for h in hooks:
        h.remove()
    ref = _reference(outputs, modules, optimizer)
    assert got["conv3"]["dead"] == pytest.approx(ref["conv3"]["dead"]) and ref["conv3"]["dead"] > 0.3
    for name in LAYERS:
        for key in ("dead", "rms", "update_ratio"):
            # float32 sums over fc6's 38 M weights drift by a few 1e-4 from numpy's float64
            assert got[name][key] == pytest.approx(ref[name][key], rel=1e-3, abs=1e-7), (name, key)


def test_an_unarmed_step_measures_nothing():
    net = AlexNet(10, seed=0)
    health = Health(net)
    optimizer = PaperSGD(param_groups(net, 5e-4), lr=0.01)
    x, y = _batch(2)
    train_step(net.train(), optimizer, x, y)
    assert health.read(optimizer) == {} and health._outputs == {}


def test_a_demo_resumed_in_its_folder_keeps_the_plan_it_was_sized_to(tmp_path):
    """A second demo into the same folder must not re-time the machine and change the epochs
    (and so the lr drop) of the run it resumes, nor, for a folder of an older preset, its batch and lr."""
    from dataclasses import replace

    from alexnet_mp import TrainConfig
    from alexnet_mp.demo import DemoOptions, planned_config

    from .checkpoints import write_old_format_checkpoint
    opts = DemoOptions(output_dir=str(tmp_path))
    assert planned_config(opts) is None                       # nothing there yet: the demo times the machine
    write_old_format_checkpoint(tmp_path / "checkpoint.pt", AlexNet(10, seed=0),
                                config=replace(TrainConfig(), batch_size=32, epochs=5, lr_steps=(4,)))
    cfg = planned_config(opts)
    assert (cfg.epochs, cfg.lr_steps, cfg.batch_size, cfg.lr) == (5, (4,), 32, 0.01)


def test_a_demo_sized_to_fewer_epochs_drops_the_lr_after_the_first_third():
    """The README's rule for a budget-sized demo; a mismatch points to demo_config or first_third."""
    from alexnet_mp.demo import DEMO_PRESET, DemoOptions, demo_config
    opts = DemoOptions()
    preset = dict((name, value) for name, value, _, _ in DEMO_PRESET)
    assert demo_config(opts).lr_steps == preset["lr_steps"] and demo_config(opts).epochs == preset["epochs"]
    for epochs, drop in ((1, ()), (2, (1,)), (3, (1,)), (4, (1,)), (5, (2,))):
        cfg = demo_config(opts, epochs)
        assert (cfg.epochs, cfg.lr_steps) == (epochs, drop)
        assert (cfg.batch_size, cfg.lr) == (preset["batch_size"], preset["lr"])
