"""The stuck-loss diagnosis: the loss near ln(C) is the reason to look, the health figures decide."""
import math

import pytest

from alexnet_mp.train import diagnose
from alexnet_mp.train.diagnose import StuckWatch, cause_of

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")


def figures(**changes):
    """Health figures of a learning baseline (raw pixels: conv1's RMS several units), with `changes`
    as layer=(dead, rms) pairs."""
    health = {name: {"dead": 0.05, "rms": 7.0 if name == "conv1" else 1.5, "update_ratio": 1e-3} for name in LAYERS}
    for name, (dead, rms) in changes.items():
        health[name].update(dead=dead, rms=rms)
    return health


def test_a_dead_layer_is_named_with_the_highest_one_first():
    cause, line = cause_of(figures(fc6=(0.97, 0.1), fc7=(1.0, 0.003)))
    assert cause == "dead-fc7" and "fc7's ReLU units are dead (100% zero" in line and "lower --lr" in line


def test_a_tiny_conv1_is_the_missing_signal_and_a_healthy_net_has_no_cause():
    cause, line = cause_of(figures(conv1=(0.0, 0.17)))
    assert cause == "no-signal" and "--input-scale raw" in line
    assert cause_of(figures()) is None and cause_of({}) is None


def test_the_watch_waits_for_the_warm_up_and_patience_then_warns_once_per_cause():
    chance = math.log(10)
    watch, said = StuckWatch(10), []
    dead = figures(fc7=(1.0, 0.003))
    step = 0
    while step + 5 < diagnose.WARMUP_STEPS:         # at chance and dead, but still warming up
        step += 5
        said.append(watch.update(step, chance, dead))
    assert said and set(said) == {None}
    lines = [watch.update(step + 5 * i, chance + 0.01, dead) for i in range(1, diagnose.PATIENCE + 3)]
    assert lines[:diagnose.PATIENCE - 1] == [None] * (diagnose.PATIENCE - 1)     # patience, then one line
    assert lines[diagnose.PATIENCE - 1].startswith("warning: the loss has stayed at chance (ln 10 = 2.30)")
    assert lines[diagnose.PATIENCE:] == [None, None]                               # once for this cause
    other = watch.update(step + 100, chance, figures(conv1=(0.0, 0.2)))
    assert other is not None and "conv1's output RMS is 0.2" in other               # a new cause: said again


@pytest.mark.parametrize("loss", [math.log(10) * 0.5, float("nan")])
def test_a_loss_away_from_chance_resets_the_count(loss):
    watch, dead = StuckWatch(10), figures(fc7=(1.0, 0.003))
    step = diagnose.WARMUP_STEPS
    for _ in range(diagnose.PATIENCE - 1):
        step += 5
        assert watch.update(step, math.log(10), dead) is None
    assert watch.update(step + 5, loss, dead) is None                 # broken run of at-chance log steps
    assert watch.update(step + 10, math.log(10), dead) is None


def _train_on_the_demo_set(tmp_path, *flags):
    """100 steps at batch 16 on the demo set (10 classes), logging every 5 steps."""
    from .conftest import run_script
    env_cache = str(tmp_path.parent / "demo-cache")
    proc = run_script(["tools/train.py", "--cache-dir", env_cache, "--output-dir", str(tmp_path / "run"), "-b", "16",
                       "--stop-at-step", "100", "--print-freq", "5", "--checkpoint-minutes", "0", "-j", "1"]
                      + list(flags), timeout=3000)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


# Slow: each is 1,600 training images (about 2 minutes on the 2-core machine).
@pytest.mark.slow
@pytest.mark.parametrize("flags, cause", [(("--input-scale", "unit"), "conv1's output RMS is"),
                                          (("--dropout", "0"), "fc7's ReLU units are dead")])
def test_a_failure_mode_that_stays_at_chance_is_diagnosed_within_100_steps(tmp_path_factory, flags, cause):
    out = _train_on_the_demo_set(tmp_path_factory.mktemp("mode"), *flags)
    warnings = [line for line in out.splitlines() if line.startswith("warning: the loss has stayed at chance")]
    assert len(warnings) == 1 and cause in warnings[0], out[-3000:]


@pytest.mark.slow
def test_the_baseline_is_not_diagnosed_on_the_demo_set(tmp_path_factory):
    out = _train_on_the_demo_set(tmp_path_factory.mktemp("baseline"))
    assert "the loss has stayed at chance" not in out
