import numpy as np

from builders.rulekit import hits, make_run, series
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


def test_small_updates_in_the_decayed_tail_of_the_schedule_are_fine():
    steps = np.arange(100)
    lr = 3e-4 * 0.5 * (1 + np.cos(np.pi * steps / 100))  # cosine to 0
    ratio = np.where(steps < 64, 2e-4, 5e-6)  # tiny only once the lr fell below 30% of its peak
    s = Signals(update_ratio={"fc.weight": series("update_ratio/fc.weight", ratio)}, lr=series("lr", lr))
    assert hits(make_run(signals=s), "U102") == []
    flat = Signals(update_ratio={"fc.weight": series("update_ratio/fc.weight", np.full(100, 5e-6))},
                   lr=series("lr", np.full(100, 3e-4)))
    assert len(hits(make_run(signals=flat), "U102")) == 1


def test_a_learning_rate_that_collapses_at_once_is_no_excuse():
    steps = np.arange(60)
    lr = 1e-2 * 0.5 ** steps  # stepped per batch by mistake
    ratio = np.maximum(1e-2 * 0.5 ** steps, 1e-12)
    s = Signals(update_ratio={"fc.weight": series("update_ratio/fc.weight", ratio)}, lr=series("lr", lr))
    [h] = hits(make_run(signals=s), "U102")
    assert "below" in h.message
