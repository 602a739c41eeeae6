import numpy as np

from rulekit import decaying, hits, make_run, series
from report_gen.readers.signals import Signals


def test_large_zigzag_at_the_end_is_oscillation():
    v = decaying(150, 2.3, 0.5)
    v[-60:] += np.where(np.arange(60) % 2 == 0, 0.6, -0.3)  # swings ~0.9 vs improvement ~1.8
    [h] = hits(make_run(signals=Signals(train_loss=series("train/loss", v))), "L104")
    assert h.evidence["sign_change_rate"] > 0.9
    assert h.evidence["relative_swing"] >= 0.2


def test_small_noise_after_convergence_is_not_oscillation():
    v = decaying(150, 2.3, 0.05, noise=0.02, seed=1)  # zigzags, but tiny vs the 2.25 improvement
    assert hits(make_run(signals=Signals(train_loss=series("train/loss", v))), "L104") == []


def test_zigzag_just_below_the_swing_threshold_is_not_reported():
    v = decaying(150, 2.3, 0.5)
    v[-60:] += np.where(np.arange(60) % 2 == 0, 0.08, -0.08)  # swing 0.16 / span ~1.2 = 0.13 < 0.2
    assert hits(make_run(signals=Signals(train_loss=series("train/loss", v))), "L104") == []


def test_noisy_training_batches_with_a_smooth_validation_curve_are_only_info():
    rng = np.random.default_rng(0)
    train = decaying(150, 2.3, 0.5)
    train[-60:] += np.where(np.arange(60) % 2 == 0, 0.6, -0.3)  # batch-16 noise with noisy labels
    val = decaying(30, 2.3, 0.55) + 0.001 * rng.standard_normal(30)
    val = np.sort(val)[::-1]  # smooth, monotone
    s = Signals(train_loss=series("train/loss", train), val_loss=series("val/loss", val))
    [h] = hits(make_run(signals=s), "L104")
    assert h.severity == "info" and h.evidence["validation_smooth"]
    s_no_val = Signals(train_loss=series("train/loss", train))
    [h] = hits(make_run(signals=s_no_val), "L104")
    assert h.severity is None  # the rule's own severity (warning)
