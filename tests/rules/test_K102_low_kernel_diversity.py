import torch

from builders.rulekit import cnn_state, hits, make_run, mem_checkpoint


def test_identical_kernels_have_no_diversity():
    s = cnn_state(0)
    k = torch.randn(1, 16, 3, 3)
    s["conv2.weight"] = k.repeat(32, 1, 1, 1) + 1e-5 * torch.randn(32, 16, 3, 3)
    [h] = hits(make_run(checkpoints=[mem_checkpoint(s, 1)]), "K102")
    assert h.subject == "conv2.weight"
    assert h.evidence["relative_diversity"] < 0.01


def test_random_kernels_are_diverse():
    assert hits(make_run(checkpoints=[mem_checkpoint(cnn_state(0), 1)]), "K102") == []


def test_threshold_option_is_respected():
    run = make_run(checkpoints=[mem_checkpoint(cnn_state(0), 1)])
    found = hits(run, "K102", min_relative_diversity=0.9)
    assert "conv2.weight" in [h.subject for h in found]
    assert all(h.evidence["relative_diversity"] < 0.9 for h in found)
