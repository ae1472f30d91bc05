"""The placement fallback rule (issue: never crash, say what was chosen)."""
from alexnet_mp.placement import choose_placement


def _choose(**kw):
    said = []
    return choose_placement(warn=said.append, **kw), said


def test_no_flags_prefer_two_gpus_then_one_then_cpu():
    assert _choose(cuda_count=2) == (("two-device", ["cuda:0", "cuda:1"], None), [])
    assert _choose(cuda_count=1) == (("grouped", ["cuda:0"], None), [])
    assert _choose(cuda_count=0) == (("grouped", ["cpu"], None), [])


def test_devices_naming_a_missing_gpu_fall_back_with_one_warning():
    (placement, devices, _), said = _choose(devices="cuda:0,cuda:1", cuda_count=1)
    assert (placement, devices) == ("grouped", ["cuda:0"])
    assert len(said) == 1 and "cuda:1 not available (1 GPU(s) visible)" in said[0]
    (placement, devices, _), said = _choose(devices="cuda:0,cuda:1", cuda_count=0)
    assert (placement, devices) == ("grouped", ["cpu"]) and len(said) == 1
    assert _choose(devices="cpu,cpu", cuda_count=0) == (("two-device", ["cpu", "cpu"], None), [])


def test_torchrun_ranks_use_nccl_with_a_gpu_each_and_gloo_otherwise():
    assert _choose(distributed=True, local_rank=1, cuda_count=2) == (("rank", ["cuda:1"], "nccl"), [])
    assert _choose(distributed=True, local_rank=0, cuda_count=0) == (("rank", ["cpu"], "gloo"), [])
    (placement, devices, backend), said = _choose(distributed=True, local_rank=1, cuda_count=1)
    assert (placement, devices, backend) == ("rank", ["cpu"], "gloo")
    assert len(said) == 1 and "local rank 1 has no GPU of its own" in said[0]
