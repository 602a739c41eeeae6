import numpy as np

from builders.rulekit import hist, hits, make_run, series
from report_gen.readers.signals import Signals


def test_huge_gradient_rms_is_an_error():
    rng = np.random.default_rng(0)
    grads = {"a.weight": hist("g/a", [rng.standard_normal(100) * 5e3 for _ in range(4)]),
             "b.weight": hist("g/b", [rng.standard_normal(100) * 1e-2 for _ in range(4)])}
    [h] = hits(make_run(signals=Signals(grad_hist=grads)), "G102")
    assert h.subject == "a.weight"
    assert h.evidence["max_grad_rms"] > 1e3


def test_gradient_rms_below_limit_is_fine():
    rng = np.random.default_rng(0)
    grads = {"a.weight": hist("g/a", [rng.standard_normal(1000) * 500 for _ in range(4)])}
    assert hits(make_run(signals=Signals(grad_hist=grads)), "G102") == []


def test_nan_gradients_are_reported():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(100)
    h = hist("g/a", [x, x])
    h.sum_squares[1] = np.nan
    [f] = hits(make_run(signals=Signals(grad_hist={"a.weight": h})), "G102")
    assert f.evidence["nonfinite_params"] == 1


def test_steadily_growing_grad_norm_is_a_warning():
    g = np.geomspace(0.1, 100.0, 50)
    [h] = hits(make_run(signals=Signals(grad_norm=series("train/grad_norm", g))), "G102")
    assert h.severity == "warning"
    assert h.evidence["growth_factor"] > 100


def test_growth_below_factor_is_fine():
    g = np.geomspace(0.1, 5.0, 50)  # x50 < x100
    assert hits(make_run(signals=Signals(grad_norm=series("train/grad_norm", g))), "G102") == []
