import numpy as np

from builders import realfix
from builders.rulekit import decaying, hits, make_run, series
from report_gen.readers.signals import Signals


def test_hf_nan_hidden_by_logging_nan_inf_filter_is_an_error():
    """HF Trainer with logging_nan_inf_filter=True (the default): the loss became NaN at step 40 and was
    logged as exactly 0.0 from step 45, grad_norm as NaN from step 40 (trainer_state.json as written)."""
    run = make_run(signals=realfix.trainer_state_signals("hf", "bert-nan-filtered", "checkpoint-60"))
    found = hits(run, "L109")
    grad = [h for h in found if h.subject == "train/grad_norm"]
    zero = [h for h in found if h.subject == "train/loss"]
    assert grad and grad[0].evidence["first_step"] == 40
    assert zero and zero[0].evidence["first_zero_step"] == 45 and "logging_nan_inf_filter" in zero[0].message
    # the training-loss curve itself shows no NaN (only the eval loss does): that is what this rule is for
    assert "train/loss" not in [h.subject for h in hits(run, "L101")]
    assert hits(run, "L103") == []  # and 0.0 is no plateau


def test_unfiltered_nan_is_left_to_nonfinite_loss_but_the_grad_norm_is_still_reported():
    run = make_run(signals=realfix.trainer_state_signals("hf", "bert-nan-unfiltered", "checkpoint-60"))
    assert [h.subject for h in hits(run, "L109")] == ["train/grad_norm"]
    assert hits(run, "L101")


def test_a_loss_that_underflows_to_zero_after_converging_is_no_hidden_nan():
    v = np.concatenate([decaying(100, 0.7, 1e-9), np.zeros(20)])  # a memorised training set in float32
    assert hits(make_run(signals=Signals(train_loss=series("train/loss", v))), "L109") == []


def test_healthy_hf_runs_have_finite_grad_norms():
    for name in ("bert-healthy-tensorboard", "gpt2-healthy-tensorboard"):
        assert realfix.findings("hf", name, "L109") == []


def test_the_hf_run_read_by_report_gen_shows_the_hidden_nan():
    found = realfix.findings("hf", "bert-nan-filtered", "L109", "L103")
    assert {f["subject"] for f in found if f["code"] == "L109"} == {"train/grad_norm", "train/loss"}
    assert [f for f in found if f["code"] == "L103"] == []  # its manifest: not a plateau


def test_exact_zeros_between_positive_losses_are_no_hidden_nan():
    # a batch fit exactly now and then (BCE-with-logits underflows), or 0.0 logged on epochs with no loss computed
    v = decaying(200, 0.7, 0.05)
    v[120::13] = 0.0
    assert hits(make_run(signals=Signals(train_loss=series("train/loss", v))), "L109") == []
