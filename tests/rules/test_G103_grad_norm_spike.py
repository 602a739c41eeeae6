import numpy as np

from builders import realfix
from builders.rulekit import decaying, hits, make_run, series
from report_gen.readers.signals import Signals


def test_a_grad_norm_spike_that_the_loss_follows_is_a_warning():
    [f] = realfix.findings("tensorboardx", "loss_grad_spike", "G103")
    assert f["severity"] == "warning" and f["category"] == "exploding-gradients"
    assert f["evidence"]["onset_step"] == 155 and f["evidence"]["loss_spike_step"] == 160
    assert f["evidence"]["root_cause"] == "lr-spike"


def test_a_grad_norm_spike_the_loss_shrugs_off_is_info():
    g = np.concatenate([np.full(150, 0.5), np.full(6, 3.0), np.full(50, 0.5)])
    s = Signals(train_loss=series("train/loss", decaying(206, 2.3, 0.3)), grad_norm=series("train/grad_norm", g))
    [h] = hits(make_run(signals=s), "G103")
    assert h.severity == "info" and h.evidence["loss_spike_step"] is None


def test_healthy_grad_norms_have_no_spike():
    for lib, name in (("hf", "gpt2-healthy-tensorboard"), ("tensorboardx", "mlp_instrumented_healthy"),
                      ("tensorboardx", "gru_input1_healthy")):
        assert realfix.findings(lib, name, "G103") == []
