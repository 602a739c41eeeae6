"""A107 from the weights of real HF Trainer checkpoints (tests/fixtures/real/hf) and hand-built ones."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from report_gen.readers.checkpoint import open_checkpoint
from builders.rulekit import hits, make_run, mem_checkpoint

REAL_HF = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "hf"
SEEDS = REAL_HF.parent / "hf-seeds"  # the calibration's extremes from seeds 1 and 2 (its README)
MANIFEST = json.loads((REAL_HF / "MANIFEST.json").read_text())["cases"]


def _last_checkpoint(case: str, root: Path = REAL_HF):
    return open_checkpoint(str(sorted((root / case).glob("checkpoint-*"), key=lambda p: int(p.name[11:]))[-1]))


def test_query_key_weights_re_initialised_wide_are_caught_from_the_checkpoint():
    found = hits(make_run(checkpoints=[_last_checkpoint("bert-attention-collapse")]), "A107")
    assert sorted(h.subject for h in found) == ["bert.encoder.layer.0.attention.self", "bert.encoder.layer.1.attention.self"]
    for h in found:
        assert h.evidence["wide_heads"] == [0, 1] and h.evidence["heads_known"]
        assert min(h.evidence["logit_scale"]) > 30 and h.evidence["expected_peak"] > 0.9
        # the manifest's measurement: q/k std 1.0 against 0.044 for the other matrices
        assert h.evidence["qk_weight_rms"] / h.evidence["other_weight_rms"] > 15


@pytest.mark.parametrize("case", sorted(c for c, rec in MANIFEST.items()
                                        if rec["status"] == "healthy" or c in ("gpt2-spike", "bert-random-labels",
                                                                              "bert-lr-zero", "bert-frozen")))
def test_healthy_attention_weights_are_quiet(case):
    run = make_run(checkpoints=[_last_checkpoint(case)])
    assert "attention_weights" in run.available
    assert hits(run, "A107") == []


def test_the_collapse_of_another_seed_is_caught_too():
    found = hits(make_run(checkpoints=[_last_checkpoint("s1/bert-attention-collapse", SEEDS)]), "A107")
    assert len(found) == 2 and all(h.severity is None and h.evidence["wide_heads"] == [0, 1] for h in found)  # rule default: warning
    assert all(30 < s < 35 for h in found for s in h.evidence["logit_scale"])


def test_the_most_similar_healthy_heads_are_not_called_identical():
    """Seed 2's healthy BERT has two heads at cosine 0.968, the highest of the calibration: no info, no warning."""
    run = make_run(checkpoints=[_last_checkpoint("s2/bert-healthy-none", SEEDS)])
    layers = run.attention_weights.layers
    assert max(float(f.head_similarity[0, 1]) for f in layers) > 0.96  # the case is the near miss it is meant to be
    assert hits(run, "A107") == []


def test_identical_heads_are_an_info():
    torch.manual_seed(0)
    e, d = 32, 8
    state = {}
    for k in ("query", "key", "value"):
        w = torch.randn(4 * d, e) * 0.05
        w[d:2 * d] = w[:d]  # head 1 copies head 0
        state[f"layer.0.att.{k}.weight"] = w
    ckpt = mem_checkpoint(state, 10)
    ckpt.metadata.update({"num_attention_heads": 4, "hidden_size": e})
    [h] = hits(make_run(checkpoints=[ckpt]), "A107")
    assert h.severity == "info" and h.evidence["identical_pairs"][0][:2] == [0, 1]


def test_nonfinite_weights_give_no_attention_finding():
    ckpt = _last_checkpoint("bert-nan-filtered")
    assert hits(make_run(checkpoints=[ckpt]), "A107") == []
