import torch

from builders.rulekit import hits, make_run, mem_checkpoint


def _bn(n_off):
    g = torch.ones(32)
    g[:n_off] = 1e-5
    return make_run(checkpoints=[mem_checkpoint({"conv.weight": torch.randn(32, 16, 3, 3) * 0.1, "bn.weight": g,
                                                 "bn.bias": torch.zeros(32), "bn.running_mean": torch.zeros(32),
                                                 "bn.running_var": torch.ones(32)}, 1)])


def test_batchnorm_scales_near_zero():
    [h] = hits(_bn(8), "K104")
    assert h.subject == "bn.weight" and h.evidence["share"] == 0.25


def test_few_off_channels_are_fine():
    assert hits(_bn(2), "K104") == []  # 6% < 10%
