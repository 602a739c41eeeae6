import numpy as np
import torch

from builders.rulekit import cnn_state, hist, hits, make_run, mem_checkpoint
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


def test_heads_clamped_non_negative_are_a_constraint_not_a_collapse():
    """tensorboardX, LPIPS-like linear heads clamped >= 0 after every step: 41-44% of the weights sit at
    exactly 0, the tensor's minimum (55-62% with other seeds). With the zero share threshold at 0.4 so the
    committed run's heads count, they are recognised as constrained (info), not collapsed."""
    from builders import realfix

    found = realfix.findings("tensorboardx", "lpips_clamped_healthy", "W102", sub="checkpoints", W102={"zero_frac": 0.4})
    assert found and {f["severity"] for f in found} == {"info"}
    assert all(f["evidence"]["constrained"] == "lower" and f["evidence"]["min"] == 0.0 for f in found)
    assert realfix.at_least_warning(realfix.findings("tensorboardx", "lpips_clamped_healthy", "W102")) == []


def test_zeros_among_negative_and_positive_weights_are_still_a_collapse():
    import torch

    w = torch.randn(64, 32)
    w[:40] = 0.0  # a pruning mask applied by mistake: values remain on both sides of 0
    [h] = hits(make_run(checkpoints=[mem_checkpoint({"fc.weight": w}, 1)]), "W102")
    assert h.severity is None and "constrained" not in h.evidence
