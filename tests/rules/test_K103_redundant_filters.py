from pathlib import Path

import pytest
import torch

from report_gen.readers.checkpoint import open_checkpoint
from builders.rulekit import cnn_state, hits, make_run, mem_checkpoint


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


REAL_HF = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "hf"


@pytest.mark.parametrize("checkpoint", ["bert-healthy-none/checkpoint-120", "gpt2-healthy-tensorboard/checkpoint-200",
                                        "bert-random-labels/checkpoint-240"])
def test_healthy_transformer_matrices_are_not_filters(checkpoint):
    """Real HF Trainer checkpoints: the embedding tables share one offset row and the projections are
    close to rank 1 (rows +-one direction), so their rows correlate, but rows of a 2-d matrix are not
    filters (tokens, Conv1D inputs, head-space coordinates)."""
    ckpt = open_checkpoint(str(REAL_HF / checkpoint))
    run = make_run(checkpoints=[ckpt])
    stats = run.last_stats
    assert max(stats[n].dup_family_share or 0 for n in stats if len(stats[n].shape) == 2) > 0.3  # the old alarm
    assert hits(run, "K103") == []


def test_a_conv1d_layer_of_copies_is_still_redundant():
    w = torch.randn(32, 8, 5)
    w[1:20] = w[0] * torch.linspace(1, 2, 19)[:, None, None] + 0.01 * torch.randn(19, 8, 5)
    [h] = hits(make_run(checkpoints=[mem_checkpoint({"conv.weight": w}, 1)]), "K103")
    assert h.evidence["family_share"] >= 0.3
