import numpy as np
import torch

from builders.rulekit import hits, make_run, series
from report_gen.facts.activations import ProbeResult, activation_stats
from report_gen.readers.signals import Signals


def _logged(std_values):
    return make_run(signals=Signals(act_stats={"relu1": {"std": series("activation_stats/relu1/std", std_values)}}))


def test_activation_std_growing_fiftyfold():
    [h] = hits(_logged(np.geomspace(0.1, 5.0, 40)), "A103")
    assert h.subject == "relu1" and h.evidence["growth_factor"] > 10


def test_growth_below_factor_is_fine():
    assert hits(_logged(np.geomspace(0.1, 0.8, 40)), "A103") == []


def test_growth_across_probed_checkpoints():
    probes = []
    for i, s in enumerate([1, 3, 10, 30, 100]):
        x = torch.relu(torch.randn(32, 16) * s)
        probes.append((i, ProbeResult(activations={"relu": activation_stats("relu", "ReLU", x)})))
    [h] = hits(make_run(probe=probes), "A103")
    assert h.evidence["source"] == "probe over checkpoints"


def test_growing_logits_of_a_linear_output_are_not_flagged():
    probes = []
    for i, s in enumerate([1, 3, 10, 30, 100]):
        x = torch.randn(32, 4) * s
        probes.append((i, ProbeResult(activations={"fc": activation_stats("fc", "Linear", x)})))
    assert hits(make_run(probe=probes), "A103") == []


def test_waking_up_and_settling_is_not_growth():
    # an LSTM layer: near-silent at init, grows 17x while learning, then levels off
    v = np.r_[np.geomspace(0.07, 1.2, 25), np.linspace(1.2, 1.31, 15)]
    assert hits(_logged(v), "A103") == []
