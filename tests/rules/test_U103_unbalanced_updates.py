from builders.rulekit import cnn_state, hits, make_run, mem_checkpoint


def _run(scale):
    a, b = cnn_state(0), cnn_state(1)
    b["conv1.weight"] = a["conv1.weight"] * (1 + scale)  # relative change = scale
    b["conv2.weight"] = a["conv2.weight"] * 1.1
    b["fc.weight"] = a["fc.weight"] * 1.2
    return make_run(checkpoints=[mem_checkpoint(a, 0), mem_checkpoint(b, 10)])


def test_one_layer_barely_moving():
    [h] = hits(_run(1e-5), "U103")
    assert h.subject == "conv1.weight"
    assert h.evidence["spread"] > 1e3


def test_spread_below_threshold_is_fine():
    assert hits(_run(1e-3), "U103") == []  # 0.2/1e-3 = 200
