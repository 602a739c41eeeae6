import torch

from builders.rulekit import hits, make_run
from report_gen.facts.activations import AttentionStats, ProbeResult, attention_stats


def _run(weights):
    return make_run(probe=[(1, ProbeResult(attention={"attn": attention_stats("attn", weights)}))])


def test_uniform_and_collapsed_heads():
    n, L = 4, 8
    uniform = torch.full((n, 1, L, L), 1.0 / L)
    onehot = torch.zeros(n, 1, L, L)
    onehot[..., 0] = 1.0
    peaked = torch.softmax(torch.randn(n, 1, L, L) * 3, dim=-1)
    [h] = hits(_run(torch.cat([uniform, onehot, peaked], 1)), "A106")
    assert h.evidence["uniform_heads"] == [0]
    assert h.evidence["collapsed_heads"] == [1]


def test_selective_heads_are_fine():
    w = torch.softmax(torch.randn(4, 2, 8, 8) * 3, dim=-1)
    assert hits(_run(w), "A106") == []
