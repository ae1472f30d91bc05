"""The package on an older torch than the pinned one: torch 2.11 (the GPU machine's) has no
`torch.distributed.reduce_scatter_single`, which torch 2.14 has and prefers. Simulated
here by a sitecustomize that deletes the name in every process, the spawned ranks too."""
import json
import os
import subprocess
import sys

import pytest
import torch.distributed as dist

from alexnet_mp.distributed import compat

from .conftest import ROOT

SITECUSTOMIZE = """import os
import torch.distributed
if hasattr(torch.distributed, "reduce_scatter_single"):
    del torch.distributed.reduce_scatter_single
with open({mark!r}, "a") as f:
    f.write(f"{{os.getpid()}}\\n")
"""


@pytest.fixture
def old_torch(tmp_path):
    """(env, mark): run a command with env and every Python process it starts lacks
    reduce_scatter_single; each such process writes its pid into the file `mark`."""
    site, mark = tmp_path / "site", tmp_path / "processes"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(mark=str(mark)))
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{ROOT}", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env, mark


def _run(cmd, env):
    proc = subprocess.run([sys.executable] + cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _processes(mark):
    return len(mark.read_text().split()) if mark.exists() else 0


def test_the_simulation_removes_the_new_name(old_torch):
    env, mark = old_torch
    proc = _run(["-c", "import torch.distributed as d; print(hasattr(d, 'reduce_scatter_single'))"], env)
    assert proc.stdout.split() == ["False"] and _processes(mark) == 1


def test_compat_calls_the_new_name_where_it_exists_and_the_old_one_otherwise(monkeypatch):
    calls = []
    monkeypatch.setattr(dist, "reduce_scatter_tensor", lambda o, i, group: calls.append(("tensor", o, i, group)))
    monkeypatch.setattr(dist, "reduce_scatter_single", lambda o, i, group: calls.append(("single", o, i, group)),
                        raising=False)
    compat.reduce_scatter("out", "in", "pair")
    monkeypatch.delattr(dist, "reduce_scatter_single")
    compat.reduce_scatter("out", "in", "pair")
    assert calls == [("single", "out", "in", "pair"), ("tensor", "out", "in", "pair")]


def test_the_reduce_scatter_exchange_agrees_with_grouped_without_reduce_scatter_single(old_torch):
    """tests/test_parallel.py's one-pair test, whose forced reduce-scatter backward is checked
    against the grouped model's gradients, in a pytest of its own under the simulation.
    An AttributeError in a rank means something calls the missing name directly."""
    env, mark = old_torch
    proc = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_parallel.py", "-k", "one_pair"], env)
    assert "1 passed" in proc.stdout, proc.stdout[-3000:]
    assert _processes(mark) >= 3              # pytest's process and both ranks


# slow: about a minute on the 2-core machine (2, then 4 gloo processes); run with -m slow before a change lands
@pytest.mark.slow
def test_the_scaling_benchmark_runs_without_reduce_scatter_single(old_torch, tmp_path):
    env, mark = old_torch
    out = tmp_path / "scaling.json"
    _run(["tools/benchmark.py", "scaling", "--quick", "--json", str(out)], env)
    rows = json.loads(out.read_text())["scaling"]["pairs"]
    assert [rows[p]["processes"] for p in ("1", "2")] == [2, 4]
    assert all(row["step_s"] > 0 for row in rows.values())
    assert _processes(mark) >= 1 + 2 + 4
