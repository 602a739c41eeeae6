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


def test_keras_kernel_histograms_are_judged_with_the_shapes_of_the_logged_model_config():
    """Keras' wide_init (N(0, (28/sqrt(fan_in))^2), no checkpoint): the TensorBoard callback's model config
    gives each Dense kernel's fan-in, its kernel histograms the spread, from the first one (end of epoch 0)."""
    found = realfix.findings("keras", "wide_init", "W105")
    assert {f["subject"] for f in found} == {"sequential_2.dense.kernel", "sequential_2.dense_1.kernel",
                                              "sequential_2.dense_2.kernel"}
    fan_in = {f["subject"]: f["evidence"]["fan_in"] for f in found}
    assert fan_in == {"sequential_2.dense.kernel": 16, "sequential_2.dense_1.kernel": 32,
                      "sequential_2.dense_2.kernel": 32}
    for f in found:
        ev = f["evidence"]
        assert f["severity"] == "warning" and f["category"] == "wide-weights" and ev["source"] == "weight histogram"
        assert ev["root_cause"] == "init-too-wide" and ev["first_step"] == 0
        assert 15 < ev["ratio_first"] < 25 and 15 < ev["ratio_last"] < 25  # 28 / sqrt(2) over Kaiming
        assert "first logged histogram (step 0)" in f["message"]


@pytest.mark.parametrize("name", ["histograms_healthy", "tf_keras_histograms_healthy"])
def test_healthy_keras_kernels_are_judged_and_within_their_fan_in_scale(name):
    r = realfix.report("keras", name, "W105")
    assert r["findings"] == []
    assert [e["code"] for e in r["evaluated"]] == ["W105"]  # judged (the config gave the shapes), not skipped


@pytest.mark.parametrize("lib, name, sub", [("keras", "defaults_healthy", ""),
                                           ("tensorboardx", "mlp_instrumented_healthy", "runs")])
def test_without_a_checkpoint_or_shapes_it_is_not_counted_as_evaluated(lib, name, sub):
    """Weight histograms alone (tensorboardX's, without their checkpoints), or a Keras config without
    histograms, do not make W105 'evaluated': it needs a fan-in."""
    r = realfix.report(lib, name, "W105", sub=sub)
    assert {s["role"] for s in r["inputs"]["runs"][0]["series"]} >= ({"weight_hist"} if sub else set())
    [w105] = [e for e in r["not_evaluated"] if e["code"] == "W105"]
    assert r["evaluated"] == [] and "no logged model config" in w105["reason"]
