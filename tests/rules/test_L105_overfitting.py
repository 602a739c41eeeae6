import numpy as np

from builders.rulekit import decaying, hits, make_run, series
from report_gen.readers.signals import Signals


def _signals(val, train=None, **kw):
    train = decaying(len(val) * 10, 2.3, 0.01) if train is None else train
    return Signals(train_loss=series("train/loss", train, steps=np.arange(len(train))),
                   val_loss=series("val/loss", val, steps=np.arange(len(val)) * 10 + 9), **kw)


def test_val_loss_rising_while_train_improves_is_overfitting():
    val = np.concatenate([np.linspace(2.0, 0.8, 10), np.linspace(0.8, 1.4, 10)])
    [h] = hits(make_run(signals=_signals(val)), "L105")
    assert h.subject == "val/loss"
    assert h.evidence["relative_rise"] > 0.3
    assert h.evidence["evaluations_after_best"] >= 5


def test_small_rise_below_threshold_is_not_overfitting():
    val = np.concatenate([np.linspace(2.0, 0.8, 10), np.linspace(0.8, 0.86, 10)])  # +7.5% < 10%
    assert hits(make_run(signals=_signals(val)), "L105") == []


def test_short_blip_at_the_end_is_not_overfitting():
    val = np.concatenate([np.linspace(2.0, 0.8, 18), [1.2, 1.3]])  # only 2 evaluations after the best
    assert hits(make_run(signals=_signals(val)), "L105") == []


def test_large_accuracy_gap_is_overfitting():
    s = Signals(train_acc=series("train/acc", np.linspace(0.5, 1.0, 20)),
                val_acc=series("val/acc", np.linspace(0.4, 0.6, 20)))
    [h] = hits(make_run(signals=s), "L105")
    assert h.evidence["gap"] > 0.3
    s2 = Signals(train_acc=series("train/acc", np.linspace(0.5, 0.98, 20)),
                 val_acc=series("val/acc", np.linspace(0.4, 0.8, 20)))
    assert hits(make_run(signals=s2), "L105") == []


def test_tiny_rise_of_an_almost_zero_val_loss_is_not_overfitting():
    # healthy run: val loss 1.4 -> 0.0085, ends at 0.012 (+45% of the best, 0.3% of the improvement)
    val = np.concatenate([np.geomspace(1.4, 0.0085, 12), [0.009, 0.011, 0.012, 0.0123]])
    assert hits(make_run(signals=_signals(val)), "L105") == []


def test_accuracy_gap_is_not_judged_after_the_loss_went_nan():
    train = decaying(100)
    train[90:] = np.nan
    s = Signals(train_loss=series("train/loss", train), train_acc=series("train/acc", np.linspace(0.5, 0.9, 20)),
                val_acc=series("val/acc", np.linspace(0.4, 0.3, 20)))
    assert hits(make_run(signals=s), "L105") == []


def test_fast_task_overfitting_is_judged_against_the_loss_level():
    # learned within the first epoch: the validation curve has almost no improvement of its own,
    # but nearly tripling after its best is overfitting all the same
    train = np.r_[2.3, np.geomspace(0.5, 0.01, 99)]
    val = np.array([0.30, 0.25, 0.22, 0.24, 0.28, 0.33, 0.38, 0.45, 0.52, 0.60])
    [h] = hits(make_run(signals=_signals(val, train=train)), "L105")
    assert h.severity is None and h.evidence["relative_rise"] > 1
    # a wobble of the same shape at +14% of its level is not
    wobble = np.array([0.081, 0.079, 0.077, 0.075, 0.080, 0.079, 0.076, 0.085, 0.084, 0.085])
    assert hits(make_run(signals=_signals(wobble, train=train)), "L105") == []


def test_rising_loss_with_steady_accuracy_is_info():
    train = np.r_[1.4, np.geomspace(0.3, 0.001, 199)]
    val = np.r_[0.05, 0.03, 0.02, 0.019, 0.02, 0.025, 0.03, 0.035, 0.039, 0.04]
    acc = np.r_[0.990, 0.995, 0.998, 0.998, 0.998, 0.997, 0.998, 0.998, 0.997, 0.998]
    [h] = hits(make_run(signals=_signals(val, train=train, val_acc=series("val/acc", acc))), "L105")
    assert h.severity == "info" and "overconfident" in h.message


# ---- chance level (issue 13): real Lightning runs


def test_random_labels_at_chance_are_an_error_naming_the_root_cause_not_overconfidence():
    """Lightning, labels drawn at random: train loss 0.70 -> 1e-4, val loss 0.72 -> 3.7, val accuracy
    0.47..0.52 the whole run (2 classes, from hparams.yaml). Accuracy "holds" at chance: no excuse."""
    from builders import realfix

    [f] = realfix.findings("lightning", "random_labels", "L105")
    assert f["severity"] == "error"
    ev = f["evidence"]
    assert ev["root_cause"] == "random-labels" and ev["val_at_chance"] is True
    assert ev["classes"] == 2 and ev["chance_accuracy"] == 0.5 and ev["val_acc_kappa"] <= 0.1
    assert "chance" in f["message"] and "overconfident" not in f["message"]


def test_a_healthy_lightning_runs_wobbling_validation_is_not_overfitting():
    """Lightning defaults, 8 evaluations: val loss 0.129 -> 0.22 wobbling (median step 0.034: the rise is
    1.8 such steps) while val accuracy stays 0.93-0.95: no rise beyond the curve's own noise."""
    from builders import realfix

    assert realfix.at_least_warning(realfix.findings("lightning", "tb_defaults_healthy", "L105")) == []


def test_accuracy_above_chance_that_holds_is_still_overconfidence():
    val = np.concatenate([np.linspace(2.0, 0.8, 10), np.linspace(0.8, 1.4, 10)])
    acc = np.concatenate([np.linspace(0.5, 0.9, 10), np.full(10, 0.9)])
    s = _signals(val, val_acc=series("val/acc", acc, steps=np.arange(20) * 10 + 9), hparams={"num_classes": 2})
    [h] = hits(make_run(signals=s), "L105")
    assert h.severity == "info" and h.evidence["val_at_chance"] is False


def test_validation_loss_never_below_the_chance_loss_is_an_error_without_accuracy():
    # 10 classes (hparams), no accuracy logged: val never below ln 10 = 2.30 while training memorises
    val = np.concatenate([np.full(4, 2.35), np.linspace(2.35, 4.0, 16)])
    s = _signals(val, hparams={"num_classes": 10})
    [h] = hits(make_run(signals=s), "L105")
    assert h.severity == "error" and h.evidence["root_cause"] == "random-labels"


def test_random_labels_from_hf_trainer_and_wandb_are_errors_too():
    """HF Trainer (trainer_state.json: eval_accuracy 0.46-0.53) and W&B offline (.wandb history) runs of
    random labels: the same root cause, whatever wrote the log."""
    from builders import realfix

    for lib, name in (("hf", "bert-random-labels"), ("wandb", "offline_random_labels")):
        [f] = realfix.findings(lib, name, "L105")
        assert f["severity"] == "error" and f["evidence"]["root_cause"] == "random-labels", (lib, f["message"])
