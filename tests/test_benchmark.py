"""The benchmark's --quick smoke run: every section runs and the JSON has its ratios (no goals
checked); the LRN section in process; the prepare section's rates and draft differences,
recomputed; tools/gpu_report.sh on a machine without a GPU."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_mp.bench.prepare_speed import DRAFTS, IMAGENET_TRAIN, draft_scale, per_image, to_256_draft
from alexnet_mp.bench.sections import bench_lrn
from alexnet_mp.bench.timing import BenchConfig
from alexnet_mp.data.images import to_256

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


def test_draft_scale_keeps_the_shorter_side_at_least_the_size_asked():
    # 3000 / 8 = 375 >= 256; 2000 / 4 = 500 < 512, so 1/2; 2000 / 8 = 250 < 256, so 1/4; 375 / 2 < 256
    assert draft_scale((4000, 3000), 256) == 8 and draft_scale((3000, 2000), 512) == 2
    assert draft_scale((3000, 2000), 256) == 4 and draft_scale((500, 375), 256) == 1
    assert draft_scale((2000, 3000), 512) == 2             # portrait: the shorter side is the width


def test_the_benchmarks_draft_path_without_a_draft_is_to_256_bit_for_bit(tmp_path):
    """The draft variant copies to_256's resize and crop: with no draft asked it must be
    to_256 exactly, or the measured pixel difference would not be the draft's alone."""
    rng = np.random.default_rng(1)
    turned = Image.Exif()
    turned[0x0112] = 6                     # EXIF Orientation: turn 90 degrees to view
    for size, name, exif in (((1203, 801), "a.jpg", None), ((801, 1203), "b.jpg", None),
                             ((1203, 801), "c.jpg", turned), ((1203, 801), "d.png", None)):
        path = str(tmp_path / name)
        Image.fromarray(rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)).resize(
            size, Image.Resampling.BICUBIC).save(path, **({"quality": 90} if name.endswith("jpg") else {}),
                                                 **({"exif": exif} if exif else {}))
        assert np.array_equal(to_256_draft(path, None), to_256(path)), name
        drafted = to_256_draft(path, 256)
        assert drafted.shape == (256, 256, 3)
        assert np.array_equal(drafted, to_256(path)) == name.endswith("png"), name    # a PNG has no draft


def test_prepare_section_rates_are_images_over_seconds_and_draft_differences_recompute(tmp_path):
    """(i) and (ii) at their smallest: img/s = images / seconds for every step; the draft's
    difference from to_256 recomputed here in numpy from the files it read; none at scale 1."""
    res = per_image({(500, 375): 2, (1600, 1200): 1}, 1, str(tmp_path), np.random.default_rng(0))
    assert set(res) == {"500x375", "1600x1200"}
    for name, r in res.items():
        assert set(r["seconds"]) == {"decode", "to_256", "draft>=512", "draft>=256", "worker raw", "worker jpeg"}
        for step, secs in r["seconds"].items():
            assert secs[1] <= secs[0] <= secs[2] and secs[1] > 0
            assert r["img_per_s"][step] == pytest.approx([r["images"] / s for s in secs]), step
        paths = sorted(str(p) for p in (tmp_path / name / "src").iterdir())
        assert len(paths) == r["images"]
        ref = [to_256(p).astype(np.float64) for p in paths]
        for shorter in DRAFTS:
            d = np.stack([to_256_draft(p, shorter) for p in paths]) - np.stack(ref)
            got = r["draft"][str(shorter)]
            assert got["mean_abs"] == pytest.approx(np.abs(d).mean()) and got["max_abs"] == np.abs(d).max()
            if got["scale"] == 1:
                assert got["psnr_db"] is None and not d.any()
            else:
                assert d.any() and got["psnr_db"] == pytest.approx(10 * np.log10(255 ** 2 / np.mean(d ** 2)))
        assert r["draft"]["512"]["scale"] == (2 if name == "1600x1200" else 1)
        assert r["draft"]["256"]["scale"] == (4 if name == "1600x1200" else 1)
        assert r["jpeg_store_q95"]["max_abs"] > 0 and r["jpeg_bytes_per_image"] > 0


# slow: the section in full in --quick form, -j 2 pools and a killed prepare among it (minutes here)
@pytest.mark.slow
def test_quick_prepare_section_writes_consistent_figures(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_script(["tools/benchmark.py", "prepare", "--quick", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    p = json.loads(out.read_text())["prepare"]
    assert p["machine"]["cpu_count"] == os.cpu_count() and p["date"]
    for name, r in p["end_to_end"].items():
        assert r["convert_img_per_s"] == pytest.approx(r["images"] / r["convert_s"])
        assert 0 < r["first_chunk_s"] <= r["convert_s"] < r["total_s"][2], name
    k = p["kill"]
    assert not k["finished_before_kill"] and 0 < k["recorded_at_kill"] < k["images"]
    assert k["rerun_converted"] == k["images"] - k["recorded_at_kill"]
    assert k["converted_not_recorded"] <= k["bound"] == k["workers"] * p["chunk"]
    rate = p["per_image"]["500x375"]["img_per_s"]["worker raw"][0]
    raw = p["imagenet"]["raw"]
    assert raw["convert_h"] == pytest.approx(IMAGENET_TRAIN / (16 * rate) / 3600)
    assert raw["disk_gb"] == pytest.approx(IMAGENET_TRAIN * 256 * 256 * 3 / 1e9)
    assert p["imagenet"]["jpeg"]["disk_gb"] < raw["disk_gb"]
    assert "(v) killed (SIGKILL, workers too) mid-split" in proc.stdout
