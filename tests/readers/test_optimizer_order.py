"""Optimizer state mapped to parameter names when the weights file does not keep the order.

Real HF Trainer runs (tests/fixtures/real/hf, transformers 5.23) record the Trainer's parameter order per
checkpoint in their MANIFEST; the reader must reproduce it from the architecture, or place only what the
module structure makes certain.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from builders import ckpt_builders as cb
from report_gen.readers.checkpoint import hf, open_checkpoint
from report_gen.readers.checkpoint.order import trainer_order_from_structure

REAL_HF = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "hf"
MANIFEST = json.loads((REAL_HF / "MANIFEST.json").read_text())["cases"]
TRAINED = [(case, ck) for case, rec in MANIFEST.items() for ck, info in rec.get("checkpoints", {}).items()
           if any(g["names"] for g in info["optimizer_groups"]) and "nan" not in case]


def _recorded(case: str, ck: str) -> list[str]:
    """The manifest's order, with a tied weight under the name the safetensors file keeps."""
    info = MANIFEST[case]["checkpoints"][ck]
    names = [n for g in info["optimizer_groups"] for n in g["names"]]
    tied = {"lm_head.weight": "transformer.wte.weight"}  # GPT-2: tie_word_embeddings (config.json)
    return [tied[n] if n in info["names_not_in_safetensors"] else n for n in names]


def _grad_rms_in_recorded_order(case: str, ck: str) -> dict[str, float]:
    """Adam's bias-corrected sqrt(mean(exp_avg_sq)) of optimizer.pt's entry i, named by the manifest."""
    opt = torch.load(REAL_HF / case / ck / "optimizer.pt", weights_only=True)
    out = {}
    for i, name in enumerate(_recorded(case, ck)):
        st = opt["state"][i]
        out[name] = math.sqrt(st["exp_avg_sq"].double().mean().item() / (1 - 0.999 ** float(st["step"])))
    return out


@pytest.mark.parametrize("case, ck", TRAINED)
def test_hf_trainer_order_is_recovered_from_the_architecture(case, ck):
    ckpt = open_checkpoint(str(REAL_HF / case / ck))
    optim = ckpt.optimizer
    assert (optim["mapping"], optim["order"]) == ("shapes-verified", "architecture")
    expected = _grad_rms_in_recorded_order(case, ck)
    assert set(optim["grad_rms"]) == set(expected)
    for name, value in expected.items():
        assert optim["grad_rms"][name] == pytest.approx(value, rel=1e-6), name
    # the tensors come back in the model's order (safetensors stores them sorted by name)
    assert ckpt.metadata["tensor_order"] == "architecture"
    params = [n for n, t in ckpt.tensors.items() if t.role == "param"]
    assert params[0].endswith(("word_embeddings.weight", "wte.weight"))


@pytest.mark.parametrize("case, ck, certain", [("bert-healthy-none", "checkpoint-120", 4),
                                               ("gpt2-healthy-tensorboard", "checkpoint-200", 10)])
def test_without_transformers_only_what_the_structure_makes_certain_is_mapped(monkeypatch, case, ck, certain):
    """Tiny models (every width 32) leave most siblings interchangeable: those stay unmapped, never guessed."""
    monkeypatch.setattr(hf, "meta_model", lambda config: (None, "transformers is not installed"))
    optim = open_checkpoint(str(REAL_HF / case / ck)).optimizer
    assert (optim["mapping"], optim["order"]) == ("ambiguous", "structure")
    expected = _grad_rms_in_recorded_order(case, ck)
    assert len(optim["grad_rms"]) >= certain
    for name, value in optim["grad_rms"].items():
        assert value == pytest.approx(expected[name], rel=1e-6), name


def _targets(groups, shapes):
    return [[shapes[n] for n in g] for g in groups]


def test_structure_places_siblings_whose_shapes_tell_them_apart():
    shapes = {"emb.weight": (10, 4), "enc.0.fc.weight": (8, 4), "enc.0.fc.bias": (8,), "enc.0.out.weight": (4, 8),
              "enc.0.out.bias": (4,), "enc.1.fc.weight": (8, 4), "enc.1.fc.bias": (8,), "enc.1.out.weight": (4, 8),
              "enc.1.out.bias": (4,), "head.weight": (2, 4)}
    decay = ["emb.weight", "enc.0.fc.weight", "enc.0.out.weight", "enc.1.fc.weight", "enc.1.out.weight", "head.weight"]
    rest = ["enc.0.fc.bias", "enc.0.out.bias", "enc.1.fc.bias", "enc.1.out.bias"]
    found = trainer_order_from_structure(sorted(shapes), shapes, set(), _targets([decay, rest], shapes))
    assert found.complete and found.names == decay + rest


def test_structure_leaves_interchangeable_siblings_unmapped():
    shapes = {"att.query.weight": (4, 4), "att.key.weight": (4, 4), "att.value.weight": (4, 4), "head.weight": (2, 4)}
    decay = ["att.query.weight", "att.key.weight", "att.value.weight", "head.weight"]
    found = trainer_order_from_structure(sorted(shapes), shapes, set(), _targets([decay, []], shapes))
    assert found.names == [None, None, None, "head.weight"]


def test_structure_that_fits_no_order_maps_nothing():
    shapes = {"a.weight": (4, 4), "b.weight": (3, 4)}
    assert trainer_order_from_structure(sorted(shapes), shapes, set(), [[(5, 5), (3, 4)], []]) is None


def test_layernorm_by_structure_joins_the_no_decay_group():
    """GPT-2's ln_1 has no 'norm' in its name: inside an nn.LayerNorm is read from the module's tensors."""
    shapes = {"h.0.ln_1.weight": (4,), "h.0.ln_1.bias": (4,), "h.0.fc.weight": (8, 4), "h.0.fc.bias": (8,)}
    decay, rest = ["h.0.fc.weight"], ["h.0.ln_1.weight", "h.0.ln_1.bias", "h.0.fc.bias"]
    found = trainer_order_from_structure(sorted(shapes), shapes, set(), _targets([decay, rest], shapes))
    assert found.complete and found.names == decay + rest


class _Shared(nn.Module):
    """One network registered under two names (PINA keeps `_pina_models.0` and `model_ref`)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
        self.ref = self.net


def test_lightning_module_registered_twice_maps_by_its_first_name(tmp_path):
    torch.manual_seed(0)
    model = _Shared()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)  # parameters() yields the shared tensors once
    for _ in range(2):
        opt.zero_grad()
        model.net(torch.randn(16, 1)).pow(2).mean().backward()
        opt.step()
    state = model.state_dict()
    assert len(state) == 12  # both names saved
    ckpt = open_checkpoint(str(cb.write_lightning(tmp_path / "epoch=0-step=2.ckpt", state, epoch=0, global_step=2,
                                                  optimizer_state=opt.state_dict())))
    assert sorted(ckpt.tensors) == sorted(k for k in state if k.startswith("net."))
    assert ckpt.metadata["alias_count"] == 6 and ckpt.metadata["aliases"]["ref.0.weight"] == "net.0.weight"
    assert ckpt.optimizer["mapping"] == "shapes-verified" and len(ckpt.optimizer["grad_rms"]) == 6


@pytest.mark.parametrize("path", sorted(str(p) for p in (REAL_HF.parent / "lightning").glob(
    "*/lightning_logs/version_0/checkpoints/*.ckpt"))[:6])
def test_real_lightning_checkpoints_map_by_state_dict_order(path):
    optim = open_checkpoint(path).optimizer
    assert (optim["mapping"], optim["order"]) == ("shapes-verified", "file")
