import torch

from builders.rulekit import hits, make_run
from report_gen.facts.activations import ProbeResult, activation_stats


def _probe(copies):
    base = torch.randn(64, 1, 6, 6)
    other = torch.randn(64, 16 - copies, 6, 6)
    x = torch.relu(torch.cat([base.repeat(1, copies, 1, 1) * torch.linspace(1, 2, copies).view(1, -1, 1, 1), other], 1))
    return make_run(probe=[(1, ProbeResult(activations={"relu": activation_stats("relu", "ReLU", x)}))])


def test_channels_that_are_copies_of_each_other():
    [h] = hits(_probe(16), "A104")
    assert h.evidence["high_pair_share"] > 0.9


def test_independent_channels_are_fine():
    assert hits(_probe(2), "A104") == []
