"""Numerics across devices and tools: the fused LRN's compiles and fallback, TF32 through one
torch API, every tool in float32, resumes across device types, one host copy per evaluation."""
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alexnet_mp import AlexNet
from alexnet_mp.bench.timing import BenchConfig
from alexnet_mp.config import ModelConfig
from alexnet_mp.data.loader import EpochSampler
from alexnet_mp.distributed.placement import two_device_alexnet
from alexnet_mp.model import layers
from alexnet_mp.model.layers import ColumnStreams, column_lrn, lrn_kernel_status, take_lrn_failure

from .helpers import assert_close_rel
from .test_model import numpy_lrn

NUM_CLASSES = 10
# One graph per direction (forward, backward) serves every batch size, both LRN layers, both
# column counts, training and evaluation on one device: the bound the fused LRN is built to.
GRAPHS_PER_DEVICE = 2


def _images(n, seed):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed)) * 60


def _lrn_layers():
    """conv1's and conv2's maps as the network feeds them (channels_last), at three batch sizes
    (a ten-crop batch of one image among them), in one and two columns, trained (forward and
    backward) and evaluated (no_grad): every output and gradient, in order."""
    out = []
    for n in (1, 4, 10):
        for c, hw, columns in ((96, 55, 2), (256, 27, 2), (96, 55, 1), (256, 27, 1)):
            x = (torch.rand(n, c, hw, hw, generator=torch.Generator().manual_seed(n)) * 100
                 ).contiguous(memory_format=torch.channels_last).requires_grad_()
            y = column_lrn(x, columns)
            y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(c)))
            with torch.no_grad():
                out += [y.detach(), x.grad, column_lrn(x[:2], columns)]
    return out


def _lrn_in_networks():
    """What a run feeds the LRN: grouped training at two batch sizes and evaluation, the
    one-column net and the two-device net: every logit and gradient, in order."""
    out = []
    for config, make, batches in ((ModelConfig(dropout=0.0), None, (2, 3)),
                                  (ModelConfig(dropout=0.0, columns=1), None, (2,)),
                                  (ModelConfig(dropout=0.0), two_device_alexnet, (2,))):
        model = (AlexNet(NUM_CLASSES, seed=1, config=config) if make is None
                 else make(("cpu", "cpu"), NUM_CLASSES, seed=1, config=config))
        for n in batches:
            logits = model.train()(_images(n, n))
            F.cross_entropy(logits, torch.arange(n)).backward()
            out += [logits.detach(), *model.canonical_grads().values()]
            model.zero_grad()
        with torch.no_grad():
            out.append(model.eval()(_images(5, 9)))
    return out


def _fused_against_eager(monkeypatch, workload):
    """(status, compiles) after `workload` ran compiled from an empty cache, its outputs
    checked against the eager kernel's."""
    monkeypatch.setenv("ALEXNET_MP_LRN", "eager")
    reference = workload()
    monkeypatch.setenv("ALEXNET_MP_LRN", "fused")
    torch._dynamo.reset()           # every graph counted here is compiled here
    before = lrn_kernel_status()["compiles"]
    fused = workload()
    status = lrn_kernel_status()
    assert status["kernel"] == "fused" and status["failure"] is None, status
    assert len(fused) == len(reference)
    for i, (got, ref) in enumerate(zip(fused, reference)):
        assert_close_rel(got, ref, 1e-5, f"output {i}")
    return status, status["compiles"] - before


def test_the_fused_lrn_compiles_one_graph_per_direction_for_both_layers_and_every_batch(monkeypatch):
    """Inductor's CPU backend compiles the code a GPU runs. Left to dynamo's defaults it compiled
    a graph per change of batch, map size, column count and requires_grad (4 forward and 3
    backward for a run), near the limit of 8 past which fullgraph=True raises."""
    status, compiles = _fused_against_eager(monkeypatch, _lrn_layers)
    assert 0 < compiles <= GRAPHS_PER_DEVICE, status


# Slow: two passes over three networks on the 2-core CPU, about a minute with the compile.
@pytest.mark.slow
def test_the_fused_lrn_in_training_evaluation_and_every_placement_stays_within_the_bound(monkeypatch):
    status, compiles = _fused_against_eager(monkeypatch, _lrn_in_networks)
    assert 0 < compiles <= GRAPHS_PER_DEVICE, status
    # The benchmark's LRN section names the kernel and the graphs, and compiles nothing more.
    from alexnet_mp.cli.benchmark import report_lrn
    res = {}
    report_lrn(BenchConfig(batch_size=2, steps=1, repeats=1), torch.device("cpu"), res)
    assert res["lrn_kernel"]["kernel"] == "fused" and res["lrn_kernel"]["failure"] is None
    assert res["lrn_kernel"]["compiles"] == status["compiles"]


def test_a_failed_lrn_compile_runs_the_eager_kernel_and_is_reported_once_with_its_reason(monkeypatch, capsys):
    """No C compiler, no Triton, a recompile limit: the run says so once (for its log and
    metrics.jsonl, not only a Python warning), and the benchmark names the kernel that ran."""
    monkeypatch.setattr(layers, "_STATUS", {"kernel": None, "graphs": {"forward": 0, "backward": 0},
                                            "failure": None, "taken": False})

    def broken(*args):
        raise RuntimeError("no working C compiler found\nsecond line")
    monkeypatch.setattr(layers, "fused_lrn_kernels", lambda: (broken, broken))
    monkeypatch.setenv("ALEXNET_MP_LRN", "fused")
    x = (torch.rand(2, 96, 7, 7) * 100).requires_grad_()
    with pytest.warns(UserWarning, match="could not be compiled"):
        y = column_lrn(x, 2)
    y.sum().backward()               # the backward falls back too, without a second warning
    np.testing.assert_allclose(y.detach().numpy(), numpy_lrn(x.detach().numpy(), 2), rtol=1e-6, atol=1e-6)
    line = take_lrn_failure()
    assert "RuntimeError: no working C compiler found" in line and "eager" in line and "\n" not in line
    assert take_lrn_failure() is None                       # said once
    assert lrn_kernel_status() == {"kernel": "eager", "compiles": 0, "graphs": {"forward": 0, "backward": 0},
                                   "failure": line}
    from alexnet_mp.cli.benchmark import report_lrn
    res = {}
    report_lrn(BenchConfig(batch_size=2, steps=1, repeats=1), torch.device("cpu"), res)
    out = capsys.readouterr().out
    assert res["lrn_kernel"]["kernel"] == "eager" and res["lrn_kernel"]["failure"] == line
    assert "(eager, in place)" in out and line in out


def _reseeded(seed, replica, column, step):
    """The seed a reseeded stream draws from, straight from numpy: (seed, replica, column) as
    entropy and the step as spawn key (a fourth entropy word 0 would repeat the first stream)."""
    words = np.random.SeedSequence([seed, replica, column], spawn_key=(step,)).generate_state(2, np.uint32)
    return int(words[0]) << 31 ^ int(words[1])


def _draws(generator):
    return torch.rand(64, generator=generator)


def test_a_stream_state_of_another_device_type_is_reseeded_from_seed_replica_column_step(monkeypatch):
    """Both directions: a CUDA generator's 16-byte state for a CPU column, a CPU generator's
    5,056 bytes for a CUDA column; a state of the right type is restored as it was."""
    saved = ColumnStreams(7, 1, (0, 1))
    saved_cpu = saved.generator(1, torch.device("cpu")).get_state()
    expected_next = _draws(torch.Generator().set_state(saved_cpu))
    cuda_shaped = torch.arange(16, dtype=torch.uint8)
    runs = []
    for _ in range(2):                      # the same on every resume
        streams = ColumnStreams(7, 1, (0, 1))
        cpu = torch.device("cpu")
        assert streams.load_state_dict({"0": cuda_shaped, "1": saved_cpu}, step=12, devices={0: cpu, 1: cpu}) == [0]
        runs.append(_draws(streams.generator(0, cpu)))
        assert torch.equal(_draws(streams.generator(1, cpu)), expected_next)
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0], _draws(torch.Generator().manual_seed(_reseeded(7, 1, 0, 12))))
    assert not torch.equal(runs[0], _draws(torch.Generator().manual_seed(layers.stream_seed(7, 1, 0))))
    assert _reseeded(7, 1, 0, 12) not in (_reseeded(7, 1, 0, 13), _reseeded(7, 1, 1, 12), _reseeded(7, 0, 0, 12))
    # The reverse: no CUDA generator can be made here to ask its state's size; a CUDA Philox's is 16.
    monkeypatch.setitem(layers._STATE_SIZES, "cuda", 16)
    streams = ColumnStreams(7, 1, (0, 1))
    assert streams.load_state_dict({"0": saved_cpu, "1": cuda_shaped}, step=3,
                                   devices={0: torch.device("cuda", 0), 1: torch.device("cuda", 1)}) == [0]
    state = streams.state_dict()             # the generators are made at the first draw
    assert state["0"] == _reseeded(7, 1, 0, 3) and state["1"] is cuda_shaped
    # Where the device was not known at load, the first draw finds out and reseeds.
    streams = ColumnStreams(7, 1, (0,))
    assert streams.load_state_dict({"0": cuda_shaped}, step=5) == []
    with pytest.warns(UserWarning, match="column 0's dropout stream was saved on another device type"):
        got = _draws(streams.generator(0, torch.device("cpu")))
    assert torch.equal(got, _draws(torch.Generator().manual_seed(_reseeded(7, 1, 0, 5))))


def test_a_checkpoint_whose_streams_were_saved_on_a_gpu_resumes_on_the_cpu_and_says_it_reseeded(
        tiny_store, tmp_path, capsys):
    """A GPU run's dropout streams are CUDA generators' 16-byte states, which no CPU generator
    takes ("Expected a CPUGeneratorImplState of size 5056 but found 16" at the first dropout)."""
    from alexnet_mp.cli import train
    args = ["--data-path", tiny_store, "--output-dir", str(tmp_path), "-b", "8", "-j", "0",
            "--checkpoint-minutes", "0", "--seed", "3"]
    assert train.main(args + ["--stop-at-step", "1"]) == 0
    path = tmp_path / "checkpoint.pt"
    saved = torch.load(path, weights_only=True)
    assert set(saved["rng"][0]["columns"]) == {"0", "1"}     # both streams drew at step 1
    for column in ("0", "1"):
        saved["rng"][0]["columns"][column] = torch.arange(16, dtype=torch.uint8)
    saved["rng"][0]["cuda"] = {"0": torch.arange(16, dtype=torch.uint8)}     # no CUDA device here: unused
    torch.save(saved, path)
    capsys.readouterr()
    assert train.main(args + ["--stop-at-step", "2", "--resume", "auto"]) == 0
    said = capsys.readouterr().out
    resumed = [line for line in said.splitlines() if line.startswith(f"resumed from {path}: epoch 0, step 1")]
    assert len(resumed) == 1, said
    assert "column 0's dropout stream, column 1's dropout stream reseeded from (seed, replica, column, step 1)" \
        in resumed[0]
    after = torch.load(path, weights_only=True)
    assert after["step"] == 2
    assert [s.numel() for s in after["rng"][0]["columns"].values()] == [5056, 5056]     # CPU streams again


def _new_api():
    """Every `fp32_precision` attribute this torch has (none before torch 2.7): reading them never raises."""
    found = {}
    for name in ("", ".cuda.matmul", ".cudnn", ".cudnn.conv", ".cudnn.rnn", ".mkldnn", ".mkldnn.matmul",
                 ".mkldnn.conv"):
        owner = torch.backends
        for part in filter(None, name.split(".")):
            owner = getattr(owner, part)
        if hasattr(owner, "fp32_precision"):
            found[f"torch.backends{name}"] = owner
    return found


@pytest.fixture
def restore_precision(monkeypatch):
    """The flags `configure` sets as they were: determinism, autotuning and precision, both
    views of it (the legacy setters first: they set the new attributes too, put back after)."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")      # recorded, so that teardown restores it
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    legacy = {}
    for key, read in (("matmul", torch.get_float32_matmul_precision),
                      ("cudnn", lambda: torch.backends.cudnn.allow_tf32)):
        try:
            legacy[key] = read()
        except RuntimeError:        # a state mixed by the new API before this test: left to the new view
            pass
    new = {name: owner.fp32_precision for name, owner in _new_api().items()}
    yield
    if "matmul" in legacy:
        torch.set_float32_matmul_precision(legacy["matmul"])
    if "cudnn" in legacy:
        torch.backends.cudnn.allow_tf32 = legacy["cudnn"]
    for name, owner in _new_api().items():
        owner.fp32_precision = new[name]
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2:]


def _effective(owners, name):
    """What an fp32_precision attribute means: "none" defers to the one above it, "tf32" is TF32."""
    while name != "torch":
        if name in owners and owners[name].fp32_precision != "none":
            return owners[name].fp32_precision
        name = name.rpartition(".")[0]
    return "ieee"


@pytest.mark.parametrize("tf32", [False, True])
def test_configure_sets_precision_that_every_reader_of_either_torch_api_reads_without_raising(tf32,
                                                                                              restore_precision):
    """Setting only the new fp32_precision attributes left the legacy flags behind: torch then
    refused to read cudnn.allow_tf32 (float32 mode) or the matmul precision (--tf32), and
    inductor and dynamo read both, so a compile on a GPU failed in either mode."""
    from alexnet_mp.numerics import configure
    configure("cpu", tf32=tf32)
    assert torch.backends.cuda.matmul.allow_tf32 is tf32
    assert torch.backends.cudnn.allow_tf32 is tf32
    assert torch.get_float32_matmul_precision() == ("high" if tf32 else "highest")
    owners = _new_api()
    expected = "tf32" if tf32 else "ieee"
    for name in ("torch.backends.cuda.matmul", "torch.backends.cudnn.conv", "torch.backends.cudnn.rnn"):
        if name in owners:
            assert _effective(owners, name) == expected, name
    for owner in owners.values():
        assert owner.fp32_precision in ("none", "ieee", "tf32", "bf16")


def _demo_images(store, count):
    src = os.path.join(os.path.dirname(store), "src", "val")
    return [os.path.join(d, sorted(os.listdir(d))[0]) for d in sorted(
        os.path.join(src, c) for c in os.listdir(src))][:count]


def test_predict_and_visualize_run_in_float32_as_evaluate_does(tiny_store, tmp_path, restore_precision):
    """On a GPU, a tool that never configures runs torch's default TF32 convolutions; each
    starts here from what a TF32 run left behind."""
    from alexnet_mp.cli import evaluate as evaluate_cli
    from alexnet_mp.cli import predict as predict_cli
    from alexnet_mp.cli import visualize as visualize_cli
    from alexnet_mp.numerics import configure
    bare = str(tmp_path / "bare.pt")
    torch.save(AlexNet(NUM_CLASSES, seed=0).state_dict(), bare)
    query = _demo_images(tiny_store, 2)
    tools = {"evaluate": lambda: evaluate_cli.main(["--checkpoint", bare, "--data-path", tiny_store, "-j", "0",
                                                    "--crops", "1"]),
             "predict": lambda: predict_cli.main(["--checkpoint", bare, "--data-path", tiny_store, "--crops", "1",
                                                  *query]),
             "visualize": lambda: visualize_cli.main(["neighbours", "--checkpoint", bare, "--data-path", tiny_store,
                                                      "--query", *query, "--out", str(tmp_path / "n.png"),
                                                      "-k", "2"])}
    for name, run in tools.items():
        configure("cpu", tf32=True)
        assert run() == 0, name
        flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
                 torch.get_float32_matmul_precision())
        assert flags == (False, False, "highest"), name


class _CropPixels(torch.nn.Module):
    """Stub network: a crop's 7 logits are its first 7 values, so a reference needs no network."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x.flatten(1)[:, :7] * 3


def _count_host_copies(monkeypatch):
    """Counts the package's calls that would make the host wait for a device's tensor (the
    DataLoader's own `.item()` of a CPU seed is not one)."""
    count = {"n": 0}
    for name in ("cpu", "item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            count["n"] += sys._getframe(1).f_globals.get("__name__", "").startswith("alexnet_mp")
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return count


def _reference_top5(logits):
    """numpy: softmax per crop, mean over the crops, the 5 best classes and their probabilities."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = (e / e.sum(axis=-1, keepdims=True)).mean(axis=1)
    top = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    return top, np.take_along_axis(probs, top, axis=1)


def test_evaluation_copies_its_answers_to_the_host_once_not_once_per_batch(monkeypatch):
    from alexnet_mp.eval.tencrop import predict
    crops = torch.randn(12, 10, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    data = torch.utils.data.TensorDataset(crops, torch.arange(12) % 7)
    loader = torch.utils.data.DataLoader(data, batch_size=3, sampler=EpochSampler(12, shuffle=False))
    model, count = _CropPixels(), _count_host_copies(monkeypatch)
    lines = []
    result = predict(model, loader, "cpu", crops=10, log=lines.append)
    assert model.calls == 4 and count["n"] == 1
    assert lines[-1].startswith("eval [12/12]")          # progress counted without the device
    logits = (crops.flatten(2)[..., :7] * 3).double().numpy()
    for prefix, part in (("", logits), ("center_", logits[:, 4:5])):
        top, prob = _reference_top5(part)
        np.testing.assert_array_equal(result[f"{prefix}top5"], top)
        np.testing.assert_allclose(result[f"{prefix}prob5"], prob, rtol=1e-6)
        assert result[f"{prefix}top5"].dtype == np.int64 and result[f"{prefix}prob5"].dtype == np.float32
    np.testing.assert_array_equal(result["label"], np.arange(12) % 7)
    np.testing.assert_array_equal(result["index"], np.arange(12))


def test_tools_predict_classifies_several_images_in_one_forward_and_one_copy(tiny_store, tmp_path, monkeypatch,
                                                                             capsys, restore_precision):
    from alexnet_mp.cli import predict as predict_cli
    from alexnet_mp.data.transforms import EvalTransform
    from alexnet_mp.eval.inference import load_for_inference
    bare = str(tmp_path / "bare.pt")
    torch.save(AlexNet(NUM_CLASSES, seed=0).state_dict(), bare)
    images = _demo_images(tiny_store, 3)
    (tmp_path / "notes.txt").write_text("not an image")
    paths = images[:1] + [str(tmp_path / "notes.txt")] + images[1:]
    model, classes, _, mean = load_for_inference(bare, tiny_store, need_mean=True)
    forwards, copies = [], {}

    def loaded(*args, **kwargs):
        model.register_forward_hook(lambda m, i, o: forwards.append(i[0].shape[0]))
        copies["from here on"] = _count_host_copies(monkeypatch)
        return model, classes, {}, mean
    monkeypatch.setattr(predict_cli, "load_for_inference", loaded)
    assert predict_cli.main(["--checkpoint", bare, *paths]) == 0
    out = capsys.readouterr().out.splitlines()
    assert forwards == [30] and copies["from here on"]["n"] == 1         # 3 images x 10 crops, one forward
    transform = EvalTransform(mean, 10, model.config.input_scale, crop=model.config.crop)
    with torch.no_grad():
        logits = np.stack([model(transform(_load(p))).double().numpy() for p in images])
    top, prob = _reference_top5(logits)
    expected = []
    for path in paths:
        if path.endswith("notes.txt"):
            expected.append(f"{path}: not an image (UnidentifiedImageError), skipped")
            continue
        i = images.index(path)
        expected += [path] + [f"  {p:6.3f}  {classes[c]}" for p, c in zip(prob[i], top[i])]
    assert out == expected


def _load(path):
    from alexnet_mp.data.images import to_256
    return to_256(path)
