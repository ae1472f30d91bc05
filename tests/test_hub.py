"""hubconf.py: the network as torch.hub loads it from a checkout, against the package's own API."""
import ast
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from alexnet_mp import AlexNet, ModelConfig
from alexnet_mp.checkpoint import atomic_save

from .checkpoints import write_old_format_checkpoint
from .conftest import ROOT
from .helpers import assert_close_rel


def hubconf():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", os.path.join(ROOT, "hubconf.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hub(entry, **kwargs):
    return torch.hub.load(ROOT, entry, source="local", **kwargs)


def images(n, seed=0):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed)) * 60


def spec_parameter_count(classes):
    """Weights and biases of spec §1's table: (kernels or neurons, what each one reads)."""
    layers = [(96, 11 * 11 * 3), (256, 5 * 5 * 48), (384, 3 * 3 * 256), (384, 3 * 3 * 192), (256, 3 * 3 * 192),
              (4096, 6 * 6 * 256), (4096, 4096), (classes, 4096)]
    return sum(out * reads + out for out, reads in layers)


def test_hub_alexnet_is_the_packages_grouped_net_from_the_same_seed():
    got, ref = hub("alexnet", num_classes=10, seed=3).eval(), AlexNet(10, seed=3).eval()
    assert isinstance(got, AlexNet) and got.config == ModelConfig(num_classes=10)
    for name, t in ref.canonical_state_dict().items():
        assert torch.equal(got.canonical_state_dict()[name], t), name
    with torch.no_grad():
        assert torch.equal(got(images(2)), ref(images(2)))


def test_hub_alexnet_has_the_specs_60965224_parameters_at_1000_classes():
    assert spec_parameter_count(1000) == 60_965_224           # the spec's total, from its table
    net = hub("alexnet")
    assert sum(p.numel() for p in net.parameters()) == spec_parameter_count(1000)


def test_hub_alexnet_builds_the_variant_its_keywords_name():
    got = hub("alexnet", num_classes=7, seed=1, columns=1, lrn=False, pool_size=2).eval()
    ref = AlexNet(7, seed=1, config=ModelConfig(columns=1, lrn=False, pool_size=2)).eval()
    assert got.config == ref.config and got.conv2.groups == 1
    with torch.no_grad():
        assert torch.equal(got(images(1)), ref(images(1)))


def test_two_device_entry_on_two_cpus_computes_what_the_grouped_net_does():
    split = hub("alexnet_two_device", devices=("cpu", "cpu"), num_classes=10, seed=4).eval()
    grouped = AlexNet(10, seed=4).eval()
    with torch.no_grad():
        assert_close_rel(split(images(2)), grouped(images(2)), rtol=1e-5)


def test_checkpoint_entry_loads_a_checkpoint_written_by_the_test(tmp_path):
    net = AlexNet(10, seed=6).eval()
    classes = {"classes": [f"n{i:08d}" for i in range(10)], "names": {"n00000003": "three"}}
    mean = np.random.default_rng(0).uniform(0, 255, (256, 256, 3))
    path = str(tmp_path / "model_best.pt")
    write_old_format_checkpoint(path, net, classes=classes, mean=mean)
    got = hub("alexnet_from_checkpoint", path=path, device="cpu")
    assert not got.training and got.classes == classes["classes"] and got.class_names == classes["names"]
    np.testing.assert_array_equal(got.data_mean, mean)
    with torch.no_grad():
        assert torch.equal(got(images(2)), net(images(2)))


def test_checkpoint_entry_loads_a_bare_state_dict_of_the_one_column_net(tmp_path):
    net = AlexNet(5, seed=2, config=ModelConfig(columns=1)).eval()
    path = str(tmp_path / "bare.pt")
    atomic_save(net.state_dict(), path)
    got = hub("alexnet_from_checkpoint", path=path)
    assert got.config.columns == 1 and got.classes == [str(i) for i in range(5)] and got.data_mean is None
    with torch.no_grad():
        assert torch.equal(got(images(1)), net(images(1)))


def _required_imports(path):
    """Top-level names a module imports unconditionally (not inside a function or a try)."""
    names = set()
    for node in ast.parse(open(path, encoding="utf-8").read()).body:
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("entry", ["alexnet", "alexnet_from_checkpoint"])
def test_dependencies_name_every_package_the_entry_points_import(tmp_path, entry):
    """torch.hub checks `dependencies` before it loads an entry point: it must list every
    third-party module that loading imports (read from the modules a fresh process loaded)."""
    path = str(tmp_path / "bare.pt")
    atomic_save(AlexNet(3, seed=0).state_dict(), path)
    kwargs = {"num_classes": 3} if entry == "alexnet" else {"path": path}
    code = (f"import json, sys, torch; torch.hub.load({ROOT!r}, {entry!r}, source='local', **{kwargs!r}); "
            "print(json.dumps([m.__file__ for n, m in sys.modules.items() if n.split('.')[0] in "
            "('alexnet_mp', 'hubconf') and getattr(m, '__file__', None)]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES=""), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = json.loads(proc.stdout.strip().splitlines()[-1]) + [os.path.join(ROOT, "hubconf.py")]
    imported = set().union(*map(_required_imports, files)) - set(sys.stdlib_module_names) - {"alexnet_mp"}
    declared = set(hubconf().dependencies)
    assert imported <= declared, imported - declared
    assert {"torch", "numpy"} <= imported          # the check above compares something


def test_every_hub_entry_point_has_the_help_torch_hub_shows():
    module = hubconf()
    entries = [n for n, f in vars(module).items() if callable(f) and not n.startswith("_")]
    assert sorted(entries) == ["alexnet", "alexnet_from_checkpoint", "alexnet_rank", "alexnet_two_device"]
    assert all(getattr(module, n).__doc__ for n in entries)
