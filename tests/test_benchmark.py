"""The benchmark's --quick smoke run: every section runs and the JSON has its ratios (no goals checked)."""
import json

import pytest
import torch

from .conftest import run_script


# slow: a minute or more on the 2-core machine; run with -m slow before a change lands
@pytest.mark.slow
def test_quick_benchmark_writes_every_ratio(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_script(["tools/benchmark.py", "--quick", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for key in ("train_ratio", "eval_ratio", "two_rank_ratio", "tencrop_cost", "data_ratio"):
        assert res[key] > 0, key
    assert 0 < res["lrn_share_of_train_step"] < 1
    assert res["amp"] is None and res["tf32"] is False
    assert "(a) torchvision alexnet" in proc.stdout and "ten-crop costs" in proc.stdout
    assert "(c) 2-rank placement (2 gloo processes, CPU)" in proc.stdout
    scaling = res["scaling"]
    assert scaling["indicative"] and "INDICATIVE" in proc.stdout
    for pairs in ("1", "2"):
        row = scaling["pairs"][pairs]
        assert row["step_s"] > 0 and row["exchange_s"] > 0 and row["processes"] == 2 * int(pairs)
    assert scaling["pairs"]["1"]["exposed_dp_s"] == 0          # one pair: nothing to average
    assert scaling["pairs"]["2"]["dp_allreduce_alone_s"] > 0


def test_the_two_rank_row_never_sets_a_cpu_gloo_pair_against_a_gpu(monkeypatch):
    """With one GPU the (c) row is skipped: two gloo processes on the CPU against a GPU is no ratio."""
    from alexnet_mp.bench.sections import tworank_label
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert tworank_label(torch.device("cuda")) is None
    assert "gloo processes, CPU" in tworank_label(torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert tworank_label(torch.device("cuda")) == "(c) two-device placement (cuda:0, cuda:1)"
