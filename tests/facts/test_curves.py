import numpy as np
import pytest

from report_gen.facts import curves


def reference_ema(values, weight):
    """TensorBoard's smoothing, written as its JavaScript loop does it."""
    out, last, n = [], 0.0, 0
    for x in values:
        if not np.isfinite(x):
            out.append(x)
            continue
        last = last * weight + (1 - weight) * x
        n += 1
        out.append(last / (1 - weight**n))
    return np.array(out)


@pytest.mark.parametrize("weight", [0.0001, 0.3, 0.6, 0.9, 0.99, 0.999])
def test_vectorised_ema_matches_the_loop(weight):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(3000) * 10 + 3
    x[[5, 100, 2000]] = np.nan
    x[7] = np.inf
    got, want = curves.ema_smooth(x, weight), reference_ema(x, weight)
    assert np.array_equal(np.isfinite(got), np.isfinite(want))
    np.testing.assert_allclose(got[np.isfinite(got)], want[np.isfinite(want)], rtol=1e-10, atol=1e-10)


def test_summary_numbers():
    v = np.array([4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0])
    s = curves.summarize(v, frac=0.2, minimum=2, smoothing=0.0)
    # start is the untrained level: the first value (4) when it is above the first window's median (3.5)
    assert (s.start, s.best, s.end, s.best_index, s.span) == (4.0, 1.0, 3.0, 3, 3.0)
    a = curves.summarize(np.array([0.5, 0.2, 0.6, 0.7, 0.9, 0.9]), higher_is_better=True, frac=0.34, minimum=2,
                         smoothing=0.0)
    assert a.start == 0.35 and a.best == 0.9  # accuracy: the worse (lower) of first value and window median
    assert curves.summarize([np.nan, 1.0]) is None


def test_small_helpers():
    assert curves.first_nonfinite([1.0, 2.0, np.nan, np.inf]) == 2
    assert curves.first_nonfinite([1.0]) is None
    assert curves.sign_change_rate([0, 1, 0, 1, 0]) == 1.0
    assert curves.sign_change_rate([0, 1, 2, 3]) == 0.0
    assert curves.swing_amplitude([0, 2, 0, 2]) == 2.0
    assert curves.growth_factor(np.r_[np.ones(10), np.full(10, 50.0)], 0.2) == 50.0
    assert curves.monotonic_fraction([1, 2, 3, 2]) == pytest.approx(2 / 3)
    st, va = curves.downsample(np.arange(10_000), np.r_[np.ones(9_999), np.nan], 100)
    assert len(st) <= 101 and st[0] == 0 and st[-1] == 9_999 and np.isnan(va[-1])


def test_classes_from_the_untrained_loss():
    assert curves.classes_from_loss(0.6946) == 2
    assert curves.classes_from_loss(np.log(10) + 0.02) == 10
    assert curves.classes_from_loss(np.log(10) + 0.05) == 11  # nearby C are indistinguishable: 1/10 vs 1/11
    assert curves.classes_from_loss(1.39) == 4
    assert curves.classes_from_loss(0.9) is None  # between ln 2 and ln 3: not a uniform guess
    assert curves.classes_from_loss(3115.0) is None and curves.classes_from_loss(0.01) is None


def test_classes_from_hparams():
    assert curves.classes_from_hparams({"classes": 2.0, "lr": 0.1}) == 2
    assert curves.classes_from_hparams({"model/num_labels": 4}) == 4
    assert curves.classes_from_hparams({"classes": True, "num_classes": 1.5}) is None


def test_above_chance_is_cohens_kappa_of_the_90th_percentile():
    acc = np.array([0.47, 0.5, 0.52, 0.49, 0.51, 0.5, 0.48, 0.53, 0.5, 0.5])
    assert abs(curves.above_chance(acc, 0.5) - (np.quantile(acc, 0.9) - 0.5) / 0.5) < 1e-12
    assert curves.above_chance(acc * 100, 0.5) == curves.above_chance(acc, 0.5)  # percent
    assert curves.above_chance(np.full(5, 0.95), 0.1) > 0.9


def test_turning_points_of_noise_and_of_a_bounce():
    import numpy as np

    from report_gen.facts.curves import turning_point_z

    zs = [turning_point_z(np.random.default_rng(s).standard_normal(200)) for s in range(200)]
    assert abs(float(np.mean(zs))) < 0.2 and 0.8 < float(np.std(zs)) < 1.2  # N(0, 1) under independence
    assert turning_point_z(np.tile([1.0, 0.0], 100)) > 10
    assert turning_point_z(np.linspace(1, 0, 200)) < -10
