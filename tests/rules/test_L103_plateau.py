import numpy as np
import pytest

from builders import realfix

from builders.rulekit import decaying, hits, make_run, series
from report_gen.readers.signals import Signals


def test_flat_loss_is_a_plateau():
    rng = np.random.default_rng(0)
    v = 2.30 + 0.01 * rng.standard_normal(100)
    [h] = hits(make_run(signals=Signals(train_loss=series("train/loss", v))), "L103")
    assert h.subject == "train/loss"
    assert h.evidence["relative_improvement"] < 0.05


def test_improvement_just_above_threshold_is_not_a_plateau():
    v = np.linspace(2.0, 1.88, 100)  # 6% improvement
    assert hits(make_run(signals=Signals(train_loss=series("train/loss", v))), "L103") == []


def test_convergence_then_flat_is_not_a_plateau():
    assert hits(make_run(signals=Signals(train_loss=series("train/loss", decaying(100)))), "L103") == []


def test_flat_accuracy_without_loss_is_a_plateau():
    acc = np.full(30, 0.1) + np.linspace(0, 0.01, 30)
    [h] = hits(make_run(signals=Signals(val_acc=series("val/acc", acc))), "L103")
    assert h.subject == "val/acc"
    acc_ok = np.linspace(0.1, 0.13, 30)
    assert hits(make_run(signals=Signals(val_acc=series("val/acc", acc_ok))), "L103") == []


def test_accuracy_is_not_judged_when_the_loss_learned():
    acc = np.full(30, 0.985) + np.linspace(0, 0.01, 30)  # flat because it was high from the first epoch
    run = make_run(signals=Signals(train_loss=series("train/loss", decaying(100)), train_acc=series("train/acc", acc)))
    assert hits(run, "L103") == []


def test_accuracy_near_its_ceiling_is_not_a_plateau():
    acc = np.full(30, 97.0) + np.linspace(0, 1.0, 30)  # percent
    assert hits(make_run(signals=Signals(val_acc=series("val/acc", acc))), "L103") == []


# ---- root causes named on the plateau (issue 13): real Lightning runs


@pytest.mark.parametrize("name, cause, words", [
    ("lr_zero_after_warmup", "lr-zero", "exactly 0"),
    ("lr_too_low", "lr-too-low", "1e-06"),
    ("whole_model_frozen", "no-gradients", "no state"),
])
def test_a_plateau_names_its_root_cause_when_the_run_holds_it(name, cause, words):
    [f] = realfix.findings("lightning", name, "L103")
    assert f["evidence"]["root_cause"] == cause, f["message"]
    assert "root cause" in f["message"] and words in f["message"]


def test_a_plateau_over_bit_identical_checkpoints_says_so():
    [f] = realfix.findings("lightning", "lr_zero_after_warmup", "L103")
    assert f["evidence"]["whole_model_frozen"] is True and "unchanged across 5 checkpoints" in f["message"]


def test_a_loss_at_chance_is_a_plateau_without_a_made_up_cause():
    [f] = realfix.findings("tensorboardx", "chance_noise_lookalike", "L103")
    assert "root_cause" not in f["evidence"]
