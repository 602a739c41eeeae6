"""Facts about one weight tensor: pure functions, numbers only (verdicts belong to rules).

Sums are accumulated in float64 over chunks of the flattened float32 tensor, so a 64 MB tensor never
needs a 128 MB float64 copy. Moments are computed over the finite values; NaN/Inf are counted apart.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from report_gen.facts import DUP_CORR
from report_gen.numeric import CHUNK as _CHUNK
from report_gen.numeric import chunks as _chunks
from report_gen.numeric import float64_sum

_SMALL_1D = 1 << 16  # 1-D tensors up to this size keep their values (per-channel facts)
_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_QUANTILE_SAMPLE = 1 << 20
_CORR_UNITS = 256
_CORR_COLUMNS = 1 << 16
_EXACT_SVD_MIN_DIM = 512  # exact singular values (and alpha) when min(out, in) is at most this
_SPECTRAL_MAX_NUMEL = 1 << 26  # no spectral facts (stable rank, alpha) above 64M elements
_POWER_ITERATIONS = 100
_POWER_TOLERANCE = 1e-6
_ALPHA_MIN_DIM = 16


@dataclass
class WeightStats:
    """Statistics of one tensor (see the module docstring for numerical conventions).

    abs_quantiles: keys "0.01" ... "0.99" of |w|, numpy "linear" quantiles, exact up to 2**20
    values, else on a deterministic (seeded) sample of 2**20 values. skew/kurtosis are population
    moments (kurtosis is excess); bimodality is Sarle's coefficient. Unit facts exist for ndim >= 2
    on the [out, -1] matrix; unit_max_corr covers up to 256 evenly spaced units; kernel_diversity
    is std(unit_mean) with ddof=1 (torch's default, as in the seed tutorial).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    mean: float
    std: float
    absmax: float
    l2: float
    rms: float
    nan_count: int
    inf_count: int
    zero_frac: float
    abs_quantiles: dict[str, float]
    skew: float
    kurtosis: float
    bimodality: float
    unit_absmax: np.ndarray | None = None
    unit_mean: np.ndarray | None = None
    kernel_diversity: float | None = None
    unit_max_corr: np.ndarray | None = None
    corr_topk_mean: float | None = None
    dup_family_share: float | None = None  # largest group of sampled units linked by |corr| > DUP_CORR, / units
    stable_rank: float | None = None
    alpha: float | None = None
    values: np.ndarray | None = None  # the values themselves, for small 1-D tensors (norm scales, biases)
    min: float = math.nan  # signed extremes of the finite values
    max: float = math.nan
    at_min_frac: float = math.nan  # share of all values exactly equal to min / to max (ties at a bound)
    at_max_frac: float = math.nan


def _central_moments(x: torch.Tensor, mean: float) -> tuple[float, float, float]:
    """(m2, m3, m4) population central moments, one chunked pass."""
    s2 = s3 = s4 = 0.0
    for chunk in _chunks(x):
        d = chunk.to(torch.float64) - mean
        d2 = d * d
        s2 += float(d2.sum())
        s3 += float((d2 * d).sum())
        s4 += float((d2 * d2).sum())
    n = max(x.numel(), 1)
    return s2 / n, s3 / n, s4 / n


def _count(t: torch.Tensor, predicate) -> int:
    return sum(int(predicate(chunk).sum()) for chunk in _chunks(t))


def _abs_quantiles(x: torch.Tensor) -> dict[str, float]:
    flat = x.reshape(-1)
    if flat.numel() == 0:
        return {str(q): math.nan for q in _QUANTILES}
    if flat.numel() > _QUANTILE_SAMPLE:
        generator = torch.Generator().manual_seed(0)
        flat = flat[torch.randint(flat.numel(), (_QUANTILE_SAMPLE,), generator=generator)]
    values = np.quantile(flat.abs().to(torch.float64).numpy(), _QUANTILES)
    return {str(q): float(v) for q, v in zip(_QUANTILES, values)}


def _shape_moments(n: int, m2: float, m3: float, m4: float) -> tuple[float, float, float]:
    """(skew, excess kurtosis, Sarle's bimodality), nan when n < 4 or the variance is 0."""
    if n < 4 or m2 <= 0.0:
        return math.nan, math.nan, math.nan
    skew = m3 / m2**1.5
    kurt = m4 / m2**2 - 3.0
    bimodality = (skew**2 + 1.0) / (kurt + 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
    return skew, kurt, bimodality


def _row_absmax_mean(w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-row max |w| and float64 mean of a 2-D matrix, in row blocks of about _CHUNK elements."""
    rows_per_block = max(1, _CHUNK // max(w.shape[1], 1))
    absmax, mean = [], []
    for start in range(0, w.shape[0], rows_per_block):
        block = w[start:start + rows_per_block]
        absmax.append(block.abs().amax(dim=1).to(torch.float64) if block.shape[1] else
                      torch.zeros(block.shape[0], dtype=torch.float64))
        mean.append(block.to(torch.float64).mean(dim=1))
    return torch.cat(absmax).numpy(), torch.cat(mean).numpy()


def _unit_correlations(w: torch.Tensor) -> tuple[np.ndarray | None, float | None, float | None]:
    """(max |corr| of each sampled unit with any other, mean of the top-k |corr| pairs, share of the
    sampled units in the largest family of near-duplicates)."""
    out, width = w.shape
    if out < 2 or width < 2:
        return None, None, None
    rows = np.unique(np.linspace(0, out - 1, min(out, _CORR_UNITS)).round().astype(np.int64))
    sample = w[torch.from_numpy(rows)]
    if width > _CORR_COLUMNS:
        cols = np.linspace(0, width - 1, _CORR_COLUMNS).round().astype(np.int64)
        sample = sample[:, torch.from_numpy(cols)]
    z = sample.to(torch.float64)
    z = z - z.mean(dim=1, keepdim=True)
    norms = z.norm(dim=1)
    valid = (norms > 0) & torch.isfinite(norms)
    z = z / torch.where(valid, norms, torch.ones_like(norms)).unsqueeze(1)
    zn = z.numpy()
    corr = np.abs(zn @ zn.T)  # numpy: torch's thread pool makes small matmuls ~1000x slower on a busy machine
    mask = valid.numpy()
    corr[~mask, :] = np.nan
    corr[:, ~mask] = np.nan
    np.fill_diagonal(corr, np.nan)
    with np.errstate(all="ignore"):
        has_value = ~np.all(np.isnan(corr), axis=1)
        unit_max = np.full(len(rows), np.nan)
        unit_max[has_value] = np.nanmax(corr[has_value], axis=1)
    pairs = corr[np.triu_indices(len(rows), k=1)]
    pairs = pairs[~np.isnan(pairs)]
    topk = float(np.sort(pairs)[-min(10, pairs.size):].mean()) if pairs.size else math.nan
    return unit_max, topk, _largest_family(np.nan_to_num(corr) > DUP_CORR) / len(rows)


def _largest_family(adjacent: np.ndarray) -> int:
    """Size of the largest connected group in a boolean adjacency matrix (breadth-first search)."""
    seen = np.zeros(len(adjacent), dtype=bool)
    best = 0
    for start in range(len(adjacent)):
        if seen[start]:
            continue
        frontier, size = [start], 0
        seen[start] = True
        while frontier:
            node = frontier.pop()
            size += 1
            nxt = np.flatnonzero(adjacent[node] & ~seen)
            seen[nxt] = True
            frontier.extend(nxt.tolist())
        best = max(best, size)
    return best


def _top_singular_value(w: torch.Tensor) -> float:
    """Largest singular value by power iteration on WᵀW from a seeded start (a lower bound that
    converges quickly when the top of the spectrum is separated)."""
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(w.shape[1], generator=generator, dtype=torch.float32)
    v /= v.norm()
    sigma = 0.0
    for _ in range(_POWER_ITERATIONS):
        u = w @ v
        previous, sigma = sigma, float(u.norm())
        if sigma == 0.0 or abs(sigma - previous) <= _POWER_TOLERANCE * sigma:
            return sigma
        v = w.T @ (u / sigma)
        v /= v.norm()
    return sigma


def _hill_alpha(sv: np.ndarray) -> float | None:
    """Power-law exponent of the eigenvalue tail (λ = σ²; Hill estimator on the top half)."""
    eig = np.sort(sv.astype(np.float64) ** 2)[::-1]
    k = eig.size // 2
    if eig.size < _ALPHA_MIN_DIM or k < 2 or eig[k - 1] <= 0:
        return None
    logs = np.log(eig[:k] / eig[k - 1]).sum()
    return float(1.0 + k / logs) if logs > 0 else None


def _spectral(w: torch.Tensor, frob_sq: float) -> tuple[float | None, float | None]:
    """(stable rank ||W||_F² / ||W||_2², alpha); exact SVD for small matrices, else power iteration."""
    if w.numel() > _SPECTRAL_MAX_NUMEL or w.numel() == 0 or frob_sq <= 0:
        return None, None
    if min(w.shape) <= _EXACT_SVD_MIN_DIM:
        sv = torch.linalg.svdvals(w.to(torch.float64)).numpy()
        return frob_sq / float(sv[0]) ** 2, _hill_alpha(sv)
    sigma = _top_singular_value(w)
    return (frob_sq / sigma**2 if sigma > 0 else None), None


def weight_stats(name: str, t: torch.Tensor) -> WeightStats:
    """All statistics of one tensor (float32 facts whatever the stored dtype)."""
    dtype = str(t.dtype).replace("torch.", "")
    t = t.detach().to(torch.float32)
    numel = t.numel()
    nan_count = _count(t, torch.isnan)
    inf_count = _count(t, torch.isinf)
    x = t[torch.isfinite(t)] if nan_count or inf_count else t
    n = x.numel()
    mean = float64_sum(x) / n if n else math.nan
    m2, m3, m4 = _central_moments(x, mean) if n else (math.nan,) * 3
    skew, kurt, bimodality = _shape_moments(n, m2, m3, m4)
    sum_sq = n * (m2 + mean * mean) if n else 0.0
    lo_hi = torch.aminmax(x) if n else None
    stats = WeightStats(
        name=name, shape=tuple(t.shape), dtype=dtype, numel=numel, mean=mean,
        std=math.sqrt(m2) if n else math.nan,
        absmax=max(-float(lo_hi.min), float(lo_hi.max)) if n else math.nan,
        l2=math.sqrt(sum_sq), rms=math.sqrt(sum_sq / n) if n else math.nan,
        nan_count=nan_count, inf_count=inf_count,
        zero_frac=_count(t, lambda c: c.abs() <= 1e-12) / numel if numel else math.nan,
        abs_quantiles=_abs_quantiles(x), skew=skew, kurtosis=kurt, bimodality=bimodality)
    if n:
        lo, hi = float(lo_hi.min), float(lo_hi.max)
        stats.min, stats.max = lo, hi
        stats.at_min_frac = _count(x, lambda c: c == lo) / numel
        stats.at_max_frac = _count(x, lambda c: c == hi) / numel
    if t.ndim >= 2 and numel:
        _add_unit_facts(stats, t.reshape(t.shape[0], -1), sum_sq, finite=not (nan_count or inf_count))
    elif t.ndim == 1 and numel <= _SMALL_1D:
        stats.values = t.numpy().copy()
    return stats


def _add_unit_facts(stats: WeightStats, w: torch.Tensor, frob_sq: float, finite: bool) -> None:
    stats.unit_absmax, stats.unit_mean = _row_absmax_mean(w)
    stats.kernel_diversity = float(np.std(stats.unit_mean, ddof=1)) if w.shape[0] > 1 else math.nan
    stats.unit_max_corr, stats.corr_topk_mean, stats.dup_family_share = _unit_correlations(w)
    if finite:
        stats.stable_rank, stats.alpha = _spectral(w, frob_sq)


_NORM_MODULE = re.compile(r"^(bn|ln|gn)(\d+|_\w+)?$|norm", re.IGNORECASE)


def is_norm_scale(name: str, shape: tuple[int, ...] | torch.Size,
                  sibling_shapes: Mapping[str, tuple[int, ...]] | None = None) -> bool:
    """True for the scale (`.weight`) of a BatchNorm/LayerNorm/GroupNorm layer.

    Recognised by a 1-D shape and either the module name (bn1, ln_f, norm, layer_norm, ...) or,
    when `sibling_shapes` (name -> shape of the other tensors) is given, a `running_mean` of the
    same shape beside it (e.g. torchvision's `downsample.1.weight`).
    """
    if len(tuple(shape)) != 1 or not name.endswith("weight"):
        return False
    module = name[: -len("weight")].rstrip("._/")
    last = re.split(r"[./]", module)[-1] if module else ""
    if _NORM_MODULE.search(last):
        return True
    return bool(sibling_shapes) and tuple(sibling_shapes.get(f"{module}.running_mean", ())) == tuple(shape)
