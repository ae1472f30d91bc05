"""The benchmark's --quick smoke run: every section runs and the JSON has its ratios (no goals
checked); the LRN section in process; tools/gpu_report.sh on a machine without a GPU."""
import json
import os
import subprocess
import sys

import pytest
import torch

from alexnet_mp.bench.sections import bench_lrn
from alexnet_mp.bench.timing import BenchConfig

from .conftest import ROOT, run_script


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


def test_the_lrn_section_measures_a_share_of_the_step_between_0_and_1():
    """The benchmark's (f) at its smallest: the step it is set against contains both LRN
    layers, so a share of 1 or more means the two were not timed alike."""
    share, status = bench_lrn(BenchConfig(batch_size=2, steps=1, repeats=1), torch.device("cpu"))
    assert 0 < share < 1, share
    assert status["kernel"] == "eager", status          # the CPU's kernel, in place


def test_gpu_report_without_a_gpu_skips_the_gpu_steps_says_so_and_writes_its_files(tmp_path):
    """Run from another folder with a relative OUT and no PYTHONPATH: the script finds the
    checkout and sets PYTHONPATH itself, as on a GPU machine with a plain checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(CUDA_VISIBLE_DEVICES="", PY=sys.executable)
    proc = subprocess.run(["bash", os.path.join(ROOT, "tools", "gpu_report.sh"), "report"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "report"
    summary = (out / "summary.txt").read_text()
    assert proc.stdout == summary
    assert "GPU steps skipped (cuda-figures bench-fp32 bench-bf16 cuda-suite): no CUDA device visible" in summary
    assert f"torch {torch.__version__}" in summary and "versions: ok" in summary
    assert f"torch {torch.__version__}" in (out / "versions.txt").read_text()
    assert {"versions.txt", "versions.log", "steps.txt", "summary.txt", "nvidia-smi.txt"} <= set(os.listdir(out))
    assert not [f for f in os.listdir(out) if f.startswith(("bench", "cuda-suite", "figures"))]
