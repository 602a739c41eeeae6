import numpy as np

from rulekit import hits, make_run, series
from report_gen.readers.signals import Signals


def _run(values):
    return make_run(signals=Signals(update_ratio={"fc.weight": series("update_ratio/fc.weight", values)}))


def test_update_ratio_far_above_band():
    [h] = hits(_run(np.full(20, 0.5)), "U102")
    assert h.evidence["median_update_ratio"] == 0.5


def test_update_ratio_far_below_band():
    [h] = hits(_run(np.full(20, 1e-7)), "U102")
    assert "below" in h.message


def test_ratio_inside_band_is_fine():
    assert hits(_run(np.full(20, 1e-3)), "U102") == []
    assert hits(_run(np.full(20, 0.09)), "U102") == []
