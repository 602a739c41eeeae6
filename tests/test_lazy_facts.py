"""Facts follow the selection: the curve rules (`--select L`, L107 included: it reads the checkpoints' optimizer
param groups, and their weights only when no training loss says whether the run learns) on a run with
checkpoints read no tensor data at all, and an expensive weight fact is computed only for the rules that
declare it (or when something reads it)."""
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
    report = diagnose([str(run)], Options(select=["L"]))
    assert tensor_reads["n"] == 0
    assert "L107" in {e["code"] for e in report["evaluated"]}
    assert report["inputs"]["runs"][0]["checkpoints"] == 4  # the checkpoints were still found and opened
    assert report["inputs"]["runs"][0]["last_step"] == 59
    assert {e["code"] for e in report["evaluated"]} >= {"L101", "L102"}
    assert report["details"]["runs"]["run"]["layers"] == []  # no layer table from checkpoint tensors
    full = diagnose([str(run)], Options())
    assert tensor_reads["n"] > 0  # the counter does see the loaders when checkpoint rules run
    assert full["details"]["runs"]["run"]["layers"]


def _lr_zero_run(tmp_path, losses: bool):
    """Two torch checkpoints of an Adam whose param groups hold lr 0 (so the weights never move), with or
    without a flat training loss logged beside them."""
    run = tmp_path / ("with_loss" if losses else "no_loss")
    (run / "checkpoints").mkdir(parents=True)
    if losses:
        eb.write_records(run / "events.out.tfevents.1.host", [eb.make_version_event()] + [
            eb.make_scalar_event("train/loss", s, 2.3, 1.7e9 + s) for s in range(60)])
    model, opt = cb.trained_model_and_optimizer("adam", steps=2, seed=0)
    for group in opt.param_groups:
        group["lr"] = 0.0
    for step in (10, 20):
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step},
                   run / "checkpoints" / f"step_{step}.pt")
    return run


def _l107(report):
    return [{k: f[k] for k in ("severity", "subject", "message", "evidence")}
            for f in report["findings"] if f["code"] == "L107"]


def test_l107_reads_the_optimizer_lr_without_tensor_data(tmp_path, tensor_reads):
    run = _lr_zero_run(tmp_path, losses=True)
    light = diagnose([str(run)], Options(select=["L107"]))
    assert tensor_reads["n"] == 0
    [f] = _l107(light)
    assert f["severity"] == "error" and f["evidence"]["root_cause"] == "lr-zero"
    assert f["evidence"]["lr_source"] == "optimizer state" and f["evidence"]["learning"] is False
    full = diagnose([str(run)], Options())
    assert tensor_reads["n"] > 0
    assert _l107(full) == [f]  # the same finding as when every fact is computed


def test_l107_reads_the_weights_only_without_a_training_loss(tmp_path, tensor_reads):
    run = _lr_zero_run(tmp_path, losses=False)
    light = diagnose([str(run)], Options(select=["L"]))
    assert tensor_reads["n"] > 0  # whether the run learns: only the weights' change can tell
    [f] = _l107(light)
    assert f["severity"] == "error" and "changed 0" in f["message"] and f["evidence"]["learning"] is False
    assert _l107(diagnose([str(run)], Options())) == [f]


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


@pytest.mark.parametrize("lib, name", [
    ("hf", "bert-lr-zero"),  # HF Trainer folders: lr 0 in optimizer.pt's param groups
    ("hf", "bert-lr-1e-6"),  # the optimizer's kind (adamw) from the state's key names, without its tensors
    ("lightning", "lr_too_low"),  # Lightning .ckpt: optimizer_states[0]
])
def test_l107_on_real_runs_reads_no_tensor_and_finds_what_the_full_run_finds(lib, name, tensor_reads):
    from builders import realfix

    light = realfix.report(lib, name, "L107")
    assert tensor_reads["n"] == 0
    assert _l107(light) and _l107(light) == _l107(realfix.report(lib, name))
