"""Activation and attention facts checked against hand-computed numpy."""
import math

import numpy as np
import pytest
import torch

from report_gen.facts.activations import (activation_kind, activation_stats, attention_stats,
                                          even_indices, unit_dim)


def _np_corr_facts(units_by_cells: np.ndarray) -> tuple[float, float]:
    keep = units_by_cells.std(axis=1) > 0
    corr = np.abs(np.corrcoef(units_by_cells[keep]))
    pairs = corr[np.triu_indices(corr.shape[0], k=1)]
    return pairs.mean(), (pairs > 0.9).mean()


def test_basic_statistics_match_numpy_for_a_conv_output():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 4, 6)).astype(np.float32)
    s = activation_stats("c", "Conv2d", torch.from_numpy(x))
    assert (s.kind, s.shape, s.units, s.cells) == ("linear", (5, 3, 4, 6), 3, 5 * 4 * 6)
    assert s.mean == pytest.approx(x.mean(), rel=1e-5)
    assert s.std == pytest.approx(x.std(ddof=1), rel=1e-5)
    assert (s.min, s.max) == (pytest.approx(x.min()), pytest.approx(x.max()))
    assert s.abs_mean == pytest.approx(np.abs(x).mean(), rel=1e-5)
    flat = x.reshape(5, -1)
    assert s.inter_batch_var == pytest.approx(flat.var(axis=0, ddof=1).mean(), rel=1e-5)
    assert s.intra_batch_var == pytest.approx(flat.var(axis=1, ddof=1).mean(), rel=1e-5)
    per_channel = x.transpose(1, 0, 2, 3).reshape(3, -1)
    corr_mean, corr_high = _np_corr_facts(per_channel)
    assert s.channel_corr_mean == pytest.approx(corr_mean, rel=1e-6)
    assert s.channel_corr_high_frac == pytest.approx(corr_high)
    assert math.isnan(s.saturated_frac)


def test_dead_units_and_active_fraction_for_relu():
    x = np.zeros((4, 3, 10, 10), dtype=np.float32)   # 400 cells per channel
    x[:, 0] = 1.0                                     # channel 0 always active
    x[0, 1, 0, :3] = 2.0                              # channel 1 active in 3 of 400 cells (< 1%)
    x[:, 2, :, :1] = 0.5                              # channel 2 active in 40 of 400 cells
    s = activation_stats("r", "ReLU", torch.from_numpy(x))
    assert s.kind == "relu-like"
    np.testing.assert_allclose(s.unit_active_frac, [1.0, 3 / 400, 40 / 400])
    assert s.dead_unit_frac == pytest.approx(1 / 3)


def test_negative_values_count_as_inactive_only_for_relu_like():
    x = torch.full((8, 2), -3.0)
    assert activation_stats("r", "ReLU", x).dead_unit_frac == 1.0
    assert activation_stats("l", "Linear", x).dead_unit_frac == 0.0


def test_saturation_for_sigmoid_and_tanh():
    sig = torch.tensor([[0.001, 0.5, 0.995, 0.2]])
    assert activation_stats("s", "Sigmoid", sig.repeat(2, 1)).saturated_frac == pytest.approx(0.5)
    tanh = torch.tensor([[-0.999, 0.0, 0.5, 0.995, 0.98]])
    assert activation_stats("t", "Tanh", tanh.repeat(3, 1)).saturated_frac == pytest.approx(0.4)


def test_spatial_concentration_and_maps():
    x = np.ones((2, 3, 10, 10), dtype=np.float32)
    x[0, 0, 0, :5] = 96.0        # 5 of 100 positions (the top 5%) hold 480 of 575
    s = activation_stats("c", "Conv2d", torch.from_numpy(x), max_maps=2)
    expected = np.mean([480 / 575] + [5 / 100] * 5)
    assert s.spatial_concentration == pytest.approx(expected, rel=1e-6)
    assert s.maps.shape == (2, 10, 10) and s.maps.dtype == np.float32
    np.testing.assert_array_equal(s.maps, x[0, :2])


def test_large_maps_are_pooled_and_non_spatial_outputs_have_none():
    big = activation_stats("c", "Conv2d", torch.rand(1, 6, 128, 96))
    assert big.maps.shape == (4, 64, 64)
    flat = activation_stats("f", "Linear", torch.rand(4, 7))
    assert flat.maps is None and flat.spatial_concentration is None and flat.units == 7


def test_units_of_sequences_are_the_last_dim_but_conv1d_uses_channels():
    assert unit_dim((2, 5, 16), "GELU") == 2
    assert unit_dim((2, 5, 16), "Conv1d") == 1
    seq = activation_stats("g", "GELU", torch.rand(2, 5, 16))
    assert (seq.units, seq.cells) == (16, 10)


def test_correlation_detects_duplicate_channels_and_ignores_constant_ones():
    base = torch.randn(6, 1, 5, 5)
    x = torch.cat([base, 2 * base + 1, -base, torch.zeros_like(base)], dim=1)
    s = activation_stats("c", "Conv2d", x)
    assert s.channel_corr_mean == pytest.approx(1.0)
    assert s.channel_corr_high_frac == pytest.approx(1.0)


def test_correlation_is_nan_when_undefined():
    assert math.isnan(activation_stats("c", "Linear", torch.randn(2, 4)).channel_corr_mean)  # 2 cells
    assert math.isnan(activation_stats("c", "Linear", torch.randn(8, 1)).channel_corr_mean)  # 1 unit
    one = activation_stats("c", "Linear", torch.randn(1, 4))
    assert math.isnan(one.inter_batch_var) and not math.isnan(one.intra_batch_var)


def test_empty_or_1d_outputs_are_rejected():
    with pytest.raises(ValueError):
        activation_stats("x", "ReLU", torch.zeros(0, 3))
    with pytest.raises(ValueError):
        activation_stats("x", "ReLU", torch.zeros(5))


def test_kinds():
    assert [activation_kind(t) for t in ["LeakyReLU", "Sigmoid", "Tanh", "Softmax", "Linear", "Dropout"]] == [
        "relu-like", "sigmoid", "tanh", "softmax", "linear", "other"]


def test_attention_entropy_and_max_weight_against_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 2, 4, 5))
    w = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    s = attention_stats("a", torch.from_numpy(w))
    expected = (-(w * np.log(w)).sum(-1) / np.log(5)).mean(axis=(0, 2))
    np.testing.assert_allclose(s.entropy, expected, rtol=1e-5)
    np.testing.assert_allclose(s.max_weight, w.max(-1).mean(axis=(0, 2)), rtol=1e-6)
    assert (s.heads, s.seq_len, s.maps.shape) == (2, 4, (2, 4, 5))


def test_attention_extremes_and_masked_zeros():
    uniform = torch.full((1, 1, 3, 4), 0.25)
    assert attention_stats("u", uniform).entropy[0] == pytest.approx(1.0)
    one_hot = torch.eye(4)[None, None, :3]          # zeros contribute 0 (x log x -> 0)
    s = attention_stats("o", one_hot)
    assert s.entropy[0] == pytest.approx(0.0) and s.max_weight[0] == pytest.approx(1.0)
    assert attention_stats("avg", torch.full((2, 3, 4), 0.25)).heads == 1


def test_even_indices_keep_first_and_last():
    assert even_indices(3, 6).tolist() == [0, 1, 2]
    picked = even_indices(10, 4).tolist()
    assert picked[0] == 0 and picked[-1] == 9 and len(picked) == 4
