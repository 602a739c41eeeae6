import numpy as np
import torch

from builders.rulekit import cnn_state, hist, hits, make_run, mem_checkpoint
from report_gen.readers.signals import Signals


def test_nan_in_a_later_checkpoint_is_reported_with_its_step():
    a, b = cnn_state(0), cnn_state(1)
    b["fc.weight"][0, 0] = float("nan")
    run = make_run(checkpoints=[mem_checkpoint(a, 10), mem_checkpoint(b, 20)])
    [h] = hits(run, "W101")
    assert h.subject == "fc.weight"
    assert h.evidence["nan"] == 1 and h.evidence["step"] == 20


def test_finite_checkpoints_are_fine():
    run = make_run(checkpoints=[mem_checkpoint(cnn_state(0), 10), mem_checkpoint(cnn_state(1), 20)])
    assert hits(run, "W101") == []


def test_nonfinite_weight_histogram_without_checkpoints():
    x = np.random.default_rng(0).standard_normal(100)
    h = hist("weights/fc.weight", [x, x, x], steps=[0, 5, 10])
    h.max[2] = np.inf
    [f] = hits(make_run(signals=Signals(weight_hist={"fc.weight": h})), "W101")
    assert f.evidence["first_step"] == 10
    h2 = hist("weights/fc.weight", [x, x, x])
    assert hits(make_run(signals=Signals(weight_hist={"fc.weight": h2})), "W101") == []


def test_nan_everywhere_is_one_finding_naming_the_first_tensor():
    a, b = cnn_state(0), {k: torch.full_like(v, float("nan")) for k, v in cnn_state(1).items()}
    [h] = hits(make_run(checkpoints=[mem_checkpoint(a, 10), mem_checkpoint(b, 20)]), "W101")
    assert h.subject == "conv1.weight"
    assert h.evidence["tensors_affected"] == 6
