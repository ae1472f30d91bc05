"""Data parallelism across pairs, the exchange's backward, fc8 split per column, and the
writer-only checkpoint gather, in gloo processes against the grouped model."""
import collections
import warnings

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn import functional as F

from alexnet_mp import AlexNet, ModelConfig, rank_alexnet
from alexnet_mp.distributed.exchange import _channels_last, backward_reduction, column_chunks
from alexnet_mp.model.arch import class_split
from alexnet_mp.distributed.parallel import Topology, apply_data_parallel

from .helpers import assert_close_rel, run_ranks
from .test_distributed import batch
from .torchrun_worker import note_collectives

NO_DROPOUT = ModelConfig(dropout=0.0)
ODD_CLASSES = 11


def test_the_exchange_reduce_scatters_on_nccl_and_all_reduces_on_gloo():
    assert backward_reduction("nccl") == "reduce_scatter"
    assert backward_reduction("gloo") == "all_reduce"


def test_column_chunks_put_each_columns_channels_in_its_own_chunk():
    """A reduce-scatter hands rank c chunk c of its input: chunk c must be column c's slice."""
    for shape in ((2, 6, 3, 3), (2, 6)):
        g = torch.randn(shape)
        if g.dim() == 4:
            g = g.contiguous(memory_format=torch.channels_last)
        chunks = column_chunks(g)
        assert chunks.shape[0] == 2 and chunks.is_contiguous()
        for c in range(2):
            assert torch.equal(chunks[c], _channels_last(g.narrow(1, 3 * c, 3)))


def test_class_split_gives_column_0_the_first_ceil_half():
    assert class_split(1000) == (500, 500) and class_split(11) == (6, 5) and class_split(10) == (5, 5)


def _grouped_step(num_classes, x, y):
    model = AlexNet(num_classes, seed=1, config=NO_DROPOUT)
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    return logits.detach(), model.canonical_grads(), model.canonical_state_dict()


def _pair(rank, world):
    """One pair: no data parallelism; the reduce-scatter backward; an odd class count."""
    topology = Topology()
    out = {"column_group": topology.column_group}
    net = rank_alexnet("cpu", 10, seed=1, config=NO_DROPOUT, topology=topology)
    out["wrapped"] = apply_data_parallel(net, topology) is not net
    net.exchange.reduction = "reduce_scatter"       # NCCL's path, run here on gloo's reduce-scatter
    x, y = batch(2)
    loss, events = F.cross_entropy(net(x), y[:2]), []
    restore = note_collectives(events)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss.backward()
    restore()
    out["backward_collectives"] = collections.Counter(events)
    out["future_warnings"] = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    out["reduce_scatter_grads"] = net.canonical_grads()
    odd = rank_alexnet("cpu", ODD_CLASSES, seed=1, config=NO_DROPOUT, topology=topology)
    y_odd = torch.tensor([10, 3])
    logits = odd(x)
    F.cross_entropy(logits, y_odd).backward()
    out.update(odd_logits=logits.detach(), odd_grads=odd.canonical_grads(), odd_state=odd.canonical_state_dict(),
               fc8_rows=odd.columns[0].fc8.weight.shape[0])
    return out


def test_one_pair_runs_no_data_parallel_and_its_backward_options_agree_with_grouped():
    """With one replica nothing is averaged: no same-column group, no DDP. The reduce-scatter
    backward (what NCCL runs) gives the grouped gradients; a mismatch points to column_chunks.
    It is one reduce-scatter per shared activation (conv3, fc6, fc7, fc8), counted under either
    torch's name for it, and no deprecation warning where torch has the new name.
    11 classes split 6/5 between the columns: a mismatch there points to the padded logits gather."""
    results = run_ranks(2, _pair)
    for r in results:
        assert r["backward_collectives"] == {"reduce_scatter": 4}, r["backward_collectives"]
        if hasattr(dist, "reduce_scatter_single"):
            assert not [w for w in r["future_warnings"] if "reduce_scatter" in w], r["future_warnings"]
    x, y = batch(2)
    _, grads, _ = _grouped_step(10, x, y[:2])
    logits, odd_grads, odd_state = _grouped_step(ODD_CLASSES, x, torch.tensor([10, 3]))
    assert [r["fc8_rows"] for r in results] == [6, 5]
    for r in results:
        assert r["column_group"] is None and not r["wrapped"]
        for name in grads:
            assert_close_rel(r["reduce_scatter_grads"][name], grads[name], 1e-5, name)
            assert_close_rel(r["odd_grads"][name], odd_grads[name], 1e-5, name)
        assert_close_rel(r["odd_logits"], logits)
    assert results[0]["odd_state"]["fc8.weight"].shape == (ODD_CLASSES, 4096)
    assert all(torch.equal(results[0]["odd_state"][k], v) for k, v in odd_state.items())


def _two_pairs(rank, world):
    """The order of DDP's all-reduces against conv1's backward, and who gathers a checkpoint."""
    topology = Topology()
    net = rank_alexnet("cpu", 10, seed=1, config=NO_DROPOUT, topology=topology)
    # DDP's default reduction, as a Python hook that notes when DDP launches it: DDP calls the
    # hook at the moment it would start its built-in all-reduce, when a bucket is full.
    ddp = apply_data_parallel(net, topology)
    order = []

    def noting_allreduce(group, bucket):
        order.append(f"all-reduce bucket {bucket.index()}")
        return default_hooks.allreduce_hook(group, bucket)
    ddp.register_comm_hook(topology.column_group, noting_allreduce)
    conv1 = net.columns[0].conv1
    for p in conv1.parameters():
        p.register_post_accumulate_grad_hook(lambda p: order.append("conv1 grad"))
    x, y = batch(4)
    for step in range(2):
        order.append(f"step {step}")
        F.cross_entropy(ddp(x[2 * topology.replica:][:2]), y[2 * topology.replica:][:2]).backward()

    calls = collections.Counter()
    for name in ("gather", "all_gather", "all_gather_object", "gather_object", "broadcast", "all_reduce"):
        real = getattr(dist, name)
        setattr(dist, name, lambda *a, _real=real, _name=name, **k: (calls.update([_name]), _real(*a, **k))[1])
    state = net.map_canonical(lambda p: p, writer_only=True)
    return {"order": order, "calls": dict(calls), "state": state, "everyone": net.canonical_state_dict()}


def test_two_pairs_overlap_gradient_averaging_with_backward_and_only_rank0_gathers():
    """DDP's first step has one bucket (all-reduced after conv1, the last layer backward
    reaches); from the second step on its buckets follow the order the first backward
    produced the gradients in, fc8's and fc7's first (the first bucket closes once it
    passes 1 MB: fc8, then fc7's 33 MB weight), so that bucket's all-reduce starts while
    fc6 and the convs are still differentiating. The production bucket sizes show it; no
    small bucket_cap_mb is needed. If the first all-reduce of the second step came after
    conv1's gradient, averaging would not overlap backward at all.

    Checkpoints: rank 0 alone receives the canonical tensors, from its pair's column 1
    (one gather per tensor); replica 1's ranks call no collective at all."""
    results = run_ranks(4, _two_pairs)
    for r in results:
        second = r["order"][r["order"].index("step 1"):]
        reduces = [i for i, e in enumerate(second) if e.startswith("all-reduce")]
        grads_done = [i for i, e in enumerate(second) if e == "conv1 grad"]
        assert len(reduces) >= 2 and len(grads_done) == 2, r["order"]
        assert reduces[0] < grads_done[0], r["order"]      # started before conv1's backward ended
    assert results[0]["calls"] == {"gather": 16} and results[1]["calls"] == {"gather": 16}
    assert results[2]["calls"] == {} and results[3]["calls"] == {}
    assert results[1]["state"] is None and results[2]["state"] is None and results[3]["state"] is None
    everyone = results[0]["everyone"]
    assert set(results[0]["state"]) == set(everyone)
    assert all(torch.equal(results[0]["state"][k], v) for k, v in everyone.items())
