"""The per-rank placement under gloo, against the grouped placement."""
import pytest
import torch
from torch.nn import functional as F

from alexnet_mp import AlexNet, ModelConfig, rank_alexnet
from alexnet_mp.distributed.parallel import Topology, apply_data_parallel
from alexnet_mp.errors import LaunchError

from .helpers import assert_close_rel, run_ranks

NUM_CLASSES = 10
NO_DROPOUT = ModelConfig(dropout=0.0)


def batch(n=4):
    g = torch.Generator().manual_seed(7)
    return torch.randn(n, 3, 224, 224, generator=g) * 60, torch.randint(0, NUM_CLASSES, (n,), generator=g)


def _rank_step(rank, world, mode):
    x, y = batch()
    cfg = NO_DROPOUT if mode == "train" else ModelConfig()
    topology = Topology()
    model = rank_alexnet("cpu", NUM_CLASSES, seed=1, config=cfg, topology=topology)
    model.train(mode != "eval")
    replica, replicas = rank // 2, world // 2
    per = x.shape[0] // replicas
    xs, ys = x[replica * per:(replica + 1) * per], y[replica * per:(replica + 1) * per]
    step = apply_data_parallel(model, topology)     # kept alive: DDP's reducer runs during backward
    logits = step(xs)
    F.cross_entropy(logits, ys).backward()
    return {"logits": logits.detach(), "grads": model.canonical_grads(), "state": model.canonical_state_dict()}


def _grouped(mode):
    x, y = batch()
    cfg = NO_DROPOUT if mode == "train" else ModelConfig()
    model = AlexNet(NUM_CLASSES, seed=1, config=cfg).train(mode != "eval")
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    return logits.detach(), model.canonical_grads(), model.canonical_state_dict()


def _assert_grads_close(got, ref):
    for name in ref:
        assert_close_rel(got[name], ref[name], 1e-5, name)


@pytest.mark.parametrize("mode", ["eval", "train", "dropout"])
def test_two_ranks_match_grouped_logits_and_gradients(mode):
    """A mismatch in logits points to the forward gather's column order; in gradients
    to the gathers' backward (a doubled gradient means a sum where a slice was due).
    With dropout on, each rank draws its column's mask from the stream (seed, replica,
    column), as the grouped model does: a mismatch there points to the stream seeds."""
    results = run_ranks(2, _rank_step, mode)
    logits, grads, state = _grouped(mode)
    for r in results:
        assert_close_rel(r["logits"], logits)
        _assert_grads_close(r["grads"], grads)
    assert all(torch.equal(results[0]["state"][k], v) for k, v in state.items())


def test_four_ranks_split_the_batch_and_average_to_the_full_batch_gradient():
    """A mismatch points to apply_data_parallel: the same-column groups (DDP divides by
    their size, the replica count)."""
    results = run_ranks(4, _rank_step, "train")
    logits, grads, _ = _grouped("train")
    assert_close_rel(torch.cat([results[0]["logits"], results[2]["logits"]]), logits)
    for r in results:
        _assert_grads_close(r["grads"], grads)


def _save_from_ranks(rank, world, path):
    model = rank_alexnet("cpu", NUM_CLASSES, seed=4)
    with torch.no_grad():          # weights unlike a fresh init, each column its own way (fc8's classes too)
        for p in model.columns.parameters():
            p.add_(0.001 * (rank + 1))
    state = model.canonical_state_dict()
    if rank == 0:
        torch.save(state, path)
    x, _ = batch(2)
    return model.eval()(x).detach()


def _load_into_ranks(rank, world, path):
    model = rank_alexnet("cpu", NUM_CLASSES, seed=99)
    model.load_canonical_state_dict(torch.load(path, weights_only=True))
    x, _ = batch(2)
    return model.eval()(x).detach()


def test_checkpoint_from_two_ranks_loads_into_grouped_and_back(tmp_path):
    saved = tmp_path / "ranks.pt"
    rank_logits = run_ranks(2, _save_from_ranks, str(saved))
    grouped = AlexNet(NUM_CLASSES, seed=0)
    grouped.load_canonical_state_dict(torch.load(saved, weights_only=True))
    x, _ = batch(2)
    grouped_logits = grouped.eval()(x).detach()
    assert_close_rel(grouped_logits, rank_logits[0])
    resaved = tmp_path / "grouped.pt"
    torch.save(grouped.canonical_state_dict(), resaved)
    back = run_ranks(2, _load_into_ranks, str(resaved))
    assert torch.equal(back[0], rank_logits[0]) and torch.equal(back[1], rank_logits[1])


def _three_ranks(rank, world):
    try:
        rank_alexnet("cpu", NUM_CLASSES, seed=0)
    except LaunchError as e:
        return str(e)
    return None


def test_world_size_not_a_multiple_of_two_names_the_factors():
    messages = run_ranks(3, _three_ranks)
    assert all(m.startswith("world size 3 is not a multiple of 2: the two columns need 2 ranks per replica")
               for m in messages)


def _unseeded(rank, world):
    torch.manual_seed(100 + rank)          # each process's global generator differs
    return rank_alexnet("cpu", NUM_CLASSES).canonical_state_dict()


def test_without_a_seed_every_rank_starts_from_the_first_replicas_weights():
    """A mismatch points to broadcast_from_first_replica: ranks would start from different networks."""
    states = run_ranks(4, _unseeded)
    for state in states[1:]:
        assert all(torch.equal(state[k], v) for k, v in states[0].items())
