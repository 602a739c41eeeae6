"""Findings quote what was logged: the best value and its step are the raw curve's (what the metrics table
and the faint line of the plot show), while detection keeps judging the smoothed curve (issue 16)."""
from __future__ import annotations

import numpy as np

from report_gen.facts import curves
from builders.rulekit import hits, make_run, series
from report_gen.readers.signals import Signals


def _noisy(values, seed=0, scale=0.04):
    return np.asarray(values) + scale * np.random.default_rng(seed).standard_normal(len(values))


def _raw_best(values, steps, higher=False):
    i = int(np.argmax(values) if higher else np.argmin(values))
    return float(values[i]), int(steps[i])


def test_the_summary_keeps_the_smoothed_best_for_detection_and_the_raw_best_for_quoting():
    v = np.array([3.0, 2.0, 0.5, 2.0, 1.2, 1.1, 1.0, 1.0])  # one lucky batch at index 2
    s = curves.summarize(v)
    assert (s.raw_best, s.raw_best_index) == (0.5, 2)
    assert s.best > 0.8 and s.best_index > 2  # the EMA does not dip to the lucky batch
    a = curves.summarize(np.array([0.1, 0.9, 0.3, 0.4, 0.5]), higher_is_better=True)
    assert (a.raw_best, a.raw_best_index) == (0.9, 1)


def test_downsampled_curves_keep_the_quoted_best_point():
    steps = np.arange(5000)
    values = np.linspace(2, 1, 5000)
    values[1234] = 0.1  # not on the evenly spaced grid
    st, va = curves.downsample(steps, values, 100)
    assert 1234 in st and va.min() == 0.1


def test_overfitting_quotes_the_raw_best_validation_loss_and_its_step():
    val = _noisy(np.concatenate([np.linspace(2.0, 0.8, 12), np.linspace(0.8, 1.6, 12)]), seed=3, scale=0.06)
    steps = np.arange(len(val)) * 10 + 9
    train = np.linspace(2.3, 0.1, 300)
    run = make_run(signals=Signals(train_loss=series("train/loss", train),
                                   val_loss=series("val/loss", val, steps=steps)))
    [h] = hits(run, "L105")
    best, step = _raw_best(val, steps)
    assert h.evidence["best"] == best and h.evidence["best_step"] == step
    assert h.evidence["smoothed_best"] != best  # the precondition: smoothing moves the best
    assert f"rose from its best {best:.4g} (step {step})" in h.message
    assert h.evidence["evaluations_after_best"] == len(val) - 1 - int(np.argmin(val))
    assert h.plot.mark_step == step


def test_divergence_quotes_the_raw_best():
    v = _noisy(np.concatenate([np.linspace(2.3, 0.3, 60), np.geomspace(0.3, 50.0, 40)]), seed=1)
    steps = np.arange(len(v))
    [h] = hits(make_run(signals=Signals(train_loss=series("train/loss", v))), "L102")
    best, step = _raw_best(v, steps)
    assert (h.evidence["best"], h.evidence["best_step"]) == (best, step)
    assert f"its best {best:.4g} (step {step})" in h.message
    assert h.evidence["smoothed_best"] > best


def test_plateau_quotes_the_lowest_logged_value_and_says_the_share_is_smoothed():
    v = _noisy(np.full(200, 1.4), seed=2, scale=0.02)
    [h] = hits(make_run(signals=Signals(train_loss=series("train/loss", v))), "L103")
    best, step = _raw_best(v, np.arange(len(v)))
    assert (h.evidence["best"], h.evidence["best_step"]) == (best, step)
    assert f"lowest value {best:.4g} at step {step}" in h.message and "smoothed curve" in h.message
