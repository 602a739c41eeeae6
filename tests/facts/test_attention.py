"""facts.attention: finding query/key projections by structure, and the per-head logit scale."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from report_gen.facts.attention import attention_weights, expected_peak, find_projections, head_facts


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in module.named_parameters()}


def test_logit_scale_is_the_spread_of_q_dot_k_for_unit_variance_inputs():
    """sigma_h against a brute-force estimate: std over keys y of (Wq x + bq).(Wk y)/sqrt(d), RMS over queries x."""
    torch.manual_seed(0)
    heads, d, e = 3, 8, 24
    wq, wk, bq = torch.randn(heads * d, e) * 0.3, torch.randn(heads * d, e) * 0.2, torch.randn(heads * d) * 0.5
    tensors = {"att.query.weight": wq, "att.query.bias": bq, "att.key.weight": wk, "att.value.weight": wk.clone()}
    meta = {"num_attention_heads": heads, "hidden_size": e}
    [proj], _ = find_projections({n: tuple(t.shape) for n, t in tensors.items()}, meta, ordered=False)
    facts = head_facts(proj, tensors.__getitem__)
    x, y = torch.randn(4000, e, dtype=torch.float64), torch.randn(4000, e, dtype=torch.float64)
    for h in range(heads):
        rows = slice(h * d, (h + 1) * d)
        q = x @ wq[rows].double().T + bq[rows].double()  # (4000, d)
        k = y @ wk[rows].double().T
        logits = (q[:200] @ k.T) / math.sqrt(d)  # 200 queries x 4000 keys
        brute = float(logits.var(dim=1).mean().sqrt())
        assert facts.logit_scale[h] == pytest.approx(brute, rel=0.05)
    assert facts.heads_known and facts.head_dim == d


def test_identical_heads_have_similarity_one():
    torch.manual_seed(1)
    wq, wk = torch.randn(4 * 8, 32), torch.randn(4 * 8, 32)
    wq[8:16], wk[8:16] = wq[:8] * 2, wk[:8]  # head 1 = head 0 (scaled)
    rot = torch.linalg.qr(torch.randn(8, 8))[0]
    wq[16:24], wk[16:24] = rot @ wq[:8], rot @ wk[:8]  # head 2 = head 0 rotated inside its head space
    tensors = {"a.q_proj.weight": wq, "a.k_proj.weight": wk, "a.v_proj.weight": wk.clone(), "a.o_proj.weight": wq.clone()}
    [proj], _ = find_projections({n: tuple(t.shape) for n, t in tensors.items()}, {"num_attention_heads": 4,
                                                                                    "hidden_size": 32}, ordered=False)
    sim = head_facts(proj, tensors.__getitem__).head_similarity
    assert sim[0, 1] == pytest.approx(1.0) and sim[0, 2] == pytest.approx(1.0, abs=1e-9)
    assert abs(sim[0, 3]) < 0.5


def test_multihead_attention_in_proj_is_split_in_thirds():
    mha = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True)
    [proj], _ = find_projections(_shapes(mha), {}, ordered=True)
    assert (proj.query, proj.q_rows, proj.k_rows, proj.how) == ("self_attn.in_proj_weight", (0, 16), (16, 32), "fused")
    facts = head_facts(proj, lambda n: dict(mha.named_parameters())[n].detach())
    assert facts.heads == 1 and not facts.heads_known  # no config: one head of width 16 (the RMS over heads)


def test_gpt2_conv1d_fused_is_transposed_and_the_mlp_is_not_taken():
    shapes = {"h.0.attn.c_attn.weight": (32, 96), "h.0.attn.c_attn.bias": (96,), "h.0.attn.c_proj.weight": (32, 32),
              "h.0.mlp.c_fc.weight": (32, 96), "h.0.mlp.c_proj.weight": (96, 32)}  # an MLP 3x wide on purpose
    [proj], skipped = find_projections(shapes, {"n_head": 2, "n_embd": 32, "model_type": "gpt2"}, ordered=False)
    assert (proj.query, proj.transposed, proj.q_rows, proj.k_rows) == ("h.0.attn.c_attn.weight", True, (0, 32), (32, 64))
    assert skipped == []


def test_grouped_query_attention_by_names():
    shapes = {"l.0.self_attn.q_proj.weight": (64, 64), "l.0.self_attn.k_proj.weight": (16, 64),
              "l.0.self_attn.v_proj.weight": (16, 64), "l.0.self_attn.o_proj.weight": (64, 64),
              "l.0.mlp.gate_proj.weight": (128, 64), "l.0.mlp.up_proj.weight": (128, 64),
              "l.0.mlp.down_proj.weight": (64, 128)}
    meta = {"num_attention_heads": 8, "num_key_value_heads": 2, "hidden_size": 64}
    [proj], _ = find_projections(shapes, meta, ordered=False)
    assert (proj.query, proj.key, proj.heads, proj.kv_heads, proj.head_dim) == (
        "l.0.self_attn.q_proj.weight", "l.0.self_attn.k_proj.weight", 8, 2, 8)
    torch.manual_seed(0)
    tensors = {n: torch.randn(s) for n, s in shapes.items()}
    assert head_facts(proj, tensors.__getitem__).logit_scale.shape == (8,)


def test_layers_in_a_row_are_not_parallel_projections():
    mlp = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
    assert find_projections(_shapes(mlp), {}, ordered=True) == ([], [])

    class Fcs(nn.Module):  # named, same shape, no hint: never guessed to be q, k, v
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 32)

    assert find_projections(_shapes(Fcs()), {}, ordered=True) == ([], [])


def test_same_shape_siblings_without_names_are_skipped_not_guessed():
    shapes = {"blk.a.weight": (32, 32), "blk.b.weight": (32, 32), "blk.c.weight": (32, 32)}
    found, skipped = find_projections(shapes, {"num_attention_heads": 4, "hidden_size": 32}, ordered=False)
    assert found == [] and skipped == ["blk"]
    found, _ = find_projections(shapes, {"num_attention_heads": 4, "hidden_size": 32}, ordered=True)
    assert [(p.query, p.key) for p in found] == [("blk.a.weight", "blk.b.weight")]  # registration order q, k, v


def test_budget_examines_evenly_spaced_layers(monkeypatch):
    import report_gen.facts.attention as fa

    shapes, tensors = {}, {}
    for i in range(10):
        for k in ("query", "key", "value"):
            shapes[f"enc.{i}.att.{k}.weight"] = (32, 32)
            tensors[f"enc.{i}.att.{k}.weight"] = torch.eye(32)
    monkeypatch.setattr(fa, "FLOP_BUDGET", 3 * fa._flops(find_projections(shapes, {}, True)[0][0], shapes))
    facts = attention_weights(shapes, {}, True, tensors.__getitem__)
    assert (facts.found, facts.examined) == (10, 3)
    assert [f.layer for f in facts.layers] == ["enc.0.att", "enc.4.att", "enc.9.att"]


def test_expected_peak_of_a_softmax():
    assert expected_peak(0.0, 24) == pytest.approx(1 / 24)
    assert expected_peak(30.0, 24) > 0.95
    assert 0.1 < expected_peak(1.0, 24) < 0.3
    assert math.isnan(expected_peak(float("nan"), 24))
    assert np.isfinite(expected_peak(10.0, 512))
