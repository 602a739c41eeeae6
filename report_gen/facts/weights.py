"""Facts about one weight tensor: pure functions, numbers only (verdicts belong to rules).

Cheap facts (moments, extremes, zeros, per-unit max |w| and mean) come from ONE pass over the tensor
when it is read. Small tensors (up to 4,096 values) are summed in float64 exactly as before; larger
float32 tensors are processed in blocks of 2**18 values: each block is summed in float32 by torch
(cascade summation) around a shift near the mean, and the block sums are accumulated in float64, so
without a float64 copy of anything mean/std/RMS stay within 1e-5 relative of the float64 pass and
skew/kurtosis/bimodality within 1e-4 (tests/facts/test_weights.py checks both). NaN/Inf (detected
from the sums) send the tensor down the exact float64 path, which counts them and uses the finite
values.

Expensive facts are computed only when read (`WeightStats` properties), from the tensor reloaded
through `source`, and in a bounded form:

- quantiles of |w| (`abs_quantiles`): exact up to 65,536 values, else on a seeded sample of 65,536:
  the rank of each quantile is then within +-3 sqrt(p(1-p)/n) <= 0.6 % of the exact one (3 sigma);
- unit correlations (`unit_max_corr`, `corr_topk_mean`, `dup_family_share`): up to 256 evenly spaced
  units over up to 1,024 evenly spaced columns; a correlation estimated from m columns has a
  standard error of about (1 - r^2)/sqrt(m), 0.006 at |r| = 0.9 (the duplicate level) for m = 1,024;
- spectrum (`stable_rank`, `alpha`): exact singular values when min(out, in) <= 512, else the top
  singular value from a seeded block power iteration (block of 4, at most 30 steps, stopped when it
  changes by less than 1e-4): a lower bound of sigma_max, so the stable rank is an upper bound, within
  about 1e-4 relative once converged; no alpha there. No rule reads the spectrum today.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping

import numpy as np
import torch

from report_gen.facts import DUP_CORR, WEIGHT_FACT_GROUPS
from report_gen.numeric import CHUNK as _CHUNK
from report_gen.numeric import chunks as _chunks
from report_gen.numeric import float64_sum

_SMALL_1D = 1 << 16  # 1-D tensors up to this size keep their values (per-channel facts)
_EXACT_MAX = 1 << 12  # tensors up to this size get the exact float64 pass
_BLOCK = 1 << 18  # values per block of the fast pass
_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_QUANTILE_SAMPLE = 1 << 16
_CORR_UNITS = 256
_CORR_COLUMNS = 1024
_EXACT_SVD_MIN_DIM = 512  # exact singular values (and alpha) when min(out, in) is at most this
_SPECTRAL_MAX_NUMEL = 1 << 26  # no spectral facts (stable rank, alpha) above 64M elements
_POWER_ITERATIONS = 30
_POWER_BLOCK = 4
_POWER_TOLERANCE = 1e-4
_ALPHA_MIN_DIM = 16

#: expensive fact group -> the WeightStats attributes it fills (what `eager` and `Rule.facts` name)
EXPENSIVE: dict[str, tuple[str, ...]] = {
    "quantiles": ("abs_quantiles",),
    "correlations": ("unit_max_corr", "corr_topk_mean", "dup_family_share"),
    "spectrum": ("stable_rank", "alpha"),
}
_GROUP_OF = {attr: group for group, attrs in EXPENSIVE.items() for attr in attrs}
assert tuple(EXPENSIVE) == WEIGHT_FACT_GROUPS

TensorSource = Callable[[], torch.Tensor]


def _lazy(attr: str, doc: str) -> property:
    def get(self: "WeightStats") -> Any:
        group = _GROUP_OF[attr]
        if group not in self._computed:
            self._compute(group)
        return self._computed[group][attr]

    return property(get, doc=doc)


@dataclass
class WeightStats:
    """Statistics of one tensor (see the module docstring for numerical conventions).

    skew/kurtosis are population moments (kurtosis is excess); bimodality is Sarle's coefficient.
    Unit facts exist for ndim >= 2 on the [out, -1] matrix; kernel_diversity is std(unit_mean) with
    ddof=1 (torch's default, as in the seed tutorial). The expensive facts (abs_quantiles: keys
    "0.01" ... "0.99" of |w|, numpy "linear" quantiles; unit_max_corr over up to 256 evenly spaced
    units; corr_topk_mean; dup_family_share: the largest group of sampled units linked by |corr| >
    DUP_CORR, / units; stable_rank; alpha) are properties computed on first read from `source`.
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
    skew: float
    kurtosis: float
    bimodality: float
    unit_absmax: np.ndarray | None = None
    unit_mean: np.ndarray | None = None
    kernel_diversity: float | None = None
    values: np.ndarray | None = None  # the values themselves, for small 1-D tensors (norm scales, biases)
    min: float = math.nan  # signed extremes of the finite values
    max: float = math.nan
    at_min_frac: float = math.nan  # share of all values exactly equal to min / to max (ties at a bound)
    at_max_frac: float = math.nan
    source: TensorSource | None = field(default=None, repr=False, compare=False)  # reloads the tensor
    _computed: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    abs_quantiles = _lazy("abs_quantiles", "quantiles of |w| (bounded: see the module docstring)")
    unit_max_corr = _lazy("unit_max_corr", "max |corr| of each sampled unit with any other")
    corr_topk_mean = _lazy("corr_topk_mean", "mean of the top-10 |corr| pairs of sampled units")
    dup_family_share = _lazy("dup_family_share", "largest family of near-duplicate units / sampled units")
    stable_rank = _lazy("stable_rank", "||W||_F^2 / ||W||_2^2")
    alpha = _lazy("alpha", "Hill estimate of the eigenvalue tail exponent")

    def has(self, group: str) -> bool:
        """Whether the expensive facts of `group` are already computed (evidence shows only those)."""
        return group in self._computed

    def compute(self, groups: Collection[str], tensor: torch.Tensor | None = None) -> None:
        """Compute these expensive groups now (from `tensor` when given, else from `source`)."""
        todo = [g for g in groups if g not in self._computed]
        if not todo:
            return
        t = tensor if tensor is not None else self._load()
        for group in todo:
            self._computed[group] = _expensive(group, t, self) if t is not None else _empty(group)

    def _compute(self, group: str) -> None:
        self.compute([group])

    def _load(self) -> torch.Tensor | None:
        if self.source is None:
            return None
        try:
            return self.source().detach().to(torch.float32)
        except Exception:  # noqa: BLE001 - a tensor that cannot be reread has no expensive facts
            return None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["source"] = None  # loaders hold open files: the receiving side attaches its own
        return state


def _empty(group: str) -> dict[str, Any]:
    if group == "quantiles":
        return {"abs_quantiles": {str(q): math.nan for q in _QUANTILES}}
    return {attr: None for attr in EXPENSIVE[group]}


def _expensive(group: str, t: torch.Tensor, st: WeightStats) -> dict[str, Any]:
    finite = not (st.nan_count or st.inf_count)
    if group == "quantiles":
        x = t[torch.isfinite(t)] if not finite else t
        return {"abs_quantiles": _abs_quantiles(x)}
    out = _empty(group)
    if t.ndim < 2 or not t.numel():
        return out
    w = t.reshape(t.shape[0], -1)
    if group == "correlations":
        out["unit_max_corr"], out["corr_topk_mean"], out["dup_family_share"] = _unit_correlations(w)
    elif finite:
        out["stable_rank"], out["alpha"] = _spectral(w, st.l2 ** 2)
    return out


def _central_moments(x: torch.Tensor, mean: float) -> tuple[float, float, float]:
    """(m2, m3, m4) population central moments, one chunked float64 pass."""
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
    if zn.shape[1] > 256:  # unit rows: float32 products are exact to ~1e-6 and twice as fast
        zn = zn.astype(np.float32)
    corr = np.abs(zn @ zn.T).astype(np.float64)  # numpy: torch's thread pool makes small matmuls slow when busy
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
    """Largest singular value by block power iteration on WᵀW from a seeded start (a lower bound that
    converges quickly when the top of the spectrum is separated; see the module docstring)."""
    generator = torch.Generator().manual_seed(0)
    block = min(_POWER_BLOCK, w.shape[1])
    v, _ = torch.linalg.qr(torch.randn(w.shape[1], block, generator=generator, dtype=torch.float32))
    sigma = 0.0
    for _ in range(_POWER_ITERATIONS):
        u = w @ v
        previous, sigma = sigma, float(torch.linalg.vector_norm(u, dim=0).max())
        if sigma == 0.0 or abs(sigma - previous) <= _POWER_TOLERANCE * sigma:
            return sigma
        v, _ = torch.linalg.qr(w.T @ u)
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


def weight_stats(name: str, t: torch.Tensor, *, source: TensorSource | None = None,
                 eager: Collection[str] = ()) -> WeightStats:
    """All cheap statistics of one tensor now (float32 facts whatever the stored dtype); the expensive
    groups named in `eager` (see EXPENSIVE) too, while the tensor is at hand. The others are computed
    when read, from `source` (a function reloading the tensor); without a source the tensor itself is
    kept for that, so pass one when many tensors are processed."""
    dtype = str(t.dtype).replace("torch.", "")
    t = t.detach()
    if t.dtype != torch.float32:
        t = t.to(torch.float32)
    stats = _fast_stats(name, t, dtype) if t.numel() > _EXACT_MAX and t.is_contiguous() else None
    if stats is None:
        stats = _exact_stats(name, t, dtype)
    stats.source = source if source is not None else (lambda: t)
    stats.compute(eager, t)
    return stats


def _exact_stats(name: str, t: torch.Tensor, dtype: str) -> WeightStats:
    """The float64 reference pass (small tensors, non-finite values, overflowing float32 sums)."""
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
        skew=skew, kurtosis=kurt, bimodality=bimodality)
    if n:
        lo, hi = float(lo_hi.min), float(lo_hi.max)
        stats.min, stats.max = lo, hi
        stats.at_min_frac = _count(x, lambda c: c == lo) / numel
        stats.at_max_frac = _count(x, lambda c: c == hi) / numel
    if t.ndim >= 2 and numel:
        w = t.reshape(t.shape[0], -1)
        stats.unit_absmax, stats.unit_mean = _row_absmax_mean(w)
        stats.kernel_diversity = _diversity(stats.unit_mean)
    elif t.ndim == 1 and numel <= _SMALL_1D:
        stats.values = t.numpy().copy()
    return stats


def _diversity(unit_mean: np.ndarray) -> float:
    return float(np.std(unit_mean, ddof=1)) if unit_mean.size > 1 else math.nan


def _fast_stats(name: str, t: torch.Tensor, dtype: str) -> WeightStats | None:
    """The one-pass float32 block statistics of a large finite tensor; None sends it to the exact pass.

    Per block: d = x - shift, s2 += sum(d²), s3 += d²·d, s4 += d²·d², tiny += #(|x| <= 1e-12) (counted only in
    blocks whose min |x| is that small), the signed min and max with the number of values equal to each
    (counted only in blocks reaching the running extreme), and per row max |x| and sum x (whole rows per
    block when rows are short).
    """
    numel = t.numel()
    flat = t.reshape(-1)
    head = flat[:4096].to(torch.float64)
    shift = float(head.mean())
    if not math.isfinite(shift):
        return None
    rows = t.shape[0] if t.ndim >= 2 else 1
    width = numel // rows
    per_block = max(1, _BLOCK // width) if width <= _BLOCK else 0
    size = per_block * width if per_block else _BLOCK
    buf, sq, small = torch.empty(size), torch.empty(size), torch.empty(size, dtype=torch.bool)
    s1 = s2 = s3 = s4 = 0.0
    tiny = 0
    lo, hi, at_lo, at_hi = math.inf, -math.inf, 0, 0  # signed extremes and how many values sit on them
    row_max = torch.empty(rows)
    row_sum = torch.zeros(rows, dtype=torch.float64)
    matrix = flat.view(rows, width)
    for r0, r1, c0, c1 in _blocks(rows, width, per_block):
        block = matrix[r0:r1, c0:c1]
        c = block.reshape(-1)
        k = c.numel()
        row_sum[r0:r1] += block.sum(dim=1).to(torch.float64)
        b_lo, b_hi = (float(v) for v in torch.aminmax(c))
        if b_lo <= lo:  # ties counted only in blocks reaching the running extreme
            at_lo = (0 if b_lo < lo else at_lo) + int(torch.count_nonzero(torch.eq(c, b_lo, out=small[:k])))
            lo = b_lo
        if b_hi >= hi:
            at_hi = (0 if b_hi > hi else at_hi) + int(torch.count_nonzero(torch.eq(c, b_hi, out=small[:k])))
            hi = b_hi
        d = torch.sub(c, shift, out=buf[:k])
        dd = torch.mul(d, d, out=sq[:k])
        s1 += float(d.sum())
        s2 += float(dd.sum())
        s3 += float(torch.dot(dd, d))
        s4 += float(torch.dot(dd, dd))
        a = torch.abs(c, out=buf[:k])
        if float(a.min()) <= 1e-12:  # counting is a slow pass: only blocks holding (near) zeros need it
            tiny += int(torch.count_nonzero(torch.le(a, 1e-12, out=small[:k])))
        bmax = a.view(r1 - r0, c1 - c0).amax(dim=1)
        if c0 == 0:
            row_max[r0:r1] = bmax
        else:
            torch.maximum(row_max[r0:r1], bmax, out=row_max[r0:r1])
    if not all(map(math.isfinite, (s1, s2, s3, s4))):
        return None  # NaN/Inf, or a float32 overflow of d^4: the exact pass decides
    n = numel
    mu = s1 / n  # mean of d
    e2, e3, e4 = s2 / n, s3 / n, s4 / n
    m2 = max(e2 - mu * mu, 0.0)
    m3 = e3 - 3 * mu * e2 + 2 * mu**3
    m4 = e4 - 4 * mu * e3 + 6 * mu * mu * e2 - 3 * mu**4
    mean = shift + mu
    skew, kurt, bimodality = _shape_moments(n, m2, m3, m4)
    sum_sq = n * (m2 + mean * mean)
    stats = WeightStats(
        name=name, shape=tuple(t.shape), dtype=dtype, numel=numel, mean=mean, std=math.sqrt(m2),
        absmax=float(row_max.max()), l2=math.sqrt(sum_sq), rms=math.sqrt(sum_sq / n),
        nan_count=0, inf_count=0, zero_frac=tiny / numel, skew=skew, kurtosis=kurt, bimodality=bimodality,
        min=lo, max=hi, at_min_frac=at_lo / numel, at_max_frac=at_hi / numel)
    if t.ndim >= 2:
        stats.unit_absmax = row_max.to(torch.float64).numpy()
        stats.unit_mean = (row_sum / width).numpy()
        stats.kernel_diversity = _diversity(stats.unit_mean)
    elif numel <= _SMALL_1D:
        stats.values = t.numpy().copy()
    return stats


def _blocks(rows: int, width: int, per_block: int):
    """(row0, row1, col0, col1) blocks: whole rows `per_block` at a time, or row pieces of _BLOCK."""
    if per_block:
        for r0 in range(0, rows, per_block):
            yield r0, min(rows, r0 + per_block), 0, width
        return
    for r in range(rows):
        for c0 in range(0, width, _BLOCK):
            yield r, r + 1, c0, min(width, c0 + _BLOCK)


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
