import numpy as np

from rulekit import hist, hits, make_run
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
    from rulekit import cnn_state, mem_checkpoint

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
