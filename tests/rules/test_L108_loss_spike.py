import numpy as np
import pytest

from builders import realfix
from builders.rulekit import decaying, hits, make_run, series
from report_gen.readers.signals import Signals


@pytest.mark.parametrize("lib, name, lead", [("tensorboardx", "loss_grad_spike", 5), ("hf", "gpt2-spike", 6)])
def test_a_loss_spike_after_a_grad_norm_spike_names_the_lead_and_the_lr_jump(lib, name, lead):
    """tensorboardX: resumed without scheduler state, lr re-warms 150x over steps 150-159; HF GPT-2: lr ramped
    30x from step 121. Both recover; the grad norm crosses first (OLMo 2)."""
    [f] = realfix.findings(lib, name, "L108")
    assert f["severity"] == "warning" and f["category"] == "divergence"
    ev = f["evidence"]
    assert ev["recovered"] is True and ev["method"] == "foundry"
    assert ev["lead_steps"] == lead and ev["root_cause"] == "lr-spike" and ev["lr_factor"] > 2
    assert ev["peak"] > 3 * ev["before"]


@pytest.mark.parametrize("lib, name", [("tensorboardx", "mlp_instrumented_healthy"), ("tensorboardx", "cnn_defaults_healthy"),
                                       ("hf", "gpt2-healthy-tensorboard"), ("hf", "bert-healthy-tensorboard"),
                                       ("torch_tb", "bn_relu_healthy"), ("lightning", "tb_defaults_healthy"),
                                       ("tensorboardx", "chance_noise_lookalike")])
def test_healthy_runs_have_no_loss_spike(lib, name):
    assert realfix.findings(lib, name, "L108") == []


def test_every_published_method_is_selectable():
    # the tensorboardX spike under each published detector: Fabric's 3x-the-mean misses this gradual ramp
    firing = {m: bool(realfix.findings("tensorboardx", "loss_grad_spike", "L108", L108={"method": m}))
              for m in ("foundry", "olmo", "fabric", "megatron")}
    assert firing == {"foundry": True, "olmo": True, "fabric": False, "megatron": False}


def test_a_converged_loss_near_zero_that_doubles_is_no_spike():
    v = np.concatenate([decaying(150, 2.3, 1e-4), np.full(5, 3e-4), np.full(20, 1e-4)])
    assert hits(make_run(signals=Signals(train_loss=series("train/loss", v))), "L108") == []


def test_a_spike_the_run_does_not_recover_from_is_an_error():
    v = np.concatenate([decaying(150, 2.3, 0.3), np.full(30, 2.0)])
    [h] = hits(make_run(signals=Signals(train_loss=series("train/loss", v))), "L108")
    assert h.severity == "error" and h.evidence["recovered"] is False


def test_segment_peaks_are_the_first_maximum_of_each_segment_as_argmax_gives_it():
    """The spike peaks, found for all segments at once (short ones as rows of one array, long ones one
    by one): the same index as `s + np.argmax(v[s:e + 1])`, ties going to the first."""
    from report_gen.rules.spiking import _SEGMENT_COLUMNS, _segment_argmax

    rng = np.random.default_rng(4)
    v = rng.integers(0, 5, 3000).astype(float)  # few distinct values: many ties
    for longest in (1, 7, _SEGMENT_COLUMNS, _SEGMENT_COLUMNS + 40):
        starts = np.sort(rng.choice(2900, 200, replace=False))
        ends = np.minimum(starts + rng.integers(0, longest, 200), v.size - 1)
        want = [s + int(np.argmax(v[s:e + 1])) for s, e in zip(starts.tolist(), ends.tolist())]
        assert _segment_argmax(v, starts, ends).tolist() == want
    ends_at_last = np.array([2990]), np.array([2999])
    assert _segment_argmax(v, *ends_at_last).tolist() == [2990 + int(np.argmax(v[2990:]))]
