import numpy as np
import torch

from rulekit import hist, hits, make_run
from report_gen.facts.activations import ProbeResult, activation_stats
from report_gen.readers.signals import Signals


def _probe(scale):
    x = torch.sigmoid(torch.randn(64, 32) * scale)
    return make_run(probe=[(1, ProbeResult(activations={"sig": activation_stats("sig", "Sigmoid", x)}))])


def test_sigmoid_with_huge_preactivations_is_saturated():
    [h] = hits(_probe(50.0), "A102")
    assert h.evidence["saturated_share"] > 0.9


def test_sigmoid_in_its_linear_range_is_fine():
    assert hits(_probe(1.0), "A102") == []


def test_logged_tanh_histogram_saturated():
    rng = np.random.default_rng(0)
    sat = np.tanh(rng.standard_normal(2000) * 20)
    ok = np.tanh(rng.standard_normal(2000) * 0.5)
    assert len(hits(make_run(signals=Signals(act_hist={"tanh1": hist("activations/tanh1", [sat])})), "A102")) == 1
    assert hits(make_run(signals=Signals(act_hist={"tanh1": hist("activations/tanh1", [ok])})), "A102") == []
