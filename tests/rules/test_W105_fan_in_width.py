import pytest
import torch

from builders import realfix
from builders.rulekit import hits, make_run, mem_checkpoint


def test_an_init_28x_its_fan_in_scale_is_reported_with_its_root_cause():
    """tensorboardX MLP initialised N(0, (28/sqrt(fan_in))^2), checkpoints at steps 0, 150, 300: never grows, so
    wide-weights (absolute |w| > 100, or 10x growth) is silent."""
    found = realfix.findings("tensorboardx", "init_too_wide", "W105", "W103", sub="checkpoints")
    w105 = [f for f in found if f["code"] == "W105"]
    assert {f["subject"] for f in w105} == {"0.weight", "2.weight", "4.weight"}
    for f in w105:
        assert f["severity"] == "warning" and f["category"] == "wide-weights"
        assert f["evidence"]["root_cause"] == "init-too-wide" and f["evidence"]["first_step"] == 0
        assert 15 < f["evidence"]["ratio_first"] < 25  # 28 / sqrt(2): over Kaiming's sqrt(2/fan_in)
    assert [f for f in found if f["code"] == "W103"] == []


@pytest.mark.parametrize("lib, name, sub", [
    ("tensorboardx", "mlp_instrumented_healthy", "checkpoints"), ("tensorboardx", "gru_input1_healthy", "checkpoints"),
    ("tensorboardx", "cnn_defaults_healthy", ""), ("torch_tb", "bn_relu_healthy", ""),
    ("lightning", "tb_defaults_healthy", ""), ("hf", "gpt2-healthy-tensorboard", ""), ("hf", "bert-healthy-none", ""),
])
def test_healthy_inits_are_within_their_fan_in_scale(lib, name, sub):
    assert realfix.findings(lib, name, "W105", sub=sub) == []


def test_weights_that_grow_far_past_their_fan_in_scale():
    g = torch.Generator().manual_seed(0)
    w0 = torch.nn.init.kaiming_uniform_(torch.empty(64, 128), a=5 ** 0.5, generator=g)
    run = make_run(checkpoints=[mem_checkpoint({"fc.weight": w0}, 0), mem_checkpoint({"fc.weight": w0 * 40}, 1000)])
    [h] = hits(run, "W105")
    assert h.evidence["root_cause"] is None and h.evidence["growth"] == pytest.approx(40, rel=1e-3)


def test_embedding_tables_are_left_out():
    run = make_run(checkpoints=[mem_checkpoint({"tok_embed.weight": torch.randn(1000, 768)}, 0)])
    assert hits(run, "W105") == []
