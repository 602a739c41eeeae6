import numpy as np

from builders.rulekit import decaying, hits, make_run, series
from report_gen.readers.signals import Signals


def _run(values):
    return make_run(signals=Signals(train_loss=series("train/loss", values)))


def test_loss_that_blows_up_after_learning_is_an_error():
    v = np.concatenate([decaying(60, 2.3, 0.3), np.geomspace(0.3, 50.0, 40)])
    [h] = hits(_run(v), "L102")
    assert h.severity == "error"
    assert h.evidence["giveback"] > 1.0
    assert h.evidence["best"] < 0.5


def test_partial_giveback_is_a_warning():
    # learns 2.3 -> 0.3, then climbs back to ~1.5: gives back ~60% of the improvement
    v = np.concatenate([decaying(60, 2.3, 0.3), np.linspace(0.3, 1.5, 40)])
    [h] = hits(_run(v), "L102")
    assert h.severity == "warning"
    assert 0.5 <= h.evidence["giveback"] < 1.0


def test_small_late_rise_below_threshold_is_not_divergence():
    # gives back ~30% of the improvement: below giveback_warning=0.5
    v = np.concatenate([decaying(60, 2.3, 0.3), np.linspace(0.3, 0.9, 40)])
    assert hits(_run(v), "L102") == []


def test_converged_noisy_loss_is_not_divergence():
    assert hits(_run(decaying(200, 2.3, 0.05, noise=0.01)), "L102") == []


def test_too_few_points_is_not_evaluated():
    assert hits(_run([1.0, 5.0, 50.0]), "L102") == []


def test_spike_the_run_recovers_from_is_a_warning():
    v = np.concatenate([decaying(60, 2.3, 0.3), [0.3, 1e6, 0.4, 0.35] + [0.3] * 10])
    [h] = hits(_run(v), "L102")
    assert h.severity == "warning" and h.evidence["peak"] == 1e6
    assert "spiked" in h.message and "recovered" in h.message


def test_noise_on_a_flat_curve_is_not_divergence():
    # a stuck loss (ln 4) that wobbles: the tiny "improvement" is not a yardstick
    rng = np.random.default_rng(0)
    v = 1.386 + 0.01 * rng.standard_normal(300)
    v[150] = 1.35
    assert hits(_run(v), "L102") == []


def test_near_zero_loss_moving_tenfold_is_not_divergence():
    v = np.concatenate([decaying(80, 2.3, 0.001), np.linspace(0.001, 0.01, 20)])
    assert hits(_run(v), "L102") == []


def test_spike_that_ends_in_nan_is_an_error():
    v = np.concatenate([decaying(60, 2.3, 0.3), [0.3, 1e6, 0.4, np.nan, np.nan]])
    [h] = hits(_run(v), "L102")
    assert h.severity == "error" and "NaN" in h.message


def test_blow_up_in_the_last_points_did_not_recover():
    v = np.concatenate([decaying(97, 2.3, 0.1), [5.0, 50.0, 500.0]])
    [h] = hits(_run(v), "L102")
    assert h.severity == "error" and not h.evidence["recovered"]
    assert "ended at 500" in h.message


def test_a_noise_dip_of_a_loss_at_chance_is_not_divergence():
    """A loss at ln 2 whose smoothed curve dips 3% below chance and comes back: the improvement span is ~0,
    so "gave back 60% of it" was noise (issue 13); only a rise above the start would count."""
    rng = np.random.default_rng(3)
    v = np.log(2) + 0.004 * rng.standard_normal(300)
    v[100:140] -= 0.021  # a 3% dip of the smoothed curve
    assert hits(_run(v), "L102") == []
    up = v.copy()
    up[-40:] += 0.2  # a flat curve that then rises 30% above its start does diverge
    assert hits(_run(up), "L102")


def test_the_real_chance_level_lookalike_is_not_divergence():
    from builders import realfix

    assert realfix.findings("tensorboardx", "chance_noise_lookalike", "L102") == []
