"""Facts follow the selection: the curve rules (`--select L`, but for L107, which also reads the checkpoints'
optimizer state and weights) on a run with checkpoints read no tensor data at all, and
an expensive weight fact is computed only for the rules that declare it (or when something reads it)."""
from __future__ import annotations

import pytest
import torch

from builders import ckpt_builders as cb
from builders import event_builders as eb
from report_gen.engine import Options, diagnose
from report_gen.readers.checkpoint import storage, tree


@pytest.fixture
def tensor_reads(monkeypatch):
    """Count every tensor the checkpoint readers hand out (mapped, in-memory and restricted loaders)."""
    count = {"n": 0}

    def counting(func):
        def wrapped(*args, **kwargs):
            count["n"] += 1
            return func(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(tree, "_mapped_materialiser", counting(tree._mapped_materialiser))
    monkeypatch.setattr(tree, "_memory_materialiser", counting(tree._memory_materialiser))
    monkeypatch.setattr(storage.StorageReader, "read", counting(storage.StorageReader.read))
    return count


def _run(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    eb.write_records(run / "events.out.tfevents.1.host", [eb.make_version_event()] + [
        eb.make_scalar_event("train/loss", s, 2.0 / (1 + s), 1.7e9 + s) for s in range(60)])
    for step in (10, 20):
        model, opt = cb.trained_model_and_optimizer("adam", steps=step // 10, seed=step)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step},
                   run / "checkpoints" / f"step_{step}.pt")  # torch zip: mapped tensors + optimizer state
    cb.write_legacy(run / "checkpoints" / "step_30.pt", {"model": cb.tiny_state(3), "step": 30})
    cb.write_whole_module(run / "checkpoints" / "step_40.pt", cb.tiny_model(4))  # restricted unpickler
    return run


def test_curve_rules_only_read_no_tensor_data(tmp_path, tensor_reads):
    run = _run(tmp_path)
    # L107 (learning rate) also reads the checkpoints: their optimizer's lr and how far the weights moved
    report = diagnose([str(run)], Options(select=["L"], ignore=["L107"]))
    assert tensor_reads["n"] == 0
    assert report["inputs"]["runs"][0]["checkpoints"] == 4  # the checkpoints were still found and opened
    assert report["inputs"]["runs"][0]["last_step"] == 59
    assert {e["code"] for e in report["evaluated"]} >= {"L101", "L102"}
    assert report["details"]["runs"]["run"]["layers"] == []  # no layer table from checkpoint tensors
    full = diagnose([str(run)], Options())
    assert tensor_reads["n"] > 0  # the counter does see the loaders when checkpoint rules run
    assert full["details"]["runs"]["run"]["layers"]


def test_expensive_facts_only_for_rules_that_declare_them(tmp_path):
    run = _run(tmp_path)
    from report_gen.config import Config
    from report_gen.engine import load_run
    from report_gen.readers.discovery import discover
    from report_gen.selection import resolve_rules

    spec = discover([str(run)])[0]
    k101 = resolve_rules(Config(), ["K101"])
    facts = load_run(spec, Options(), rules=k101)
    stats = facts.last_stats["conv1.weight"]
    assert not stats.has("correlations") and not stats.has("spectrum") and not stats.has("quantiles")
    k103 = resolve_rules(Config(), ["K103"])
    assert k103.facts == {"correlations"}
    facts = load_run(spec, Options(), rules=k103)
    stats = facts.last_stats["conv1.weight"]
    assert stats.has("correlations") and not stats.has("spectrum")
    assert stats.stable_rank is not None and stats.has("spectrum")  # read anyway: computed by reloading


def test_a_rule_cannot_declare_an_unknown_fact():
    from report_gen.rules.base import NoOptions, rule

    with pytest.raises(ValueError, match="unknown facts"):
        @rule("Z999", "zz-test-rule", "info", needs=(), options=NoOptions, category="plateau", facts=("magic",))
        def _zz(run, opts):
            """
            What it detects:
                x
            Why it matters:
                x
            Typical causes:
                x
            What to try:
                x
            """
