import numpy as np

from builders.rulekit import cnn_state, hist, hits, make_run, mem_checkpoint
from report_gen.readers.signals import Signals


def test_weights_growing_twentyfold():
    a = cnn_state(0)
    b = dict(a)
    b["fc.weight"] = a["fc.weight"] * 20
    [h] = hits(make_run(checkpoints=[mem_checkpoint(a, 0), mem_checkpoint(b, 9)]), "W103")
    assert h.subject == "fc.weight" and h.evidence["ratio"] > 10


def test_growth_below_threshold_is_fine():
    a = cnn_state(0)
    b = dict(a)
    b["fc.weight"] = a["fc.weight"] * 8
    assert hits(make_run(checkpoints=[mem_checkpoint(a, 0), mem_checkpoint(b, 9)]), "W103") == []


def test_huge_absolute_weight_from_histograms():
    x = np.random.default_rng(0).standard_normal(100)
    y = x.copy()
    y[0] = 500.0
    h = hist("weights/fc.weight", [x, y])
    [f] = hits(make_run(signals=Signals(weight_hist={"fc.weight": h})), "W103")
    assert f.evidence["absmax"] == 500.0
    h2 = hist("weights/fc.weight", [x, x * 1.5])
    assert hits(make_run(signals=Signals(weight_hist={"fc.weight": h2})), "W103") == []
