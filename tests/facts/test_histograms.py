import numpy as np

from builders.rulekit import hist
from report_gen.facts import histograms as hf


def test_percentiles_follow_the_samples():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(20_000)
    h = hist("h", [x])
    for q in (7, 16, 50, 84, 93):
        assert abs(hf.percentile(h, 0, q) - np.percentile(x, q)) < 0.1 * max(1.0, abs(np.percentile(x, q)))
    assert hf.percentile(h, 0, 0) == x.min() and hf.percentile(h, 0, 100) == x.max()
    bands = hf.percentile_bands(h)
    assert bands["steps"] == [0] and set(bands["percentiles"]) == {str(p) for p in hf.BAND_PERCENTILES}


def test_mass_within_exact_zeros_and_whole_buckets():
    x = np.r_[np.zeros(700), np.linspace(0.5, 1.0, 300)]
    h = hist("h", [x])
    assert abs(hf.mass_within(h, 0, -1e-6, 1e-6) - 0.7) < 1e-9
    assert hf.mass_within(h, 0, 0.99, np.inf, whole_buckets=True) >= hf.mass_within(h, 0, 0.99, np.inf)


def test_constant_and_modes():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(2000)
    assert hf.is_constant(hist("h", [x, x, x]))
    assert not hf.is_constant(hist("h", [x, x * 1.0001]))
    two = np.r_[rng.normal(-1, 0.1, 2000), rng.normal(1, 0.1, 2000)]
    h = hist("h", [x, two])
    assert hf.count_modes(h, 0) == 1 and hf.count_modes(h, 1) == 2
