"""weight_stats against hand-computed numpy, and is_norm_scale."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from report_gen.facts import weights as wf
from report_gen.facts.weights import is_norm_scale, weight_stats


def _numpy_moments(x: np.ndarray) -> dict[str, float]:
    x = x.astype(np.float64).ravel()
    m = x.mean()
    d = x - m
    m2, m3, m4 = (d**2).mean(), (d**3).mean(), (d**4).mean()
    n = x.size
    skew, kurt = m3 / m2**1.5, m4 / m2**2 - 3
    return {"mean": m, "std": math.sqrt(m2), "absmax": np.abs(x).max(), "l2": np.sqrt((x**2).sum()),
            "rms": np.sqrt((x**2).mean()), "skew": skew, "kurtosis": kurt,
            "bimodality": (skew**2 + 1) / (kurt + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))}


def test_moments_match_numpy():
    x = torch.randn(5, 3, 2, 2, generator=torch.Generator().manual_seed(1)) * 0.3 + 0.1
    s = weight_stats("conv.weight", x)
    for key, value in _numpy_moments(x.numpy()).items():
        assert getattr(s, key) == pytest.approx(value, rel=1e-9, abs=1e-12), key
    q = np.quantile(np.abs(x.numpy().astype(np.float64)), [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
    assert list(s.abs_quantiles) == ["0.01", "0.05", "0.25", "0.5", "0.75", "0.95", "0.99"]
    np.testing.assert_allclose(list(s.abs_quantiles.values()), q, rtol=1e-12)
    assert (s.shape, s.numel, s.dtype, s.nan_count, s.inf_count) == ((5, 3, 2, 2), 60, "float32", 0, 0)


def test_unit_facts_match_numpy():
    w = torch.randn(6, 2, 3, 3, generator=torch.Generator().manual_seed(2))
    w[4] = 0.0  # a dead kernel
    w[5] = 2 * w[0] + 1  # perfectly correlated with unit 0
    s = weight_stats("conv.weight", w)
    flat = w.numpy().reshape(6, -1).astype(np.float64)
    np.testing.assert_allclose(s.unit_absmax, np.abs(flat).max(axis=1), rtol=1e-7)
    np.testing.assert_allclose(s.unit_mean, flat.mean(axis=1), rtol=1e-9)
    assert s.kernel_diversity == pytest.approx(np.std(flat.mean(axis=1), ddof=1), rel=1e-9)
    corr = np.abs(np.corrcoef(np.delete(flat, 4, axis=0)))
    np.fill_diagonal(corr, np.nan)
    expected = np.nanmax(corr, axis=1)
    np.testing.assert_allclose(np.delete(s.unit_max_corr, 4), expected, rtol=1e-9)
    assert math.isnan(s.unit_max_corr[4])  # a constant kernel has no correlation
    pairs = corr[np.triu_indices(5, k=1)]
    assert s.corr_topk_mean == pytest.approx(np.sort(pairs)[-10:].mean(), rel=1e-9)
    assert s.unit_max_corr[0] == pytest.approx(1.0)
    assert s.zero_frac == pytest.approx(18 / 108)
    sv = np.linalg.svd(flat, compute_uv=False)
    assert s.stable_rank == pytest.approx((flat**2).sum() / sv[0] ** 2, rel=1e-6)


def test_stable_rank_by_power_iteration_for_large_matrices(monkeypatch):
    monkeypatch.setattr(wf, "_EXACT_SVD_MIN_DIM", 4)
    w = torch.randn(40, 30, generator=torch.Generator().manual_seed(3))
    w += torch.outer(torch.ones(40), torch.ones(30))  # a clear top singular value
    s = weight_stats("fc.weight", w)
    sv = np.linalg.svd(w.double().numpy(), compute_uv=False)
    assert s.stable_rank == pytest.approx((sv**2).sum() / sv[0] ** 2, rel=1e-4)
    assert s.alpha is None


def test_alpha_is_a_hill_estimate_on_the_top_half():
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(4))
    s = weight_stats("fc.weight", w)
    eig = np.sort(np.linalg.svd(w.double().numpy(), compute_uv=False) ** 2)[::-1]
    k = 16
    assert s.alpha == pytest.approx(1 + k / np.log(eig[:k] / eig[k - 1]).sum(), rel=1e-6)


def test_nan_inf_and_zeros_are_counted_and_moments_use_finite_values():
    x = torch.tensor([1.0, 2.0, 0.0, float("nan"), float("inf"), 3.0, 0.0, -1.0])
    s = weight_stats("b", x)
    finite = np.array([1.0, 2.0, 0.0, 3.0, 0.0, -1.0])
    assert (s.nan_count, s.inf_count) == (1, 1)
    assert s.zero_frac == pytest.approx(2 / 8)
    assert s.mean == pytest.approx(finite.mean()) and s.absmax == 3.0
    assert s.unit_absmax is None and s.stable_rank is None


def test_degenerate_shapes():
    s = weight_stats("c", torch.full((3,), 0.5))
    assert s.std == 0 and math.isnan(s.skew) and math.isnan(s.kurtosis) and math.isnan(s.bimodality)
    one = weight_stats("fc.weight", torch.ones(1, 5))
    assert math.isnan(one.kernel_diversity) and one.unit_max_corr is None


def test_half_precision_input_and_float64_accumulation():
    x = torch.full((3_000_001,), 0.1, dtype=torch.float16)
    s = weight_stats("big", x)
    assert s.dtype == "float16"
    assert s.mean == pytest.approx(float(torch.tensor(0.1, dtype=torch.float16)), rel=1e-12)


def test_chunked_sums_equal_numpy(monkeypatch):
    monkeypatch.setattr(wf, "_CHUNK", 7)
    x = torch.randn(101, generator=torch.Generator().manual_seed(5))
    assert wf.float64_sum(x, power=2) == pytest.approx(float((x.double() ** 2).sum()), rel=1e-12)
    s = weight_stats("x", x)
    assert s.std == pytest.approx(x.double().std(unbiased=False).item(), rel=1e-12)


def test_quantiles_on_a_deterministic_sample(monkeypatch):
    monkeypatch.setattr(wf, "_QUANTILE_SAMPLE", 1000)
    x = torch.rand(50_000, generator=torch.Generator().manual_seed(6))
    a, b = weight_stats("x", x), weight_stats("x", x)
    assert a.abs_quantiles == b.abs_quantiles
    assert a.abs_quantiles["0.5"] == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("name,shape,siblings,expected", [
    ("layer1.0.bn1.weight", (64,), None, True),
    ("transformer.ln_f.weight", (768,), None, True),
    ("encoder.layers.0.self_attn_layer_norm.weight", (16,), None, True),
    ("blocks.0.norm1.weight", (16,), None, True),
    ("layer1.0.downsample.1.weight", (64,), {"layer1.0.downsample.1.running_mean": (64,)}, True),
    ("layer1.0.downsample.1.weight", (64,), None, False),
    ("layer1.0.bn1.bias", (64,), None, False),
    ("layer1.0.conv1.weight", (64, 3, 3, 3), None, False),
    ("fc.weight", (10,), None, False),
])
def test_is_norm_scale(name, shape, siblings, expected):
    assert is_norm_scale(name, shape, siblings) is expected


def test_largest_near_duplicate_family():
    from report_gen.facts.weights import weight_stats

    torch.manual_seed(0)
    base = torch.randn(64)
    w = torch.randn(10, 64)
    for i in (2, 5, 7):  # one family of 4: 0, 2, 5, 7
        w[i] = base * (i + 1)
    w[0] = base
    w[9] = w[8] * 2  # a separate pair
    s = weight_stats("x.weight", w)
    assert s.dup_family_share == pytest.approx(0.4)


@pytest.mark.parametrize("shape,scale,offset", [((600, 300), 0.02, 0.0), ((3, 70_000), 1.0, 5.0),
                                                ((200_000,), 0.5, -0.3), ((128, 64, 3, 3), 0.1, 0.01),
                                                ((1, 300_000), 2.0, 0.0)])
def test_fast_block_pass_agrees_with_the_exact_float64_pass(shape, scale, offset):
    """Large tensors go through the float32 block pass; it must agree with the float64 reference."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(*shape, generator=g) ** 3 * scale + offset  # skewed, heavy-tailed
    x.view(-1)[::97] = 0.0
    fast = wf._fast_stats("w", x.float(), "float32")
    exact = wf._exact_stats("w", x.float(), "float32")
    assert fast is not None and x.numel() > wf._EXACT_MAX
    for key in ("mean", "std", "absmax", "l2", "rms", "zero_frac"):
        assert getattr(fast, key) == pytest.approx(getattr(exact, key), rel=1e-5, abs=1e-9), key
    for key in ("skew", "kurtosis", "bimodality"):  # third/fourth moments: float32 blocks, documented 1e-4
        assert getattr(fast, key) == pytest.approx(getattr(exact, key), rel=1e-4, abs=1e-7), key
    if x.ndim >= 2:
        np.testing.assert_allclose(fast.unit_absmax, exact.unit_absmax, rtol=1e-7)
        np.testing.assert_allclose(fast.unit_mean, exact.unit_mean, rtol=1e-5, atol=1e-9)
        assert fast.kernel_diversity == pytest.approx(exact.kernel_diversity, rel=1e-4, nan_ok=True)


@pytest.mark.parametrize("shape", [(600, 300), (200_000,), (3, 700_000)])
def test_fast_pass_extremes_and_ties_at_them_match_the_exact_pass(shape):
    """Signed min/max and the share of values sitting on them (clamped or ReLU-cut weights) from the block
    pass, ties spread over many blocks, equal to the float64 pass."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(*shape, generator=g) * 0.1).clamp(-0.05, 0.12)  # ties at both bounds, in every block
    x.view(-1)[-1] = -0.07  # one lower value in the last block: the ties counted before it no longer count
    fast = wf._fast_stats("w", x, "float32")
    exact = wf._exact_stats("w", x, "float32")
    assert fast is not None
    for key in ("min", "max", "at_min_frac", "at_max_frac"):
        assert getattr(fast, key) == getattr(exact, key), key
    assert fast.min == pytest.approx(-0.07) and fast.at_min_frac == 1 / x.numel()
    assert fast.at_max_frac == pytest.approx(float((x == x.max()).double().mean()))


def test_fast_pass_hands_nonfinite_and_overflow_to_the_exact_pass():
    x = torch.randn(100_000)
    x[12345] = float("nan")
    s = weight_stats("w", x)
    assert (s.nan_count, s.inf_count) == (1, 0) and math.isfinite(s.mean)
    big = torch.randn(100_000) * 1e10  # d^4 overflows float32
    s = weight_stats("w", big)
    assert math.isfinite(s.kurtosis) and s.std == pytest.approx(big.double().std(unbiased=False).item(), rel=1e-9)


def test_expensive_facts_are_computed_only_when_read():
    w = torch.randn(64, 48, generator=torch.Generator().manual_seed(8))
    calls = []

    def source():
        calls.append(1)
        return w

    s = weight_stats("fc.weight", w, source=source)
    assert not calls and not s.has("correlations") and not s.has("spectrum") and not s.has("quantiles")
    reference = weight_stats("fc.weight", w, eager=("correlations", "spectrum", "quantiles"))
    assert s.unit_max_corr is not None and len(calls) == 1 and s.has("correlations")
    np.testing.assert_array_equal(s.unit_max_corr, reference.unit_max_corr)
    assert s.dup_family_share == reference.dup_family_share and len(calls) == 1  # the group is computed once
    assert s.stable_rank == pytest.approx(reference.stable_rank) and len(calls) == 2
    assert s.abs_quantiles == reference.abs_quantiles and len(calls) == 3


def test_eager_groups_use_the_tensor_at_hand_and_pickling_drops_the_loader():
    import pickle

    w = torch.randn(32, 16)
    s = weight_stats("fc.weight", w, source=lambda: (_ for _ in ()).throw(AssertionError("reloaded")),
                     eager=("correlations",))
    assert s.has("correlations") and s.corr_topk_mean is not None
    back = pickle.loads(pickle.dumps(s))
    assert back.source is None and back.corr_topk_mean == s.corr_topk_mean
    assert back.stable_rank is None  # nothing to reload from: no fact, no error


def test_block_power_iteration_bound_on_a_large_matrix(monkeypatch):
    monkeypatch.setattr(wf, "_EXACT_SVD_MIN_DIM", 8)
    g = torch.Generator().manual_seed(9)
    u, v = torch.randn(300, 1, generator=g), torch.randn(1, 200, generator=g)
    w = torch.randn(300, 200, generator=g) + 0.5 * u @ v
    sv = np.linalg.svd(w.double().numpy(), compute_uv=False)
    sigma = wf._top_singular_value(w)
    assert sigma <= sv[0] * (1 + 1e-6) and sigma == pytest.approx(sv[0], rel=1e-3)
