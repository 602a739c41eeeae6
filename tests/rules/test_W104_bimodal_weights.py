import numpy as np
import torch

from builders.rulekit import hist, hits, make_run, mem_checkpoint
from report_gen.readers.signals import Signals


def _bimodal(n, sep, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(-sep, 0.1, n // 2), rng.normal(sep, 0.1, n - n // 2)])


def test_two_separated_modes_in_a_checkpoint():
    w = torch.tensor(_bimodal(4096, 1.0), dtype=torch.float32).view(64, 64)
    [h] = hits(make_run(checkpoints=[mem_checkpoint({"fc.weight": w}, 1)]), "W104")
    assert h.evidence["bimodality"] > 0.75


def test_gaussian_weights_are_not_bimodal():
    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    assert hits(make_run(checkpoints=[mem_checkpoint({"fc.weight": w}, 1)]), "W104") == []


def test_two_modes_in_the_last_histogram():
    h = hist("weights/fc.weight", [np.random.default_rng(1).normal(0, 1, 4096), _bimodal(4096, 1.0)])
    [f] = hits(make_run(signals=Signals(weight_hist={"fc.weight": h})), "W104")
    assert f.evidence["modes"] == 2
    h2 = hist("weights/fc.weight", [np.random.default_rng(2).normal(0, 1, 4096)] * 2)
    assert hits(make_run(signals=Signals(weight_hist={"fc.weight": h2})), "W104") == []
