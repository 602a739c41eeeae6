"""Facts from logged histograms (HistogramSeries): exact moments from min/max/num/sum/sum_squares,
shape facts from bucket counts. Pure functions."""
from __future__ import annotations

import numpy as np

from report_gen.numeric import unique
from report_gen.readers.types import HistogramSeries

# TensorBoard's distribution view uses these basis points (in percent).
BAND_PERCENTILES = (0, 7, 16, 31, 50, 69, 84, 93, 100)


def _bucket_edges(h: HistogramSeries, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left, right, counts) of step i; the first bucket's left edge is the step's min."""
    right = np.asarray(h.limits[i], dtype=np.float64)
    counts = np.asarray(h.counts[i], dtype=np.float64)
    if right.size == 0:
        return right, right, counts
    left = np.empty_like(right)
    left[1:] = right[:-1]
    left[0] = min(float(h.min[i]), right[0]) if np.isfinite(h.min[i]) else right[0]
    # TF's last bucket is open (DBL_MAX); clamp to the observed max so interpolation stays finite
    right = right.copy()
    big = ~np.isfinite(right) | (np.abs(right) > 1e300)
    if big.any() and np.isfinite(h.max[i]):
        right[big] = float(h.max[i])
    lbig = ~np.isfinite(left) | (np.abs(left) > 1e300)
    if lbig.any() and np.isfinite(h.min[i]):
        left[lbig] = float(h.min[i])
    return left, right, counts


def percentile(h: HistogramSeries, i: int, q: float) -> float:
    """q-th percentile (0..100) of step i, linear inside buckets (as TensorBoard's compressHistogram)."""
    left, right, counts = _bucket_edges(h, i)
    total = counts.sum()
    if total <= 0 or right.size == 0:
        return float("nan")
    if q <= 0:
        return float(h.min[i])
    if q >= 100:
        return float(h.max[i])
    target = total * q / 100.0
    cum = np.cumsum(counts)
    j = int(np.searchsorted(cum, target, side="left"))
    j = min(j, len(counts) - 1)
    prev = cum[j - 1] if j > 0 else 0.0
    frac = 0.0 if counts[j] == 0 else (target - prev) / counts[j]
    lo = max(left[j], float(h.min[i]))
    hi = min(right[j], float(h.max[i]))
    return float(lo + (hi - lo) * frac)


def percentile_bands(h: HistogramSeries, pcts=BAND_PERCENTILES, max_steps: int = 200) -> dict:
    """{"steps": [...], "percentiles": {"0": [...], ...}} for distribution plots (evenly subsampled)."""
    n = len(h)
    idx = unique(np.linspace(0, n - 1, min(n, max_steps)).round().astype(int)) if n else np.array([], int)
    return {
        "steps": [int(h.steps[i]) for i in idx],
        "percentiles": {str(p): [percentile(h, int(i), p) for i in idx] for p in pcts},
    }


def mass_within(h: HistogramSeries, i: int, lo: float, hi: float, *, whole_buckets: bool = False) -> float:
    """Fraction of the values of step i that fall in [lo, hi] (bucket overlap, uniform inside a bucket).

    With whole_buckets=True every bucket that overlaps [lo, hi] counts fully: an upper bound, for
    limits (like tanh's 0.99) that sit inside a coarse bucket whose mass piles up at one end."""
    left, right, counts = _bucket_edges(h, i)
    total = counts.sum()
    if total <= 0:
        return float("nan")
    width = np.maximum(right - left, 0.0)
    overlap = np.clip(np.minimum(right, hi) - np.maximum(left, lo), 0.0, None)
    # zero-width buckets (all values equal) count fully when inside the interval
    frac = np.where(width > 0, overlap / np.where(width > 0, width, 1.0),
                    ((left >= lo) & (right <= hi)).astype(float))
    if whole_buckets:
        frac = np.where((right >= lo) & (left <= hi) & ((overlap > 0) | (width == 0)), 1.0, frac)
    return float((counts * np.clip(frac, 0, 1)).sum() / total)


def is_constant(h: HistogramSeries, rtol: float = 0.0) -> bool:
    """True when min, max, sum and sum_squares are identical (within rtol) at every logged step."""
    if len(h) < 2:
        return False
    for arr in (h.min, h.max, h.sum, h.sum_squares):
        a = np.asarray(arr, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            return False
        if np.any(np.abs(a - a[0]) > rtol * np.maximum(np.abs(a[0]), 1e-300)):
            return False
    return True


def count_modes(h: HistogramSeries, i: int, *, min_separation_buckets: int = 2, min_mass: float = 0.1) -> int:
    """Number of well-separated peaks (each holding >= min_mass of the mass) in step i's buckets,
    after a 3-bucket moving average on a uniform re-binning of 30 bins."""
    left, right, counts = _bucket_edges(h, i)
    total = counts.sum()
    if total <= 0 or right.size < 3:
        return 1 if total > 0 else 0
    lo, hi = float(h.min[i]), float(h.max[i])
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return 1
    edges = np.linspace(lo, hi, 31)
    cdf = np.array([mass_within(h, i, lo, e) for e in edges])
    dens = np.diff(cdf)
    dens = np.convolve(dens, np.ones(3) / 3, mode="same")
    peaks = [j for j in range(len(dens)) if dens[j] > 0 and (j == 0 or dens[j] >= dens[j - 1])
             and (j == len(dens) - 1 or dens[j] > dens[j + 1])]
    if len(peaks) < 2:
        return len(peaks) or 1
    # merge peaks not separated by a valley of at most half the smaller peak
    kept = [peaks[0]]
    for p in peaks[1:]:
        q = kept[-1]
        valley = dens[q:p + 1].min()
        if p - q >= min_separation_buckets and valley < 0.5 * min(dens[p], dens[q]):
            kept.append(p)
        elif dens[p] > dens[q]:
            kept[-1] = p
    # each mode must hold a real share of the mass: split at valleys
    if len(kept) < 2:
        return 1
    cuts = [0] + [int(np.argmin(dens[a:b + 1]) + a) for a, b in zip(kept, kept[1:])] + [len(dens)]
    masses = [dens[a:b].sum() for a, b in zip(cuts, cuts[1:])]
    return sum(1 for m in masses if m >= min_mass * dens.sum())


#: saturation limits of the bounded activation kinds: (lo, hi) intervals whose mass counts as saturated
SATURATION_LIMITS = {"tanh-like": ((-np.inf, -0.99), (0.99, np.inf)), "sigmoid-like": ((-np.inf, 0.01), (0.99, np.inf))}
_BOUND_TOL = 1e-6  # float32 rounding at the limits of tanh/sigmoid


def value_kind(h: HistogramSeries, i: int) -> str | None:
    """The activation kind step i's values show, whatever the layer is called:

    * "tanh-like": every value in [-1, 1], both signs, reaching beyond ±0.5 on each side;
    * "sigmoid-like": every value in [0, 1], some mass piled above 0.99 (a ReLU does not pile at its max);
    * "relu-like": no negative value and values above 1 (unbounded above, floored at 0);
    * None: anything else (unbounded both ways, or too little to tell).
    """
    lo, hi = float(h.min[i]), float(h.max[i])
    if not (np.isfinite(lo) and np.isfinite(hi)) or h.num[i] <= 0 or hi <= lo:
        return None
    if lo >= -1 - _BOUND_TOL and hi <= 1 + _BOUND_TOL and lo < -0.5 and hi > 0.5:
        return "tanh-like"
    if lo >= -_BOUND_TOL and hi <= 1 + _BOUND_TOL and hi > 0.5:
        upper = mass_within(h, i, 0.99, np.inf, whole_buckets=True)
        return "sigmoid-like" if np.isfinite(upper) and upper >= 0.01 else None
    if lo >= -_BOUND_TOL and hi > 1:
        return "relu-like"
    return None


def saturated_share(h: HistogramSeries, i: int, kind: str) -> float:
    """Mass of step i at the limits of a bounded kind (SATURATION_LIMITS); buckets that reach a limit count
    whole (TensorBoard's buckets are wide, and a saturated layer's mass piles at the bucket's far end)."""
    return float(sum(mass_within(h, i, a, b, whole_buckets=True) for a, b in SATURATION_LIMITS[kind]))


def zero_share(h: HistogramSeries, i: int, tol: float = 1e-6) -> float:
    """Share of step i's values within `tol` of 0: exact when every value is 0 (min = max = 0), else the
    bucket overlap (only resolved by fine buckets: TensorBoard's default edges start at ±1e-12)."""
    if float(h.min[i]) == 0.0 and float(h.max[i]) == 0.0 and h.num[i] > 0:
        return 1.0
    return mass_within(h, i, -tol, tol)
