import numpy as np

from builders.rulekit import decaying, hits, make_run, series
from report_gen.readers.signals import Signals


def test_nan_in_training_loss_is_reported_with_first_step():
    v = decaying(50)
    v[30:] = np.nan
    run = make_run(signals=Signals(train_loss=series("train/loss", v, steps=np.arange(50) * 10)))
    [h] = hits(run, "L101")
    assert h.subject == "train/loss"
    assert h.evidence["first_step"] == 300
    assert h.evidence["nonfinite"] == 20


def test_inf_in_validation_accuracy_counts_as_metric():
    acc = np.linspace(0.1, 0.9, 20)
    acc[-1] = np.inf
    run = make_run(signals=Signals(train_loss=series("train/loss", decaying(20)), val_acc=series("val/acc", acc)))
    assert [h.subject for h in hits(run, "L101")] == ["val/acc"]
    assert hits(run, "L101", include_metrics=False) == []


def test_finite_series_with_huge_values_is_not_nonfinite():
    v = decaying(50)
    v[10] = 1e30  # big but finite: divergence's business, not this rule's
    run = make_run(signals=Signals(train_loss=series("train/loss", v)))
    assert hits(run, "L101") == []
