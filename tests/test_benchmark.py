"""The benchmark's --quick smoke run: every section runs and the JSON has its ratios (no goals checked)."""
import json

from .conftest import run_script


def test_quick_benchmark_writes_every_ratio(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_script(["tools/benchmark.py", "--quick", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for key in ("train_ratio", "eval_ratio", "two_rank_ratio", "tencrop_cost", "data_ratio"):
        assert res[key] > 0, key
    assert "(a) torchvision alexnet" in proc.stdout and "ten-crop costs" in proc.stdout
