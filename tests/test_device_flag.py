"""--device (torchvision's flag): the one-device placement on the device named, for train,
evaluate, predict and visualize; the fallback rule for a device that is not there; the
paths Apple's GPU (MPS) takes, with MPS simulated (no Apple GPU here or in CI)."""
import os

import pytest
import torch

from alexnet_mp import AlexNet
from alexnet_mp.cli import evaluate, predict, train, visualize
from alexnet_mp.data.loader import pins_memory
from alexnet_mp.data.store import Store
from alexnet_mp.data.storecheck import read_classes, read_stats
from alexnet_mp.distributed.launch import Run, choose_placement
from alexnet_mp.distributed.placement import one_device
from alexnet_mp.model.layers import KERNEL_ENV, compiles_lrn

from .checkpoints import write_old_format_checkpoint

FALLBACK = "warning: --device {} not available"


@pytest.fixture(scope="module")
def checkpoint(tiny_store, tmp_path_factory):
    """A checkpoint of the tiny store's 10 classes, with its mean image, as training writes one."""
    path = str(tmp_path_factory.mktemp("ckpt") / "model_best.pt")
    write_old_format_checkpoint(path, AlexNet(10, seed=0), data_path=tiny_store, mean=read_stats(tiny_store)[0],
                                classes=read_classes(tiny_store))
    return path


def _choose(**kw):
    said = []
    return choose_placement(warn=said.append, **kw), said


def test_device_picks_the_grouped_placement_on_that_device_whatever_else_is_there():
    # two GPUs would otherwise give the two-device placement (test_placement)
    assert _choose(device="cuda:1", cuda_count=2) == (("grouped", ["cuda:1"]), [])
    assert _choose(device="cpu", cuda_count=2) == (("grouped", ["cpu"]), [])
    assert _choose(device="cuda", cuda_count=1) == (("grouped", ["cuda"]), [])


def test_a_missing_gpu_falls_back_to_the_first_gpu_or_the_cpu_with_one_warning():
    (placement, devices), said = _choose(device="cuda:2", cuda_count=1)
    assert (placement, devices) == ("grouped", ["cuda:0"])
    assert len(said) == 1 and said[0].startswith(FALLBACK.format("cuda:2")) and "1 GPU(s) visible" in said[0]
    (placement, devices), said = _choose(device="cuda", cuda_count=0)
    assert (placement, devices) == ("grouped", ["cpu"]) and len(said) == 1


def test_run_places_the_net_on_the_device_named():
    run = Run(device="cpu", log=lambda *a: None)
    assert (run.placement, run.devices, run.device) == ("grouped", ["cpu"], torch.device("cpu"))


def _one_line_error(capsys, code):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_device_and_devices_together_are_a_one_line_error(tiny_store, checkpoint, capsys):
    both = ["--device", "cpu", "--devices", "cpu,cpu"]
    line = _one_line_error(capsys, train.main(["--data-path", tiny_store, "--output-dir", "unused"] + both))
    assert "--device cpu and --devices cpu,cpu both given" in line and "pass one of them" in line
    line = _one_line_error(capsys, evaluate.main(["--checkpoint", checkpoint, "--data-path", tiny_store] + both))
    assert "both given" in line


@pytest.mark.parametrize("tool, args", [(train.main, ["--data-path", "x"]),
                                        (predict.main, ["--checkpoint", "c.pt", "a.jpg"]),
                                        (visualize.main, ["neighbours", "--checkpoint", "c", "--data-path", "s",
                                                          "--query", "q.jpg"])])
def test_a_name_that_is_no_device_is_a_one_line_error(capsys, tool, args):
    line = _one_line_error(capsys, tool(args + ["--device", "gpu0"]))
    assert "'gpu0' is not a device: pass cpu, cuda, cuda:N or mps" in line


def test_train_with_device_cuda_and_no_gpu_falls_back_to_the_cpu_and_trains(tiny_store, tmp_path, capsys):
    code = train.main(["--data-path", tiny_store, "--output-dir", str(tmp_path), "-b", "8", "-j", "0",
                       "--stop-at-step", "1", "--checkpoint-minutes", "0", "--device", "cuda"])
    out = capsys.readouterr().out
    assert code == 0 and os.path.isfile(tmp_path / "checkpoint.pt")
    warnings = [line for line in out.splitlines() if line.startswith("warning: --device")]
    assert warnings == [FALLBACK.format("cuda") + " (0 GPU(s) visible): falling back to the grouped placement on cpu"]
    assert "placement: grouped on cpu" in out


def test_evaluate_with_device_cpu_runs_grouped_on_the_cpu(tiny_store, checkpoint, capsys):
    code = evaluate.main(["--checkpoint", checkpoint, "--data-path", tiny_store, "--crops", "1", "-j", "0",
                          "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "placement: grouped on cpu" in out and "warning" not in out


def test_predict_with_device_cuda_and_no_gpu_warns_once_and_predicts(tiny_store, checkpoint, capsys):
    image = os.path.join(os.path.dirname(tiny_store), "src", "val", Store(tiny_store, "val").files[0])
    code = predict.main(["--checkpoint", checkpoint, "--crops", "1", "--device", "cuda:1", image])
    said = capsys.readouterr()
    assert code == 0 and said.out.splitlines()[0] == image and len(said.out.splitlines()) == 6
    assert said.err.strip().splitlines() == [FALLBACK.format("cuda:1") + " (0 GPU(s) visible): "
                                             "falling back to the grouped placement on cpu"]


def test_neighbours_takes_the_device_after_the_fallback(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_neighbours(checkpoint, data_path, query, out, k, batch_size, workers, device):
        seen["device"] = device
        return [], None
    monkeypatch.setattr(visualize, "neighbours_file", fake_neighbours)
    args = ["neighbours", "--checkpoint", "c.pt", "--data-path", "s", "--query", "q.jpg", "--out",
            str(tmp_path / "nn.png")]
    assert visualize.main(args + ["--device", "cpu"]) == 0 and seen["device"] == "cpu"
    assert visualize.main(args + ["--device", "mps"]) == 0 and seen["device"] == "cpu"     # no Apple GPU here
    assert FALLBACK.format("mps") in capsys.readouterr().err
    assert visualize.main(args) == 0 and seen["device"] is None        # the default: the first GPU, else the CPU


@pytest.fixture
def fake_mps(monkeypatch):
    """A machine whose torch reports Apple's GPU; nothing may actually run on it."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)


def test_mps_is_taken_where_torch_reports_it_and_falls_back_to_the_cpu_where_not(fake_mps, monkeypatch):
    said = []
    assert one_device("mps", said.append, cuda_count=0) == "mps" and said == []
    assert _choose(device="mps", cuda_count=0) == (("grouped", ["mps"]), [])
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert one_device("mps", said.append, cuda_count=0) == "cpu"
    assert len(said) == 1 and "no Apple GPU (MPS)" in said[0]


def test_on_mps_the_lrn_is_not_compiled_and_batches_are_not_pinned(fake_mps, monkeypatch):
    """torch.compile's fused LRN and pinned host memory are CUDA's: MPS runs the eager LRN and
    copies from ordinary memory (it shares the CPU's)."""
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    assert [compiles_lrn(torch.device(d)) for d in ("mps", "cpu", "cuda", "cuda:1")] == [False, False, True, True]
    assert [pins_memory(d) for d in ("mps", "cpu", "cuda", "cuda:1")] == [False, False, True, True]
    monkeypatch.setenv(KERNEL_ENV, "eager")
    assert not compiles_lrn(torch.device("cuda"))


def test_the_lrn_runs_the_kernel_compiles_lrn_chose(monkeypatch):
    """The decision above is the one the LRN takes: with it forced off on the CPU under
    ALEXNET_MP_LRN=fused, the eager kernel runs (compiling nothing)."""
    from alexnet_mp.model import layers
    monkeypatch.setenv(KERNEL_ENV, "fused")
    monkeypatch.setattr(layers, "compiles_lrn", lambda device: False)
    layers.column_lrn(torch.ones(1, 4, 3, 3), 2)
    assert layers.lrn_kernel_status()["kernel"] == "eager"
