import numpy as np
import pytest

from builders.rulekit import hist, hits, make_run
from report_gen.readers.signals import Signals


def _grad_run(scales):
    rng = np.random.default_rng(0)
    grads = {f"layers.{i}.weight": hist(f"grad_hist/layers.{i}.weight",
                                        [rng.standard_normal(500) * s for _ in range(6)])
             for i, s in enumerate(scales)}
    return make_run(signals=Signals(grad_hist=grads))


def test_first_layer_far_below_last_is_an_error():
    [h] = hits(_grad_run([1e-6, 1e-4, 1e-3, 1e-2]), "G101")
    assert h.severity == "error"
    assert h.subject == "layers.0.weight"
    assert h.evidence["last_layer"] == "layers.3.weight"
    assert h.evidence["ratio"] < 1e-3
    assert h.evidence["source"] == "grad_hist"


def test_ratio_between_thresholds_is_a_warning():
    [h] = hits(_grad_run([5e-5, 1e-3, 1e-2]), "G101")  # ratio 5e-3
    assert h.severity == "warning"


def test_balanced_gradients_are_fine():
    assert hits(_grad_run([2e-3, 3e-3, 5e-3, 1e-2]), "G101") == []  # ratio 0.2


def test_just_above_warning_ratio_is_fine():
    assert hits(_grad_run([1.1e-4, 1e-3, 1e-2]), "G101") == []  # ratio 1.1e-2


def test_all_gradients_tiny_is_an_error():
    [h] = hits(_grad_run([1e-9, 2e-9, 1e-8]), "G101")
    assert h.subject == "(all layers)"


def test_optimizer_state_is_used_without_histograms():
    from builders.rulekit import cnn_state, mem_checkpoint

    opt = {"kind": "adam", "grad_rms": {"conv1.weight": 1e-7, "conv2.weight": 1e-4, "fc.weight": 1e-2},
           "mapping": "shapes-verified"}
    run = make_run(checkpoints=[mem_checkpoint(cnn_state(), 100, optimizer=opt)])
    [h] = hits(run, "G101")
    assert h.evidence["source"] == "optimizer_state"
    assert h.subject == "conv1.weight"


def test_embedding_tables_are_not_the_first_layer():
    rng = np.random.default_rng(0)
    names_scales = [("embed.weight", 1e-7), ("encoder.0.weight", 2e-3), ("encoder.1.weight", 3e-3), ("head.weight", 1e-2)]
    grads = {n: hist(f"grad_hist/{n}", [rng.standard_normal(500) * s for _ in range(4)]) for n, s in names_scales}
    assert hits(make_run(signals=Signals(grad_hist=grads)), "G101") == []


def test_recurrent_weights_count_as_weights():
    rng = np.random.default_rng(0)
    names_scales = [("rnn.weight_ih_l0", 1e-7), ("rnn.weight_hh_l0", 1e-6), ("rnn.weight_ih_l1", 1e-4), ("head.weight", 1e-2)]
    grads = {n: hist(f"grad_hist/{n}", [rng.standard_normal(500) * s for _ in range(4)]) for n, s in names_scales}
    [h] = hits(make_run(signals=Signals(grad_hist=grads)), "G101")
    assert h.subject == "rnn.weight_ih_l0"


def test_only_lookup_tables_count_as_embeddings():
    from report_gen.facts.run import is_embedding_name

    assert is_embedding_name("embed.weight") and is_embedding_name("model.embed_tokens.weight")
    assert is_embedding_name("transformer.wte.weight")
    assert not is_embedding_name("patch_embed.proj.weight")  # a conv
    assert not is_embedding_name("time_embed.0.weight")  # an MLP


def _stack_run(block_scales, head=4.6e-2):
    """Optimizer-state gradient RMS of a 2-block transformer-like stack, a pooler and a classifier head."""
    from builders.rulekit import mem_checkpoint
    import torch

    roles = {"attention.self.query.weight": (32, 32), "attention.self.key.weight": (32, 32),
             "attention.output.dense.weight": (32, 32), "intermediate.dense.weight": (64, 32),
             "output.dense.weight": (32, 64)}
    state, grads = {}, {}
    for b, scale in enumerate(block_scales):
        for k, (role, shape) in enumerate(roles.items()):
            state[f"encoder.layer.{b}.{role}"] = torch.randn(shape)
            grads[f"encoder.layer.{b}.{role}"] = scale * (1 + 0.1 * k)
    state["pooler.dense.weight"], grads["pooler.dense.weight"] = torch.randn(32, 32), 3e-3
    state["classifier.weight"], grads["classifier.weight"] = torch.randn(2, 32), head
    opt = {"kind": "adamw", "grad_rms": grads, "mapping": "shapes-verified"}
    return make_run(checkpoints=[mem_checkpoint(state, 120, optimizer=opt)])


def test_a_stack_of_blocks_is_compared_block_to_block_not_against_the_head():
    # the healthy HF BERT fixture's numbers: blocks ~1e-4, classifier 4.6e-2 (ratio 0.002 to the head)
    assert hits(_stack_run([1.1e-4, 1.5e-4]), "G101") == []


def test_gradients_vanishing_along_the_stack_are_still_found():
    [h] = hits(_stack_run([1e-7, 1e-5, 1e-3, 2e-3]), "G101")
    assert (h.subject, h.evidence["last_layer"]) == ("encoder.layer.0", "encoder.layer.3")
    assert h.severity == "error" and h.evidence["ratio"] == pytest.approx(5e-5, rel=1e-6)


def test_real_hf_checkpoints_judge_vanishing_gradients_from_the_optimizer_state():
    from pathlib import Path
    from report_gen.readers.checkpoint import open_checkpoint

    real = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "hf"
    for case in ("bert-healthy-none/checkpoint-120", "gpt2-healthy-tensorboard/checkpoint-200"):
        run = make_run(checkpoints=[open_checkpoint(str(real / case))])
        assert "optimizer_state" in run.available and len(run.grad_estimates) >= 28
        assert hits(run, "G101") == [] and hits(run, "G102") == []
