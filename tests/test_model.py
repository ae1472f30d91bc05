"""The network of spec §1 in its three placements."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from alexnet_mp import AlexNet, ModelConfig, canonical_shapes, two_device_alexnet
from alexnet_mp.model.layers import PaperDropout, column_lrn
from alexnet_mp.model.arch import ARCH

from .helpers import assert_close_rel

NUM_CLASSES = 10


def images(n, seed=0):
    # Raw-scale, mean-subtracted pixels, as the data pipeline produces.
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed)) * 60


def test_parameter_count_is_the_specs_60965224():
    model = AlexNet(1000, seed=0)
    assert sum(p.numel() for p in model.parameters()) == 60_965_224


def test_state_dict_is_the_canonical_format():
    model = AlexNet(1000, seed=0)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == canonical_shapes(1000)
    assert got["conv2.weight"] == (256, 48, 5, 5) and got["fc6.weight"] == (4096, 9216)


def test_each_layer_output_matches_the_spec_table():
    model = AlexNet(1000, seed=0).eval()
    seen = {}
    for layer in ARCH:
        getattr(model, layer.name).register_forward_hook(
            lambda m, i, o, name=layer.name: seen.__setitem__(name, tuple(o.shape[1:])))
    model(images(1))
    # spec §1 table, as (C, H, W); neurons per layer from the spec's list.
    assert seen == {"conv1": (96, 55, 55), "conv2": (256, 27, 27), "conv3": (384, 13, 13),
                    "conv4": (384, 13, 13), "conv5": (256, 13, 13), "fc6": (4096,),
                    "fc7": (4096,), "fc8": (1000,)}
    neurons = [int(np.prod(seen[layer.name])) for layer in ARCH]
    assert neurons == [290_400, 186_624, 64_896, 64_896, 43_264, 4_096, 4_096, 1_000]


@pytest.mark.parametrize("shape", [(1, 3, 227, 227), (1, 3, 256, 256), (3, 224, 224), (1, 1, 224, 224)])
def test_other_input_sizes_get_a_clear_error(shape):
    with pytest.raises(ValueError, match=r"takes \(N, 3, 224, 224\) crops"):
        AlexNet(NUM_CLASSES, seed=0)(torch.zeros(shape))


def test_init_weights_have_std_001_and_paper_biases():
    model = AlexNet(1000, seed=3)
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}   # spec §1 Initialisation
    for layer in ARCH:
        module = getattr(model, layer.name)
        assert abs(module.weight.std().item() - 0.01) < 0.0002, layer.name
        assert abs(module.weight.mean().item()) < 0.001, layer.name
        expected = 1.0 if layer.name in ones else 0.0
        assert torch.equal(module.bias, torch.full_like(module.bias, expected)), layer.name


def test_same_seed_same_weights_and_global_seed_is_honoured():
    a, b = AlexNet(NUM_CLASSES, seed=5), AlexNet(NUM_CLASSES, seed=5)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    torch.manual_seed(11)
    c = AlexNet(NUM_CLASSES)
    torch.manual_seed(11)
    d = AlexNet(NUM_CLASSES)
    assert torch.equal(c.conv1.weight, d.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def numpy_lrn(a, columns, n=5, alpha=1e-4, beta=0.75, k=2.0):
    """Spec §1 formula, one channel at a time, window clipped to the column."""
    a = a.astype(np.float64)
    out = np.empty_like(a)
    width = a.shape[1] // columns
    for c in range(columns):
        for i in range(width):
            lo, hi = max(0, i - n // 2), min(width - 1, i + n // 2)
            s = (a[:, c * width + lo:c * width + hi + 1] ** 2).sum(axis=1)
            out[:, c * width + i] = a[:, c * width + i] / (k + alpha / n * s) ** beta
    return out


@pytest.mark.parametrize("columns", [1, 2])
def test_lrn_equals_the_spec_formula(columns):
    x = torch.rand(2, 96, 5, 5, generator=torch.Generator().manual_seed(0)) * 200
    got = column_lrn(x, columns).numpy()
    np.testing.assert_allclose(got, numpy_lrn(x.numpy(), columns), rtol=1e-6, atol=1e-6)


def test_lrn_window_never_crosses_the_column_boundary():
    x = torch.rand(1, 96, 3, 3) * 100
    y = column_lrn(x, 2)
    x2 = x.clone()
    x2[:, 46:48] *= 7        # the last channels of column 0, inside a 5-wide window of 48..49
    y2 = column_lrn(x2, 2)
    assert torch.equal(y[:, 48:], y2[:, 48:])
    assert not torch.equal(y[:, 44:48], y2[:, 44:48])
    # The positive case: a single-group LRN over all 96 channels does mix them.
    assert not torch.equal(column_lrn(x, 1)[:, 48:50], column_lrn(x2, 1)[:, 48:50])


@pytest.mark.parametrize("beta", [0.75, 0.6])      # 0.75 takes the rsqrt route, others pow
@pytest.mark.parametrize("channels_last", [False, True])
def test_lrn_gradient_passes_gradcheck_in_float64(beta, channels_last):
    x = torch.rand(2, 12, 3, 3, dtype=torch.float64) * 20
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: column_lrn(t, 2, alpha=0.5, beta=beta), (x,))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lrn_matches_torch_reference_per_column_values_and_gradients(dtype):
    """A mismatch here points to the fused backward: torch's LRN applied per half is the reference."""
    x = (torch.rand(2, 96, 6, 6, dtype=dtype) * 100).requires_grad_()
    ref_x = x.detach().clone().requires_grad_()
    lrn = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    ref = torch.cat([lrn(h) for h in ref_x.split(48, 1)], 1)
    got = column_lrn(x, 2)
    g = torch.randn_like(got)
    got.backward(g)
    ref.backward(g)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(x.grad, ref_x.grad)


def test_paper_dropout_masks_without_rescale_and_halves_at_test():
    drop = PaperDropout(0.5)
    x = torch.full((20000,), 3.0)
    y = drop.train()(x)
    assert set(y.unique().tolist()) == {0.0, 3.0}
    assert abs((y == 0).float().mean().item() - 0.5) < 0.02
    assert torch.equal(drop.eval()(x), x * 0.5)


def test_dropout_sits_on_fc6_and_fc7_outputs():
    model = AlexNet(NUM_CLASSES, seed=0).train()
    inputs = {}
    for name in ("fc7", "fc8"):
        getattr(model, name).register_forward_hook(lambda m, i, o, n=name: inputs.__setitem__(n, i[0]))
    torch.manual_seed(0)
    model(images(2))
    # fc6/fc7 outputs after ReLU with half of them dropped: about half of the ReLU's positives vanish.
    for name in ("fc7", "fc8"):
        zeros = (inputs[name] == 0).float().mean().item()
        assert zeros > 0.5, name
    model.eval()
    model(images(2))
    assert (inputs["fc8"] == 0).float().mean().item() < 0.5


def _output(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_column1_cannot_reach_the_output_once_conv3_cross_weights_are_zero():
    x = images(2)
    model = AlexNet(NUM_CLASSES, seed=0)
    base = _output(model, x)
    with torch.no_grad():
        model.conv1.weight[48:] += 0.01
        model.conv2.weight[128:] += 0.01
    assert not torch.allclose(_output(model, x), base)     # positive case: column 1 matters
    model = AlexNet(NUM_CLASSES, seed=0)
    with torch.no_grad():
        model.conv3.weight[:, 128:] = 0                    # conv3's reads of column 1
        base = _output(model, x)
        model.conv1.weight[48:] += 0.01
        model.conv2.weight[128:] += 0.01
    assert torch.equal(_output(model, x), base)


def test_column1_convs_cannot_reach_the_output_once_fc6_cross_weights_are_zero():
    x = images(2)
    model = AlexNet(NUM_CLASSES, seed=0)
    base = _output(model, x)
    with torch.no_grad():
        for name, rows in (("conv3", slice(192, None)), ("conv4", slice(192, None)), ("conv5", slice(128, None))):
            getattr(model, name).weight[rows] += 0.01
    assert not torch.allclose(_output(model, x), base)
    model = AlexNet(NUM_CLASSES, seed=0)
    with torch.no_grad():
        model.fc6.weight[:, 4608:] = 0                     # fc6's reads of column 1's pool5
        base = _output(model, x)
        for name, rows in (("conv3", slice(192, None)), ("conv4", slice(192, None)), ("conv5", slice(128, None))):
            getattr(model, name).weight[rows] += 0.01
    assert torch.equal(_output(model, x), base)


def test_two_device_placement_on_cpu_equals_grouped():
    """A mismatch points to slicing in load_canonical_state_dict or the exchange's column order."""
    cfg = ModelConfig(dropout=0.0)
    grouped = AlexNet(NUM_CLASSES, seed=1, config=cfg)
    split = two_device_alexnet(("cpu", "cpu"), NUM_CLASSES, seed=1, config=cfg)
    x = images(3)
    y = torch.arange(3)
    for model in (grouped, split):
        F.cross_entropy(model.train()(x), y).backward()
    torch.testing.assert_close(split(x), grouped(x), rtol=1e-5, atol=1e-6)
    ga, gb = grouped.canonical_grads(), split.canonical_grads()
    for name in ga:
        assert_close_rel(gb[name], ga[name], 1e-5, name)
    assert all(torch.equal(v, grouped.canonical_state_dict()[k]) for k, v in split.canonical_state_dict().items())


def test_two_device_placement_crosses_devices_at_exactly_four_points():
    """The paper's four exchange points (conv3, fc6, fc7, fc8: the layers that read both
    columns) and, after them, the logits joining on cuda:0 (each column computes its own
    classes of fc8, Figure 2). A crossing anywhere else would mean a column reads the other
    column where §3.2 says it does not."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        # Fake CUDA tensors raise on any op that mixes cuda:0 and cuda:1.
        model = two_device_alexnet(("cuda:0", "cuda:1"), NUM_CLASSES, record_crossings=True, init=False)
        x = torch.empty(2, 3, 224, 224, device="cuda:0")
        out = model.eval()(x)      # dropout's per-column CUDA generators need a real device
        assert out.device == torch.device("cuda:0") and out.shape == (2, NUM_CLASSES)
        assert model.columns[1].conv5.weight.device == torch.device("cuda:1")
        assert model.columns[1].fc8.weight.device == torch.device("cuda:1")
        # (The backward cannot run here: autograd's engine needs a real CUDA context.)
    crossings = model.exchange.crossings
    points = [p for p, _, _ in crossings if p != "logits"]
    assert sorted(set(points)) == ["conv3", "fc6", "fc7", "fc8"]
    # conv3/fc6/fc7/fc8: one tensor each way, as each column computes its half of the layer
    # from both columns' activations.
    assert sorted(points) == ["conv3", "conv3", "fc6", "fc6", "fc7", "fc7", "fc8", "fc8"]
    # Then column 1's classes join column 0's, once, towards cuda:0 (where the loss is).
    assert [c for c in crossings if c[0] == "logits"] == [("logits", "cuda:1", "cuda:0")]


def test_wrong_class_count_checkpoint_is_refused_with_the_fix():
    state = AlexNet(NUM_CLASSES, seed=0).state_dict()
    with pytest.raises(ValueError, match="checkpoint has 10 classes but the model 20"):
        AlexNet(20, seed=0).load_canonical_state_dict(state)


def test_each_column_drops_units_from_its_own_stream():
    """Seeding the global generator alone would give two GPUs the same masks: unit i of
    column 0 dropped exactly when unit i of column 1 is. Agreement must be about half."""
    model = two_device_alexnet(("cpu", "cpu"), NUM_CLASSES, seed=5).train()
    ones = torch.ones(64, 2048)
    m0, m1 = (col.dropout(ones) for col in model.columns)
    gens = model.streams.generators
    assert set(gens) == {0, 1} and gens[0] is not gens[1]
    agree = (m0 == m1).float().mean().item()
    assert 0.48 < agree < 0.52, agree
    assert 0.48 < m0.mean().item() < 0.52


def test_grouped_and_two_device_draw_the_same_dropout_masks_from_one_seed():
    """The per-column stream rule is the same in every placement: with dropout on, the two
    placements compute the same training forward. A mismatch points to the streams' seeds
    or to the grouped model splitting its fc6/fc7 outputs into columns in another order."""
    x = images(3)
    grouped = AlexNet(NUM_CLASSES, seed=2)
    split = two_device_alexnet(("cpu", "cpu"), NUM_CLASSES, seed=2)
    torch.testing.assert_close(split.train()(x), grouped.train()(x), rtol=1e-5, atol=1e-6)
    other = AlexNet(NUM_CLASSES, seed=3)
    other.load_canonical_state_dict(grouped.canonical_state_dict())
    assert not torch.equal(other.train()(x), grouped.train()(x))   # another seed, other masks


def test_under_bf16_autocast_the_lrn_runs_in_float32():
    """In bf16 the LRN's output is about 1.5% off; it must take float32 and give float32."""
    x = (torch.rand(2, 96, 6, 6) * 100).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = column_lrn(x, 2)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), numpy_lrn(x.float().numpy(), 2), rtol=1e-6, atol=1e-6)
    model = AlexNet(NUM_CLASSES, seed=0)
    outputs = []
    model.lrn.register_forward_hook(lambda m, i, o: outputs.append((i[0].dtype, o.dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model.train()(images(2))
    assert outputs == [(torch.bfloat16, torch.float32)] * 2      # conv1's and conv2's, fed bf16 convs
    F.cross_entropy(logits.float(), torch.arange(2)).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_the_fused_lrn_kernels_equal_the_eager_ones():
    """The compiled LRN is what a GPU runs; here inductor's CPU backend compiles the same code.
    A mismatch points to lrn_forward_pure/lrn_backward_pure, not to the compiler."""
    from alexnet_mp.model.layers import _lrn_backward_eager, _lrn_forward_eager, _rows, fused_lrn_kernels
    forward, backward = fused_lrn_kernels()
    x = (torch.rand(2, 96, 7, 7) * 100).contiguous(memory_format=torch.channels_last)
    xr, g = _rows(x, 2), torch.randn(2 * 7 * 7, 2, 48)
    eager = _lrn_forward_eager(xr, 5, 1e-4, 0.75, 2.0)
    fused = forward(xr, 5, 1e-4, 0.75, 2.0)
    for a, b in zip(fused, eager):
        assert_close_rel(a, b, 1e-6)
    assert_close_rel(backward(g, xr, *fused[1:], 5, 1e-4, 0.75), _lrn_backward_eager(g, xr, *eager[1:], 5, 1e-4, 0.75),
                     1e-6)
    np.testing.assert_allclose(_unrows_np(fused[0], x.shape), numpy_lrn(x.numpy(), 2), rtol=1e-5, atol=1e-5)


def _unrows_np(rows, shape):
    n, c, h, w = shape
    return rows.reshape(n, h, w, c).permute(0, 3, 1, 2).numpy()
