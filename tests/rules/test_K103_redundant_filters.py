import torch

from rulekit import cnn_state, hits, make_run, mem_checkpoint


def _dupes(n_dupes, noise=0.01):
    s = cnn_state(0)
    w = s["conv2.weight"].clone()  # 32 kernels of 16*3*3 = 144 weights
    for i in range(1, n_dupes + 1):
        w[i] = w[0] * (1 + 0.5 * i / n_dupes) + noise * torch.randn_like(w[0])
    s["conv2.weight"] = w
    return make_run(checkpoints=[mem_checkpoint(s, 1)])


def test_many_near_duplicate_kernels():
    [h] = hits(_dupes(15), "K103")  # 16 of 32 kernels in one correlated family
    assert h.subject == "conv2.weight"
    assert h.evidence["family_share"] >= 0.3


def test_few_duplicates_are_fine():
    assert hits(_dupes(4), "K103") == []  # 5 of 32 = 16% < 30%


def test_tiny_kernels_are_skipped():
    s = {"conv.weight": torch.randn(16, 1, 3, 3)}  # 9 weights per kernel: chance correlations
    s["conv.weight"][1:] = s["conv.weight"][0]
    assert hits(make_run(checkpoints=[mem_checkpoint(s, 1)]), "K103") == []


def test_many_separate_twin_pairs_are_not_one_redundant_family():
    # 24 of 32 kernels have a twin, but in 12 separate pairs: a wide layer, not a collapsed one
    s = cnn_state(0)
    w = s["conv2.weight"].clone()
    for i in range(0, 24, 2):
        w[i + 1] = w[i] * 1.3 + 0.01 * torch.randn_like(w[i])
    s["conv2.weight"] = w
    assert hits(make_run(checkpoints=[mem_checkpoint(s, 1)]), "K103") == []


def test_a_layer_copied_in_pairs_is_redundant():
    s = cnn_state(0)
    w = s["conv2.weight"].clone()  # 32 kernels: the second half repeats the first
    w[16:] = w[:16] + 1e-3 * torch.randn_like(w[:16])
    s["conv2.weight"] = w
    [h] = hits(make_run(checkpoints=[mem_checkpoint(s, 1)]), "K103")
    assert h.evidence["twin_share"] == 1.0 and h.evidence["family_share"] < 0.3
