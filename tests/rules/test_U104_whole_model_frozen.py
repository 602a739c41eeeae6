import pytest
import torch

from builders import realfix
from builders.rulekit import hits, make_run, mem_checkpoint


@pytest.mark.parametrize("lib, name, cause, words", [
    ("lightning", "whole_model_frozen", "no-gradients", "no state (no moments)"),
    ("lightning", "lr_zero_after_warmup", "lr-zero", "lr-SGD"),
    ("hf", "bert-frozen", "no-gradients", "gradient norm (train/grad_norm) is exactly 0"),
    ("hf", "bert-lr-zero", "lr-zero", "train/learning_rate"),
])
def test_a_model_that_never_changes_is_an_error_with_its_cause(lib, name, cause, words):
    found = realfix.findings(lib, name, "U104", "U101")
    [f] = [f for f in found if f["code"] == "U104"]
    assert f["severity"] == "error" and f["category"] == "frozen-layer"
    assert f["evidence"]["root_cause"] == cause and words in f["message"]
    assert [f for f in found if f["code"] == "U101"] == []  # single frozen layers stay U101's


@pytest.mark.parametrize("lib, name, sub", [("tensorboardx", "mlp_instrumented_healthy", ""),
                                            ("tensorboardx", "gru_input1_healthy", "checkpoints"),
                                            ("hf", "bert-lr-1e-6", "")])
def test_a_model_that_moves_even_slightly_is_not_frozen(lib, name, sub):
    assert realfix.findings(lib, name, "U104", sub=sub) == []


def test_the_same_state_saved_twice_at_one_step_is_no_training_interval():
    w = {"fc.weight": torch.randn(4, 4), "fc.bias": torch.randn(4)}
    run = make_run(checkpoints=[mem_checkpoint(w, 100, path="last.ckpt"), mem_checkpoint(w, 100, path="epoch=9.ckpt")])
    assert hits(run, "U104") == []


def test_an_optimizer_that_holds_no_parameter_is_the_cause_when_nothing_else_is_logged():
    """bert-frozen's checkpoints alone: both optimizer.pt files have param groups with no parameter."""
    w = {"fc.weight": torch.randn(4, 4)}
    opt = {"kind": "adamw", "grad_rms": {}, "mapping": "names-in-file", "lrs": [1e-3], "group_params": 0, "state_entries": 0}
    run = make_run(checkpoints=[mem_checkpoint(w, 60, optimizer=opt), mem_checkpoint(w, 120, optimizer=opt)])
    [h] = hits(run, "U104")
    assert h.evidence["root_cause"] == "no-gradients" and "hold no parameter" in h.message
