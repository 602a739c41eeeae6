import numpy as np

from builders.rulekit import cnn_state, hist, hits, make_run, mem_checkpoint
from report_gen.readers.signals import Signals


def _series(frozen: set[str], n=3):
    states = []
    for i in range(n):
        s = cnn_state(i)
        if i:
            for k in frozen:
                s[k] = states[0][k].clone()
        states.append(s)
    return make_run(checkpoints=[mem_checkpoint(s, 10 * i) for i, s in enumerate(states)])


def test_layer_between_trained_layers_is_an_error():
    [h] = hits(_series({"conv2.weight", "conv2.bias"}), "U101")
    assert h.subject == "conv2"
    assert h.severity == "error"
    assert h.evidence["params"] == ["conv2.weight", "conv2.bias"]


def test_frozen_prefix_is_a_warning():
    [h] = hits(_series({"conv1.weight", "conv1.bias"}), "U101")
    assert h.subject == "conv1" and h.severity == "warning"


def test_everything_moving_is_fine():
    assert hits(_series(set()), "U101") == []


def test_tiny_but_nonzero_change_is_not_frozen():
    run = _series(set())
    s0 = cnn_state(0)
    s1 = cnn_state(1)
    s1["conv2.weight"] = s0["conv2.weight"] + 1e-6
    run = make_run(checkpoints=[mem_checkpoint(s0, 0), mem_checkpoint(s1, 10)])
    assert hits(run, "U101") == []


def test_constant_weight_histogram_while_others_change():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(200)
    wh = {"a.weight": hist("w/a", [x * (1 + i) for i in range(4)]),
          "b.weight": hist("w/b", [x] * 4),
          "c.weight": hist("w/c", [x * (2 + i) for i in range(4)])}
    [h] = hits(make_run(signals=Signals(weight_hist=wh)), "U101")
    assert h.subject == "b" and h.evidence["source"] == "weight histograms"


def test_layer_starved_of_gradients_is_a_warning_pointing_upstream():
    run = _series({"conv2.weight", "conv2.bias"})
    rng = np.random.default_rng(0)
    run.signals.grad_hist = {"conv2.weight": hist("g/conv2.weight", [np.zeros(100)] * 3),
                             "fc.weight": hist("g/fc.weight", [rng.standard_normal(100) * 1e-2] * 3)}
    [h] = hits(run, "U101")
    assert h.severity == "warning" and "upstream" in h.message


def test_layer_with_gradients_but_no_change_is_missing_from_the_optimizer():
    run = _series({"conv2.weight", "conv2.bias"})
    rng = np.random.default_rng(0)
    run.signals.grad_hist = {"conv2.weight": hist("g/conv2.weight", [rng.standard_normal(100) * 1e-3] * 3)}
    [h] = hits(run, "U101")
    assert h.severity == "error" and "optimizer" in h.message
