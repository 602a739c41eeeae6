import numpy as np
import torch

from builders.rulekit import hist, hits, make_run
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


def test_tanh_layers_in_a_module_list_are_found_by_their_values():
    """tensorboardX: tanh layers kept in an nn.ModuleList, logged as activations/acts.0 and acts.1 (bins='auto'),
    87-94% of the outputs beyond |0.99|; nothing in the names says tanh."""
    from builders import realfix

    found = realfix.findings("tensorboardx", "saturated_tanh_modulelist", "A102")
    assert {f["subject"] for f in found} == {"acts.0", "acts.1"}
    assert all(f["evidence"]["kind"] == "tanh-like" and f["evidence"]["saturated_share"] > 0.8 for f in found)


def test_relu_outputs_are_not_read_as_a_saturated_sigmoid():
    from builders import realfix

    assert realfix.findings("torch_tb", "bn_relu_healthy", "A102") == []
