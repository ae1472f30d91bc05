"""The GPU suite: `python -m pytest -m cuda`. Every test skips, saying why, without CUDA;
two- and four-GPU tests skip with fewer GPUs. The default run leaves these out (setup.cfg).

Each test compares the GPU against an independent reference: the CPU placement, the
numpy LRN formula, an uninterrupted run, or eager mode. The tests named `test_figure_*`
measure what the README states for a GPU (the LRN's share of a step, grouped against
torchvision's img/s at batch 128 in float32 and bf16, peak memory of a batch-128 step)
and write each figure as JSON into $ALEXNET_MP_GPU_OUT (default: a temporary folder),
so that one run (tools/gpu_report.sh) gives the README's numbers.
"""
import json
import math
import os

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from alexnet_mp import AlexNet, ModelConfig, two_device_alexnet
from alexnet_mp.bench.sections import bench_lrn, bench_models
from alexnet_mp.bench.timing import BenchConfig, make_batch
from alexnet_mp.files import write_json
from alexnet_mp.numerics import configure
from alexnet_mp.train.optim import PaperSGD, param_groups
from alexnet_mp.train.step import train_step
from alexnet_mp.model.layers import column_lrn

from .conftest import run_script
from .helpers import assert_close_rel
from .test_model import numpy_lrn
from .test_train import model_of, torchrun_cmd, train_cmd

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(GPUS == 0, reason="no CUDA device visible")]
two_gpus = pytest.mark.skipif(GPUS < 2, reason=f"needs 2 GPUs, {GPUS} visible")
four_gpus = pytest.mark.skipif(GPUS < 4, reason=f"needs 4 GPUs, {GPUS} visible")
NUM_CLASSES = 10
# Peak memory of one fp32 training step of the grouped net at the paper's batch of 128:
# weights, gradients and velocity (3 x 244 MB) plus activations and what the LRN keeps.
# Measured on the CPU: 1.25 GiB of tensors saved for backward (1.48 before the LRN kept its
# denominator alone), 0.23 GiB each of weights, gradients and velocity; the rest is headroom
# for backward's temporaries and cudnn.
MEMORY_BUDGET_GIB = 3.5
# Subprocesses see no GPU unless told (conftest.run_script); these show all, or only the first.
SHOW_GPUS = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(GPUS))))}
FIRST_GPU = {"CUDA_VISIBLE_DEVICES": SHOW_GPUS["CUDA_VISIBLE_DEVICES"].split(",")[0]}
FIGURE_BATCH = 128          # the paper's batch, which the README's GPU figures are for
FIGURE_DEVICE = torch.device("cuda:0")


@pytest.fixture(autouse=True)
def float32():
    """The paper's arithmetic for every comparison (TF32 off), and the CPU's settings afterwards.

    The flags go through `configure` both ways, on any supported torch: it sets the TF32
    API that every one of them reads (alexnet_mp.numerics). Inductor caches whether
    triton works; a CPU test that compiled while conftest hid the GPUs would have cached
    False, so ask again."""
    import torch.utils._triton
    getattr(torch.utils._triton.has_triton, "cache_clear", lambda: None)()
    configure("cuda")
    yield
    configure("cpu")


@pytest.fixture(scope="session")
def figures(tmp_path_factory):
    """Where the figure tests write: $ALEXNET_MP_GPU_OUT, else a temporary folder."""
    folder = os.environ.get("ALEXNET_MP_GPU_OUT") or str(tmp_path_factory.mktemp("gpu-figures"))
    os.makedirs(folder, exist_ok=True)
    return folder


def record(folder, name, value, unit, **details):
    """One figure as {"value": number, ...} in folder/name.json, with what it was measured on."""
    assert isinstance(value, (int, float)) and math.isfinite(value), (name, value)
    write_json(os.path.join(folder, f"{name}.json"), {
        "figure": name, "value": value, "unit": unit, "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__, "cuda": torch.version.cuda, **details})


def images(n, seed=0, device="cpu"):
    return (torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed)) * 60).to(device)


def _step(model, x, y):
    """One training forward and backward in float64: (logits, canonical gradients).

    Gradients are compared in float64 because in float32 two devices' rounding (1e-7)
    can flip which of two nearly equal inputs a max-pool picks, and the gradient then
    flows to the other one: conv1's gradient moves by 1% with nothing wrong (measured
    on the CPU between two LRN kernels that agree to 1e-7). In float64 no tie is that close.
    """
    model = model.double()
    logits = model.train()(x.double())
    F.cross_entropy(logits, y.to(logits.device)).backward()
    return logits.detach().cpu(), model.canonical_grads()


def _assert_same_step(got, ref, rtol=1e-8):
    assert_close_rel(got[0], ref[0], rtol, "logits")
    for name in ref[1]:
        assert_close_rel(got[1][name], ref[1][name], rtol, name)


def test_grouped_on_cuda_equals_grouped_on_cpu():
    """A float32 mismatch beyond 1e-5 points to TF32 left on (about 1e-3); a float64 one to a
    kernel the GPU runs differently (the fused LRN, a layout)."""
    cfg, x, y = ModelConfig(dropout=0.0), images(4), torch.arange(4)
    with torch.no_grad():
        ref32 = AlexNet(NUM_CLASSES, seed=1, config=cfg).eval()(x)
        got32 = AlexNet(NUM_CLASSES, seed=1, config=cfg, device="cuda:0").eval()(x.cuda()).cpu()
    assert_close_rel(got32, ref32, 1e-5, "float32 logits")
    ref = _step(AlexNet(NUM_CLASSES, seed=1, config=cfg), x, y)
    got = _step(AlexNet(NUM_CLASSES, seed=1, config=cfg, device="cuda:0"), x.cuda(), y)
    _assert_same_step(got, ref)


def test_lrn_on_cuda_is_the_formula_and_its_gradient_passes_gradcheck():
    x = torch.rand(2, 96, 6, 6) * 100
    got = column_lrn(x.cuda().contiguous(memory_format=torch.channels_last), 2).cpu().numpy()
    np.testing.assert_allclose(got, numpy_lrn(x.numpy(), 2), rtol=1e-5, atol=1e-5)
    x64 = (torch.rand(2, 12, 3, 3, dtype=torch.float64, device="cuda") * 20).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: column_lrn(t, 2, alpha=0.5), (x64,))


def test_two_device_placement_across_cuda_and_cpu_equals_grouped_and_crosses_four_times():
    cfg, x, y = ModelConfig(dropout=0.0), images(3), torch.arange(3)
    ref = _step(AlexNet(NUM_CLASSES, seed=1, config=cfg), x, y)
    model = two_device_alexnet(("cuda:0", "cpu"), NUM_CLASSES, seed=1, config=cfg, record_crossings=True)
    got = _step(model, x.cuda(), y)
    _assert_same_step(got, ref)
    points = [p for p, _, _ in model.exchange.crossings]
    # Each column computes half of fc8 from both columns' fc7, then column 1's logits join column 0's.
    assert sorted(points) == ["conv3", "conv3", "fc6", "fc6", "fc7", "fc7", "fc8", "fc8", "logits"]


@two_gpus
def test_two_gpus_equal_grouped_and_their_dropout_masks_agree_about_half_the_time():
    """Both GPUs seeded alike would drop the same units in both columns (agreement 1.0)."""
    cfg, x, y = ModelConfig(dropout=0.0), images(3), torch.arange(3)
    ref = _step(AlexNet(NUM_CLASSES, seed=1, config=cfg), x, y)
    _assert_same_step(_step(two_device_alexnet(("cuda:0", "cuda:1"), NUM_CLASSES, seed=1, config=cfg),
                            x.cuda(), y), ref)
    model = two_device_alexnet(("cuda:0", "cuda:1"), NUM_CLASSES, seed=1).train()
    m0, m1 = (col.dropout(torch.ones(64, 2048, device=f"cuda:{col.index}")).cpu() for col in model.columns)
    assert 0.48 < (m0 == m1).float().mean().item() < 0.52


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _assert_runs_equal(a, b):
    for name, tensor in a["model"].items():
        assert torch.equal(b["model"][name], tensor), name
    for name, tensor in a["optimizer"]["velocity"].items():
        assert torch.equal(b["optimizer"]["velocity"][name], tensor), name


def _resume_matches(tiny_store, tmp_path, launch, extra, env):
    """An interrupted and resumed run against an uninterrupted one, bit for bit, dropout on."""
    base = ["-b", "8", "-j", "0", "--deterministic"] + extra
    full = _ok(run_script(launch(tiny_store, tmp_path / "full", *base), env=env))
    _ok(run_script(launch(tiny_store, tmp_path / "cut", *base, "--stop-at-step", "3"), env=env))
    _ok(run_script(launch(tiny_store, tmp_path / "cut", *base, "--resume", "auto"), env=env))
    a, b = model_of(tmp_path / "full"), model_of(tmp_path / "cut")
    assert a["step"] == b["step"] == 10
    _assert_runs_equal(a, b)
    return full


def test_resumed_grouped_run_on_cuda_equals_an_uninterrupted_one_bitwise(tiny_store, tmp_path):
    """A mismatch points to a CUDA generator or column stream the checkpoint does not restore,
    or to a nondeterministic kernel that --deterministic failed to exclude."""
    full = _resume_matches(tiny_store, tmp_path, train_cmd, [], FIRST_GPU)
    assert "placement: grouped on cuda:0" in full.stdout


@two_gpus
def test_resumed_nccl_run_equals_an_uninterrupted_one_bitwise(tiny_store, tmp_path):
    full = _resume_matches(tiny_store, tmp_path, lambda *a: torchrun_cmd(2, *a), ["--devices", "cuda"], SHOW_GPUS)
    assert "nccl" in full.stdout


@pytest.mark.parametrize("nproc", [pytest.param(2, marks=two_gpus), pytest.param(4, marks=four_gpus)])
def test_nccl_ranks_equal_grouped_after_k_steps(tiny_store, tmp_path, nproc):
    stop = ["--dropout", "0", "--stop-at-step", "3", "-j", "0", "--lr", "0.001", "--deterministic"]
    _ok(run_script(train_cmd(tiny_store, tmp_path / "grouped", "-b", "8", *stop)))     # the CPU reference
    ranks = _ok(run_script(torchrun_cmd(nproc, tiny_store, tmp_path / "ranks", "-b", str(8 // (nproc // 2)),
                                        "--devices", "cuda", *stop), env=SHOW_GPUS))
    assert "nccl" in ranks.stdout
    grouped, got = model_of(tmp_path / "grouped"), model_of(tmp_path / "ranks")
    for name, tensor in grouped["model"].items():
        assert_close_rel(got["model"][name], tensor, 1e-5, name)


def test_two_device_training_across_cuda_and_cpu_logs_and_checkpoints(tiny_store, tmp_path):
    """Every log step checks the weights of both columns, which sit on two devices here:
    a failure points to a reduction or copy that mixes them."""
    proc = _ok(run_script(train_cmd(tiny_store, tmp_path, "-b", "8", "-j", "0", "--stop-at-step", "3",
                                    "--print-freq", "1", "--devices", "cuda:0,cpu"), env=FIRST_GPU))
    assert "placement: two-device on cuda:0, cpu" in proc.stdout
    state = model_of(tmp_path)
    assert state["step"] == 3
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_bf16_autocast_trains_with_a_finite_loss_and_a_float32_lrn():
    model = AlexNet(NUM_CLASSES, seed=0, device="cuda:0")
    dtypes = []
    model.lrn.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = images(8, device="cuda:0"), torch.arange(8, device="cuda:0") % NUM_CLASSES
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model.train()(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss).item()
    assert set(dtypes) == {torch.float32} and logits.dtype == torch.bfloat16


def test_compiled_model_and_compiled_lrn_equal_eager():
    """The fused LRN runs on CUDA by default; torch.compile of the whole net must agree too."""
    from alexnet_mp.model.layers import _lrn_backward_eager, _lrn_forward_eager, _rows, fused_lrn_kernels
    x = (torch.rand(2, 96, 7, 7, device="cuda") * 100).contiguous(memory_format=torch.channels_last)
    xr, g = _rows(x, 2), torch.randn(2 * 7 * 7, 2, 48, device="cuda")
    forward, backward = fused_lrn_kernels()
    fused, eager = forward(xr, 5, 1e-4, 0.75, 2.0), _lrn_forward_eager(xr, 5, 1e-4, 0.75, 2.0)
    for a, b in zip(fused, eager):
        assert_close_rel(a, b, 1e-6)
    assert_close_rel(backward(g, xr, *fused[1:], 5, 1e-4, 0.75),
                     _lrn_backward_eager(g, xr, *eager[1:], 5, 1e-4, 0.75), 1e-6)
    cfg, x, y = ModelConfig(dropout=0.0), images(4, device="cuda:0"), torch.arange(4)
    ref = _step(AlexNet(NUM_CLASSES, seed=1, config=cfg, device="cuda:0"), x, y)
    compiled = AlexNet(NUM_CLASSES, seed=1, config=cfg, device="cuda:0").double()
    logits = torch.compile(compiled).train()(x.double())
    F.cross_entropy(logits, y.cuda()).backward()
    _assert_same_step((logits.detach().cpu(), compiled.canonical_grads()), ref)


def test_evaluate_on_cuda_gives_the_cpus_errors(tiny_store, tmp_path):
    model = AlexNet(NUM_CLASSES, seed=2)
    with torch.no_grad():
        model.fc8.weight.mul_(40)         # answers far from ties, so rounding cannot flip one
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    results = {}
    for name, env in (("cpu", {}), ("cuda", FIRST_GPU)):         # one GPU: the grouped placement
        out = tmp_path / f"{name}.json"
        proc = _ok(run_script(["tools/evaluate.py", "--checkpoint", str(tmp_path / "bare.pt"), "--data-path", tiny_store,
                        "-j", "0", "--json", str(out)], env=env))
        assert f"placement: grouped on {'cuda:0' if name == 'cuda' else 'cpu'}" in proc.stdout
        results[name] = json.loads(out.read_text())
    for key in ("top1_err", "top5_err", "center_top1_err", "center_top5_err", "num_images"):
        assert results["cuda"][key] == results["cpu"][key], key


def test_quick_benchmark_runs_on_cuda(tmp_path):
    proc = _ok(run_script(["tools/benchmark.py", "--quick", "--json", str(tmp_path / "b.json")], env=SHOW_GPUS))
    assert json.loads((tmp_path / "b.json").read_text())["device"] != "cpu"
    assert "(a) torchvision alexnet" in proc.stdout


def _precision(amp):
    return amp or "fp32"


@pytest.mark.parametrize("amp", [None, "bf16"])
def test_figure_grouped_against_torchvision_at_batch_128(figures, amp):
    """The benchmark's (a) and (b) rows at the paper's batch, timed side by side in one process.

    The grouped net does more work than torchvision's (96 conv1 maps instead of 64, two LRNs,
    larger pooled maps), but not several times more: a ratio outside 0.25..4 points to a
    timer that does not wait for the GPU, or to one of the two models not on it."""
    cfg = BenchConfig(batch_size=FIGURE_BATCH, steps=2, repeats=5, amp=amp)
    m = bench_models(cfg, FIGURE_DEVICE)
    ratios = {mode: m["grouped"][i][0] / m["torchvision"][i][0] for i, mode in enumerate(("train", "eval"))}
    img_per_s = {name: {"train": v[0][0], "eval": v[1][0]} for name, v in m.items()}
    for mode, ratio in ratios.items():
        record(figures, f"grouped_vs_torchvision_{mode}-{_precision(amp)}", ratio, "x",
               img_per_s={k: v[mode] for k, v in img_per_s.items()}, batch_size=FIGURE_BATCH, amp=amp,
               cudnn_benchmark=torch.backends.cudnn.benchmark)
        assert 0.25 < ratio < 4, (mode, img_per_s)
    for name, v in img_per_s.items():
        for mode, speed in v.items():
            record(figures, f"img_per_s_{name}_{mode}-{_precision(amp)}", speed, "img/s",
                   batch_size=FIGURE_BATCH, amp=amp)


@pytest.mark.parametrize("amp", [None, "bf16"])
def test_figure_lrn_share_of_a_batch_128_training_step(figures, amp):
    """The benchmark's (f): both LRN layers' forward and backward against a whole step. The
    step contains both LRNs, so a share of 1 or more means the two were not timed alike. On
    CUDA the README's figure is the fused kernel's: an eager fallback is a failure here."""
    share, status = bench_lrn(BenchConfig(batch_size=FIGURE_BATCH, steps=2, repeats=5, amp=amp), FIGURE_DEVICE)
    record(figures, f"lrn_share_of_train_step-{_precision(amp)}", share, "fraction", batch_size=FIGURE_BATCH,
           amp=amp, kernel=status["kernel"], compile_failure=status["failure"])
    assert 0 < share < 1, share
    assert status["kernel"] == "fused", status


def test_figure_peak_memory_of_a_batch_128_training_step_stays_within_budget(figures):
    """Training's own step and optimizer, two steps (the second holds the velocity too).

    cudnn autotuning is off here: it tries algorithms with workspaces up to the free memory,
    taken through torch's allocator, so max_memory_allocated would count the largest
    workspace it tried and not what the step keeps."""
    torch.backends.cudnn.benchmark = False          # each test's fixture sets the flags anew
    device = FIGURE_DEVICE
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)    # what earlier tests left allocated
    model = AlexNet(1000, seed=0, device=device).to(memory_format=torch.channels_last)
    opt = PaperSGD(param_groups(model, 5e-4), lr=1e-4)
    x, y = make_batch(FIGURE_BATCH, device, channels_last=True)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(2):
        train_step(model.train(), opt, x, y)
    torch.cuda.synchronize(device)
    peak = (torch.cuda.max_memory_allocated(device) - before) / 2**30
    record(figures, "peak_memory_of_train_step-fp32", peak, "GiB", batch_size=FIGURE_BATCH,
           cudnn_benchmark=False, budget_gib=MEMORY_BUDGET_GIB)
    assert peak < MEMORY_BUDGET_GIB, f"peak {peak:.2f} GiB"
