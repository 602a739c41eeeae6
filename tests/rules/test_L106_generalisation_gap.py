import numpy as np
import pytest

from builders import realfix
from builders.rulekit import decaying, hits, make_run, series
from report_gen.readers.signals import Signals


def test_validation_that_never_improves_while_training_does_is_reported_with_its_cause():
    """Lightning, validation inputs blank: train loss 0.69 -> 0.05, val loss 0.69..0.95 and val accuracy
    exactly 0.5 (chance, 2 classes) the whole run: a 14x gap that never rises, so overfitting stays silent."""
    [f] = realfix.findings("lightning", "val_never_improves", "L106")
    assert f["severity"] == "warning" and f["category"] == "overfitting"
    ev = f["evidence"]
    assert ev["root_cause"] == "train-val-mismatch" and ev["val_at_chance"] is True
    assert ev["gap"] > 6 and ev["train_gain"] > 0.9 and ev["val_gain"] < 0.1


@pytest.mark.parametrize("lib, name", [("lightning", "tb_defaults_healthy"), ("lightning", "tb_instrumented_healthy"),
                                       ("tensorboardx", "mlp_instrumented_healthy"), ("torch_tb", "bn_relu_healthy"),
                                       ("tensorboardx", "chance_noise_lookalike")])
def test_healthy_and_chance_level_runs_have_no_generalisation_gap(lib, name):
    assert realfix.findings(lib, name, "L106") == []


def test_a_task_learned_before_the_first_evaluation_improves_on_the_untrained_loss():
    train = decaying(200, 0.69, 0.02)
    val = 0.08 + 0.002 * np.random.default_rng(0).standard_normal(10)  # first evaluation after an epoch
    s = Signals(train_loss=series("train/loss", train), val_loss=series("val/loss", val, np.arange(10) * 20 + 19))
    assert hits(make_run(signals=s), "L106") == []


def test_a_rising_validation_loss_is_left_to_overfitting():
    train = decaying(200, 0.69, 0.001)
    val = np.linspace(0.7, 3.5, 20)
    s = Signals(train_loss=series("train/loss", train), val_loss=series("val/loss", val, np.arange(20) * 10 + 9))
    assert hits(make_run(signals=s), "L106") == []
    assert hits(make_run(signals=s), "L105")
