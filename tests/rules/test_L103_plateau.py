import numpy as np

from rulekit import decaying, hits, make_run, series
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
