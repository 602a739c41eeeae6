"""HF checkpoint folders probe themselves, and attention is captured whatever computes it."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import report_gen.hfprobe as hfprobe
from report_gen.facts.activations import attention_stats
from report_gen.hfprobe import probe_hf_run, token_batch
from report_gen.probe import probe
from report_gen.readers.checkpoint import open_checkpoint
from builders.rulekit import hits, make_run

REAL_HF = Path(__file__).resolve().parent / "fixtures" / "real" / "hf"
SEEDS = REAL_HF.parent / "hf-seeds"  # the calibration's extremes from seeds 1 and 2 (its README)
MANIFEST = json.loads((REAL_HF / "MANIFEST.json").read_text())["cases"]


def _checkpoints(case: str, root: Path = REAL_HF):
    return [open_checkpoint(str(p)) for p in sorted((root / case).glob("checkpoint-*"),
                                                      key=lambda p: int(p.name.split("-")[1]))]


def test_attention_collapse_is_caught_by_the_self_probe():
    outcome = probe_hf_run(_checkpoints("bert-attention-collapse"))
    assert outcome.info["checkpoints"] == 1 and "BertForSequenceClassification" in outcome.info["model"]
    assert outcome.problems == []
    [(step, result)] = outcome.results
    assert step == 120 and result.activations == {}  # attention only
    assert sorted(result.attention) == ["bert.encoder.layer.0.attention.self", "bert.encoder.layer.1.attention.self"]
    for at in result.attention.values():
        assert (at.heads, at.seq_len) == (2, 24)
        assert at.max_weight.min() > 0.9  # the manifest measured 0.94 on the eval set
    found = hits(make_run(probe=outcome.results), "A106")
    assert len(found) == 2 and all(h.evidence["collapsed_heads"] == [0, 1] for h in found)


@pytest.mark.parametrize("case", ["bert-healthy-none", "gpt2-healthy-tensorboard"])
def test_healthy_models_probe_clean(case):
    outcome = probe_hf_run(_checkpoints(case))
    assert outcome.problems == []  # GPT-2's tied lm_head.weight is not "missing"
    assert len(outcome.results[-1][1].attention) == 2
    assert hits(make_run(probe=outcome.results), "A106") == []


def test_the_most_spread_collapse_of_the_calibration_is_caught():
    """Seed 1's collapsed BERT: three of its four heads sit at normalised entropy 0.057-0.060 on the synthetic batch."""
    outcome = probe_hf_run(_checkpoints("s1/bert-attention-collapse", SEEDS))
    entropy = [float(e) for at in outcome.results[-1][1].attention.values() for e in at.entropy]
    assert max(entropy) > 0.055 and min(entropy) < 0.03
    found = hits(make_run(probe=outcome.results), "A106")
    assert len(found) == 2 and all(h.evidence["collapsed_heads"] == [0, 1] for h in found)


def test_the_least_spread_healthy_attention_is_not_collapsed():
    """Seed 2's healthy BERT has a head at normalised entropy 0.14, the lowest healthy one of the calibration."""
    outcome = probe_hf_run(_checkpoints("s2/bert-healthy-none", SEEDS))
    entropy = [float(e) for at in outcome.results[-1][1].attention.values() for e in at.entropy]
    assert 0.1 < min(entropy) < 0.15
    assert hits(make_run(probe=outcome.results), "A106") == []


@pytest.mark.parametrize("case", sorted(c for c, rec in MANIFEST.items() if rec["status"] == "healthy"))
def test_healthy_hf_folders_get_no_warning_with_the_self_probe(case):
    """The whole report, with both attention rules running (the folder probes itself): nothing at warning or above."""
    import report_gen

    report = report_gen.diagnose(REAL_HF / case)
    assert report.data["inputs"]["runs"][0]["probe"]["model"]  # the self-probe ran, so A106 was judged
    assert [(f["code"], f["subject"]) for f in report.findings if f["severity"] in ("warning", "error")] == []
    assert report.data["summary"]["verdict"] == "pass"


def test_a_synthetic_token_batch_is_bounded_and_seeded():
    batch, text = token_batch({"vocab_size": 30522, "max_position_embeddings": 512})
    assert batch["input_ids"].shape == (4, 64) and int(batch["input_ids"].max()) < 30522
    assert bool((batch["attention_mask"] == 1).all()) and "seed 0" in text
    again, _ = token_batch({"vocab_size": 30522, "max_position_embeddings": 512})
    assert torch.equal(batch["input_ids"], again["input_ids"])
    assert token_batch({"vocab_size": 32, "n_positions": 24})[0]["input_ids"].shape == (4, 24)


def test_without_transformers_the_run_card_says_so(monkeypatch):
    monkeypatch.setattr(hfprobe, "transformers_version", lambda: None)
    outcome = probe_hf_run(_checkpoints("bert-attention-collapse"))
    assert outcome.results == [] and "transformers is not installed" in outcome.info["note"]
    assert "pip install 'report_gen[hf]'" in outcome.info["note"]


def test_a_config_that_needs_remote_code_is_refused(tmp_path):
    folder = tmp_path / "checkpoint-120"
    shutil.copytree(REAL_HF / "bert-healthy-none" / "checkpoint-120", folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    outcome = probe_hf_run([open_checkpoint(str(folder))])
    assert outcome.results == [] and "needs remote code" in outcome.info["note"]


def test_a_user_token_batch_is_used_without_model(tmp_path):
    ids = torch.randint(0, 32, (2, 12), generator=torch.Generator().manual_seed(3))
    torch.save({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, tmp_path / "batch.pt")
    outcome = probe_hf_run(_checkpoints("bert-healthy-none")[-1:], probe_file=str(tmp_path / "batch.pt"))
    assert outcome.info["input"].startswith("batch.pt") and outcome.results[-1][1].attention
    assert next(iter(outcome.results[-1][1].attention.values())).seq_len == 12


def test_cli_diagnose_probes_an_hf_folder_without_model(tmp_path):
    from report_gen.cli import main

    out = tmp_path / "out"
    assert main(["diagnose", str(REAL_HF / "bert-attention-collapse"), "-o", str(out), "--format", "json", "-q",
                 "--fail-on", "never"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "config.json" in report["inputs"]["runs"][0]["probe"]["model"]
    codes = {f["code"] for f in report["findings"]}
    assert {"A106", "A107"} <= codes and report["summary"]["verdict"] == "warn"


# --------------------------------------------------------------------------- capture of any attention


def _tiny_bert(impl: str):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=16)
    return BertModel._from_config(config, attn_implementation=impl).eval()


def test_sdpa_attention_is_captured_as_eager_attention_computes_it():
    original = F.scaled_dot_product_attention
    eager, sdpa = _tiny_bert("eager"), _tiny_bert("sdpa")
    sdpa.load_state_dict(eager.state_dict())
    ids = torch.randint(0, 40, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padding: the boolean/additive mask must be applied
    batch = {"input_ids": ids, "attention_mask": mask}
    a, b = probe(eager, batch, layers=[]), probe(sdpa, batch, layers=[])
    assert sorted(a.attention) == sorted(b.attention) == ["encoder.layer.0.attention.self",
                                                           "encoder.layer.1.attention.self"]
    for layer in a.attention:
        torch.testing.assert_close(torch.from_numpy(a.attention[layer].entropy),
                                   torch.from_numpy(b.attention[layer].entropy), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.from_numpy(a.attention[layer].maps), torch.from_numpy(b.attention[layer].maps),
                                   atol=1e-5, rtol=1e-5)
    assert F.scaled_dot_product_attention is original


class _CausalGQA(nn.Module):
    """A custom block calling F.scaled_dot_product_attention with is_causal and grouped key heads."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 8), nn.Linear(16, 8)

    def forward(self, x):
        n, length, _ = x.shape
        q = self.q(x).view(n, length, 4, 4).transpose(1, 2)
        k = self.k(x).view(n, length, 2, 4).transpose(1, 2)
        v = self.v(x).view(n, length, 2, 4).transpose(1, 2)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).transpose(1, 2).reshape(n, length, 16)


class _Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = _CausalGQA()

    def forward(self, x):
        return self.block(x)


def test_functional_sdpa_calls_are_captured_with_causal_mask_and_grouped_heads():
    torch.manual_seed(0)
    model = _Wrapper().eval()
    x = torch.randn(2, 6, 16)
    original = F.scaled_dot_product_attention
    result = probe(model, x, layers=[])
    assert F.scaled_dot_product_attention is original
    [(name, at)] = result.attention.items()
    assert name == "block" and at.heads == 4
    with torch.no_grad():
        b = model.block
        q = b.q(x).view(2, 6, 4, 4).transpose(1, 2)
        k = b.k(x).view(2, 6, 2, 4).transpose(1, 2).repeat_interleave(2, dim=1)
        logits = (q @ k.transpose(-2, -1)) / math.sqrt(4)
        logits = logits.masked_fill(~torch.ones(6, 6, dtype=torch.bool).tril(), float("-inf"))
        expected = attention_stats("block", torch.softmax(logits, -1))
    torch.testing.assert_close(torch.from_numpy(at.entropy), torch.from_numpy(expected.entropy))
    assert at.maps.shape == (4, 6, 6) and at.maps[:, 0, 1:].max() == 0.0  # row 0 sees only key 0


def test_sdpa_is_restored_when_the_forward_fails():
    original = F.scaled_dot_product_attention
    with pytest.raises(Exception):
        probe(_Wrapper(), torch.randn(2, 6, 5), layers=[])  # wrong width
    assert F.scaled_dot_product_attention is original


def test_multihead_attention_is_still_captured_once():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True)
    result = probe(layer, torch.randn(2, 5, 16))
    assert list(result.attention) == ["self_attn"] and result.attention["self_attn"].heads == 4
