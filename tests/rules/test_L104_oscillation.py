import numpy as np

from builders.rulekit import decaying, hits, make_run, series
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


def test_batch_noise_without_a_validation_curve_is_only_info():
    """torch's SummaryWriter, an autoencoder on fresh N(0, I) batches of 32, no validation loss: its per-step
    loss turns 65% of the time, what independent noise does (2/3). Seed 1 of this case swung 25% of the run's
    improvement and warned in the real-library calibration; here seed 0 with the swing threshold lowered to
    0.05 so that it counts."""
    from builders import realfix

    [f] = realfix.findings("torch_tb", "two_models_one_folder", "L104", L104={"min_relative_swing": 0.05})
    assert f["subject"] == "autoencoder/loss" and f["severity"] == "info"
    assert f["evidence"]["like_noise"] and abs(f["evidence"]["turning_point_z"]) < 1.645
    assert "as often as independent batch noise" in f["message"]


def test_a_loss_bouncing_back_and_forth_without_validation_stays_a_warning():
    v = decaying(150, 2.3, 0.5)
    v[-60:] += np.where(np.arange(60) % 2 == 0, 0.3, -0.3)
    [h] = hits(make_run(signals=Signals(train_loss=series("train/loss", v))), "L104")
    assert h.severity is None and h.evidence["turning_point_z"] > 4 and not h.evidence["like_noise"]
