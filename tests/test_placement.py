"""The placement rules: one process falls back with a warning; a torchrun job picks one backend for all ranks."""
import threading

import pytest
import torch
import torch.distributed as dist

from alexnet_mp.errors import UsageError
from alexnet_mp.distributed.launch import choose_placement, job_backend, local_gpu, share_identities, torchrun_wanted

from .helpers import free_port


def _choose(**kw):
    said = []
    return choose_placement(warn=said.append, **kw), said


def test_no_flags_prefer_two_gpus_then_one_then_cpu():
    assert _choose(cuda_count=2) == (("two-device", ["cuda:0", "cuda:1"]), [])
    assert _choose(cuda_count=1) == (("grouped", ["cuda:0"]), [])
    assert _choose(cuda_count=0) == (("grouped", ["cpu"]), [])


def test_devices_naming_a_missing_gpu_fall_back_with_one_warning():
    (placement, devices), said = _choose(devices="cuda:0,cuda:1", cuda_count=1)
    assert (placement, devices) == ("grouped", ["cuda:0"])
    assert len(said) == 1 and "cuda:1 not available (1 GPU(s) visible)" in said[0]
    (placement, devices), said = _choose(devices="cuda:0,cuda:1", cuda_count=0)
    assert (placement, devices) == ("grouped", ["cpu"]) and len(said) == 1
    assert _choose(devices="cpu,cpu", cuda_count=0) == (("two-device", ["cpu", "cpu"]), [])


def _identities(ranks):
    """Per rank, (local rank, the physical GPUs it sees in index order): what each rank reports."""
    out = []
    for local_rank, visible in ranks:
        index = local_gpu(local_rank, len(visible))
        out.append(None if index is None else visible[index])
    return out


NODE4 = ["GPU-a", "GPU-b", "GPU-c", "GPU-d"]
JOBS = {
    # name: (per-rank (local rank, visible GPUs), backend, warning text or None)
    "two GPUs, two ranks": ([(0, NODE4[:2]), (1, NODE4[:2])], "nccl", None),
    "one GPU, two ranks": ([(0, NODE4[:1]), (1, NODE4[:1])], "gloo", "rank(s) 1 share a GPU"),
    "four GPUs, eight ranks": ([(r, NODE4) for r in range(8)], "gloo", "rank(s) 4, 5, 6, 7 have no GPU"),
    "one GPU per rank through CUDA_VISIBLE_DEVICES": ([(r, [NODE4[r]]) for r in range(4)], "nccl", None),
    "the same GPU seen by two ranks": ([(0, ["GPU-a"]), (1, ["GPU-b"]), (2, ["GPU-a"]), (3, ["GPU-c"])],
                                       "gloo", "rank(s) 2 share a GPU"),
    "two nodes of two GPUs": ([(0, NODE4[:2]), (1, NODE4[:2]), (0, NODE4[2:]), (1, NODE4[2:])], "nccl", None),
    "no GPUs anywhere": ([(0, []), (1, [])], "gloo", None),
}


@pytest.mark.parametrize("name", sorted(JOBS))
def test_a_torchrun_job_uses_one_backend_for_every_rank(name):
    """A mixed NCCL/gloo job hangs at its first collective: every rank must reach the same answer,
    and NCCL only when every rank has a physical GPU of its own."""
    ranks, backend, warning = JOBS[name]
    got, said = job_backend(_identities(ranks))
    assert got == backend
    assert (said is None) if warning is None else (warning in said and "CPU under gloo" in said)


def test_asking_for_gpus_that_cannot_be_had_is_an_error_not_a_fallback():
    ranks = _identities(JOBS["one GPU, two ranks"][0])
    with pytest.raises(UsageError, match="share a GPU with a lower rank, so NCCL cannot run: launch at most one"):
        job_backend(ranks, wanted=torchrun_wanted("cuda"))
    assert job_backend(_identities(JOBS["two GPUs, two ranks"][0]), wanted="cpu") == ("gloo", None)
    with pytest.raises(UsageError, match="give 'cuda'"):
        torchrun_wanted("cuda:0,cpu")


def test_identities_travel_through_the_rendezvous_store_to_every_rank():
    """Each rank reports only its own GPU; the decision needs all of them, in rank order."""
    port, world = free_port(), 4
    master = dist.TCPStore("127.0.0.1", port, world, is_master=True, wait_for_workers=False)
    mine = ["GPU-a", None, "GPU-a", "GPU-b"]
    seen = [None] * world

    def rank_thread(r):
        store = dist.TCPStore("127.0.0.1", port, world, is_master=False)
        seen[r] = share_identities(store, r, world, mine[r])
    threads = [threading.Thread(target=rank_thread, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert seen == [mine] * world
    assert {job_backend(s)[0] for s in seen} == {"gloo"}
    del master


def test_weights_go_channels_last_only_where_a_column_runs_on_a_gpu():
    """cudnn's fastest convolutions want channels_last weights; the CPU's kernels do not care."""
    from alexnet_mp import AlexNet
    from alexnet_mp.distributed.placement import gpu_layout
    cl = torch.channels_last
    assert gpu_layout(AlexNet(10, init=False), ["cpu"]).conv2.weight.is_contiguous()
    for names in (["cuda:0"], ["cuda:0", "cpu"], ["cpu", "cuda:1"]):
        net = gpu_layout(AlexNet(10, init=False), names)           # the decision, on CPU tensors
        assert net.conv2.weight.is_contiguous(memory_format=cl) and not net.conv2.weight.is_contiguous(), names
