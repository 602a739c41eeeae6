import numpy as np
import torch

from rulekit import cnn_state, hist, hits, make_run, mem_checkpoint
from report_gen.readers.signals import Signals


def test_weights_shrinking_to_zero_over_checkpoints():
    a = cnn_state(0)
    b = dict(a)
    b["conv2.weight"] = a["conv2.weight"] * 0.05
    run = make_run(checkpoints=[mem_checkpoint(a, 0), mem_checkpoint(b, 100)])
    [h] = hits(run, "W102")
    assert h.subject == "conv2.weight"
    assert abs(h.evidence["ratio"] - 0.05) < 1e-3


def test_shrink_just_above_threshold_is_fine():
    a = cnn_state(0)
    b = dict(a)
    b["conv2.weight"] = a["conv2.weight"] * 0.12
    assert hits(make_run(checkpoints=[mem_checkpoint(a, 0), mem_checkpoint(b, 100)]), "W102") == []


def test_mostly_exact_zeros():
    s = cnn_state(0)
    w = s["conv2.weight"].clone()
    w.view(-1)[: int(w.numel() * 0.7)] = 0
    s["conv2.weight"] = w
    [h] = hits(make_run(checkpoints=[mem_checkpoint(s, 0)]), "W102")
    assert h.evidence["zero_frac"] >= 0.69


def test_collapse_seen_in_weight_histograms():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000)
    h = hist("weight_hist/fc.weight", [x * s for s in (0.1, 0.05, 0.01, 0.005)])
    [f] = hits(make_run(signals=Signals(weight_hist={"fc.weight": h})), "W102")
    assert f.evidence["source"] == "weight histograms"
