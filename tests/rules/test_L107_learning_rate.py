import numpy as np
import pytest
import torch

from builders import realfix
from builders.rulekit import decaying, hits, make_run, mem_checkpoint, series
from report_gen.readers.signals import Signals


def test_lr_exactly_zero_after_warm_up_is_an_error():
    """Lightning LambdaLR whose total steps equal the warm-up: lr-SGD 0 on 94% of 160 logged steps."""
    [f] = realfix.findings("lightning", "lr_zero_after_warmup", "L107")
    assert f["severity"] == "error" and f["subject"] == "lr-SGD"
    ev = f["evidence"]
    assert ev["root_cause"] == "lr-zero" and ev["lr_zero_share"] > 0.9 and ev["lr_first_zero_step"] == 9
    assert ev["learning"] is False


def test_hf_lr_zero_from_its_log_and_its_optimizer_state():
    """HF Trainer, integer-division schedule: trainer_state.json logs learning_rate 0.0 from step 10, and both
    checkpoints' optimizer.pt param groups hold lr 0.0."""
    [f] = realfix.findings("hf", "bert-lr-zero", "L107")
    assert f["severity"] == "error" and f["evidence"]["root_cause"] == "lr-zero"
    assert f["evidence"]["lr_first_zero_step"] == 10 and f["evidence"]["lr_zero_share"] > 0.9


def _opt(lrs):
    return {"kind": "adamw", "grad_rms": {}, "mapping": "names-in-file", "lrs": lrs, "group_params": 1, "state_entries": 1}


def test_lr_zero_in_the_optimizer_state_of_two_checkpoints_is_an_error_without_a_log():
    w = {"fc.weight": torch.randn(4, 4)}
    run = make_run(checkpoints=[mem_checkpoint(w, 60, optimizer=_opt([0.0, 0.0])), mem_checkpoint(w, 120, optimizer=_opt([0.0, 0.0]))])
    [h] = hits(run, "L107")
    assert h.severity == "error" and h.evidence["lr_source"] == "optimizer state" and h.evidence["lr_checkpoints"] == 2


@pytest.mark.parametrize("lib, name, optimizer", [("lightning", "lr_too_low", "sgd"), ("hf", "bert-lr-1e-6", "adamw")])
def test_an_lr_far_below_its_optimizers_defaults_in_a_run_that_does_not_learn(lib, name, optimizer):
    [f] = realfix.findings(lib, name, "L107")
    assert f["severity"] == "warning" and f["evidence"]["root_cause"] == "lr-too-low"
    assert f["evidence"]["optimizer"] == optimizer and f["evidence"]["lr_factor_below"] > 10
    assert f["evidence"]["learning"] is False


@pytest.mark.parametrize("lib, name", [
    ("tensorboardx", "mlp_instrumented_healthy"),  # cosine to 2.7e-7
    ("hf", "bert-healthy-tensorboard"),  # linear decay; its last checkpoint's optimizer says lr 0
    ("hf", "gpt2-healthy-tensorboard"), ("lightning", "tb_defaults_healthy"), ("lightning", "csv_resumed_healthy"),
])
def test_healthy_schedules_are_fine(lib, name):
    assert realfix.findings(lib, name, "L107") == []


def _lr_run(lr, loss):
    return make_run(signals=Signals(lr=series("train/lr", lr), train_loss=series("train/loss", loss)))


def test_a_collapsed_lr_is_a_warning():
    lr = np.concatenate([np.full(20, 0.1), np.full(80, 1e-7)])  # a scheduler stepped per batch, not per epoch
    [h] = hits(_lr_run(lr, decaying(100, 2.3, 1.5)), "L107")
    assert h.severity == "warning" and h.evidence["root_cause"] == "lr-collapsed"


def test_a_small_lr_that_learns_is_a_choice():
    lr = np.full(100, 1e-6)
    run = _lr_run(lr, decaying(100, 2.3, 0.3))
    run.signals.hparams["optimizer"] = "AdamW"
    assert hits(run, "L107") == []


def test_one_final_checkpoint_at_lr_zero_is_the_end_of_a_decay():
    w = {"fc.weight": torch.randn(4, 4)}
    assert hits(make_run(checkpoints=[mem_checkpoint(w, 100, optimizer=_opt([0.0, 0.0]))]), "L107") == []
