"""Facts about scalar curves (loss, accuracy, norms): pure functions over numpy arrays."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def ema_smooth(values: np.ndarray, weight: float = 0.6) -> np.ndarray:
    """TensorBoard's debiased exponential moving average (non-finite values are carried through)."""
    v = np.asarray(values, dtype=np.float64)
    out = np.empty_like(v)
    last, n = 0.0, 0
    for i, x in enumerate(v):
        if not np.isfinite(x):
            out[i] = x
            continue
        last = last * weight + (1 - weight) * x
        n += 1
        out[i] = last / (1 - weight**n) if weight > 0 else x
    return out


def first_nonfinite(values: np.ndarray) -> int | None:
    bad = np.flatnonzero(~np.isfinite(np.asarray(values, dtype=np.float64)))
    return int(bad[0]) if bad.size else None


def window(n: int, frac: float, minimum: int) -> int:
    """Size of a head/tail window: `frac` of n points, at least `minimum`, at most n."""
    return int(min(n, max(minimum, round(n * frac))))


@dataclass(frozen=True)
class CurveSummary:
    n: int
    start: float  # median of the first window
    best: float  # min (or max for higher-is-better) of the smoothed curve
    best_index: int
    end: float  # median of the last window
    span: float  # |start - best|: how much the curve improved at its best


def summarize(values: np.ndarray, *, higher_is_better: bool = False, frac: float = 0.1,
              minimum: int = 3, smoothing: float = 0.6) -> CurveSummary | None:
    """Start/best/end of the finite part of a curve; None when fewer than 2 finite points."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return None
    w = window(v.size, frac, minimum)
    s = ema_smooth(v, smoothing)
    idx = int(np.argmax(s) if higher_is_better else np.argmin(s))
    start = float(np.median(v[:w]))
    return CurveSummary(n=int(v.size), start=start, best=float(s[idx]), best_index=idx,
                        end=float(np.median(v[-w:])), span=abs(start - float(s[idx])))


def relative_improvement(values: np.ndarray, *, higher_is_better: bool = False, frac: float = 0.1) -> float | None:
    """(start - best) / |start| for a loss (mirrored for higher-is-better). None if undefined."""
    s = summarize(values, higher_is_better=higher_is_better, frac=frac)
    if s is None or s.start == 0:
        return None
    gain = (s.best - s.start) if higher_is_better else (s.start - s.best)
    return gain / abs(s.start)


def sign_change_rate(values: np.ndarray) -> float:
    """Fraction of consecutive differences that flip sign (TheDeepChecker's smoothness, inverted)."""
    d = np.diff(np.asarray(values, dtype=np.float64))
    d = d[np.isfinite(d) & (d != 0)]
    if d.size < 2:
        return 0.0
    return float(np.mean(np.sign(d[1:]) != np.sign(d[:-1])))


def swing_amplitude(values: np.ndarray) -> float:
    """Median absolute step-to-step change of a series."""
    d = np.abs(np.diff(np.asarray(values, dtype=np.float64)))
    d = d[np.isfinite(d)]
    return float(np.median(d)) if d.size else 0.0


def growth_factor(values: np.ndarray, frac: float = 0.2, minimum: int = 2) -> float | None:
    """median(last window) / median(first window) of |values|; None if undefined."""
    v = np.abs(np.asarray(values, dtype=np.float64))
    v = v[np.isfinite(v)]
    if v.size < 2 * minimum:
        return None
    w = window(v.size, frac, minimum)
    head = float(np.median(v[:w]))
    tail = float(np.median(v[-w:]))
    if head <= 0:
        return None if tail <= 0 else float("inf")
    return tail / head


def monotonic_fraction(values: np.ndarray) -> float:
    """Fraction of steps that go up (for a growth check): 1.0 = strictly increasing."""
    d = np.diff(np.asarray(values, dtype=np.float64))
    d = d[np.isfinite(d)]
    return float(np.mean(d > 0)) if d.size else 0.0


def late(values: np.ndarray, frac: float = 0.5) -> np.ndarray:
    """The last `frac` of a series (at least one point), finite values only."""
    v = np.asarray(values, dtype=np.float64)
    v = v[-max(1, int(round(len(v) * frac))):]
    return v[np.isfinite(v)]


def downsample(steps: np.ndarray, values: np.ndarray, max_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Evenly spaced subset (first and last kept) for plotting; keeps non-finite points visible."""
    n = len(steps)
    if n <= max_points:
        return np.asarray(steps), np.asarray(values)
    idx = np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    bad = np.flatnonzero(~np.isfinite(np.asarray(values, dtype=np.float64)))
    if bad.size:
        idx = np.union1d(idx, bad[:20])
    return np.asarray(steps)[idx], np.asarray(values)[idx]
