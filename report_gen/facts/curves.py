"""Facts about scalar curves (loss, accuracy, norms): pure functions over numpy arrays."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from report_gen.numeric import unique


def ema_smooth(values: np.ndarray, weight: float = 0.6, block: int = 512) -> np.ndarray:
    """TensorBoard's debiased exponential moving average; non-finite values pass through unchanged
    and do not enter the average.

    Vectorised in blocks, all blocks at once: inside a block, s_t = w^t·s_0 + (1-w)·w^t·Σ_{i≤t} w^-i·x_i,
    with the block short enough that w^-block stays far from float64 overflow. The second term is
    computed for every block together (a row each); the states s_0 carried from block to block are a
    scalar recurrence, one step per block.
    """
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    every = bool(finite.all())
    x = v if every else v[finite]
    if x.size == 0 or weight <= 0:
        return v.copy()
    w = float(weight)
    block = max(1, min(block, int(150 / max(-np.log10(w), 1e-12)), x.size))  # keeps w^-block below 1e150
    rows = -(-x.size // block)
    padded = np.zeros(rows * block)
    padded[:x.size] = x
    k = np.arange(1, block + 1, dtype=np.float64)
    decay = w**k
    local = np.cumsum(padded.reshape(rows, block) * w**-k, axis=1) * ((1 - w) * decay)  # from a zero state
    states = np.empty(rows)  # the state each block starts from
    state, carry = 0.0, float(decay[-1])
    for r, end in enumerate(local[:, -1].tolist()):
        states[r] = state
        state = carry * state + end
    ema = (local + states[:, None] * decay).reshape(-1)[:x.size]
    # the debiasing 1 - w^n is exactly 1.0 once w^n is below half a float64 ulp of 1: only the head
    head = x.size if w >= 1 else min(x.size, int(np.ceil(np.log(2.0**-54) / np.log(w))) + 1)
    ema[:head] /= 1 - w ** np.arange(1, head + 1, dtype=np.float64)
    if every:
        return ema
    out = v.copy()
    out[finite] = ema
    return out


def first_nonfinite(values: np.ndarray) -> int | None:
    bad = np.flatnonzero(~np.isfinite(np.asarray(values, dtype=np.float64)))
    return int(bad[0]) if bad.size else None


def window(n: int, frac: float, minimum: int) -> int:
    """Size of a head/tail window: `frac` of n points, at least `minimum`, at most n."""
    return int(min(n, max(minimum, round(n * frac))))


@dataclass(frozen=True)
class CurveSummary:
    """Indexes count the finite values only. `best`/`best_index` are the smoothed curve's (robust to one
    lucky batch: what rules judge with); `raw_best`/`raw_best_index` are the best value actually logged
    and where: what a message or evidence quotes, so it agrees with the metrics table and the plot."""

    n: int
    start: float  # the untrained level: the worse of the first value and the first window's median
    best: float  # min (or max for higher-is-better) of the smoothed curve
    best_index: int
    end: float  # median of the last window
    span: float  # |start - best|: how much the curve improved at its best
    raw_best: float = float("nan")  # min (or max) of the logged values
    raw_best_index: int = 0


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
    # a task learned within the first window would make its median look "trained": the first
    # value is the untrained level then (min/max: the worse of the two)
    start = float(min(np.median(v[:w]), v[0]) if higher_is_better else max(np.median(v[:w]), v[0]))
    raw = int(np.argmax(v) if higher_is_better else np.argmin(v))
    return CurveSummary(n=int(v.size), start=start, best=float(s[idx]), best_index=idx,
                        end=float(np.median(v[-w:])), span=abs(start - float(s[idx])),
                        raw_best=float(v[raw]), raw_best_index=raw)


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


def turning_point_z(values: np.ndarray) -> float:
    """The turning-point test of randomness (Kendall & Stuart; Brockwell & Davis, Introduction to Time Series
    and Forecasting, sec. 1.6): an i.i.d. series of n points has T ~ N(2(n-2)/3, (16n-29)/90) turning points
    (direction changes). Returns (T - mean) / sd: near 0 for batch-to-batch noise, large and positive for a
    curve that bounces back and forth more often than noise does."""
    d = np.diff(np.asarray(values, dtype=np.float64))
    d = d[np.isfinite(d) & (d != 0)]
    n = d.size + 1
    if n < 3:
        return 0.0
    turns = float(np.sum(np.sign(d[1:]) != np.sign(d[:-1])))
    return (turns - 2.0 * (n - 2) / 3.0) / float(np.sqrt((16.0 * n - 29.0) / 90.0))


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
    """Evenly spaced subset (first and last kept) for plotting; keeps non-finite points visible, and the
    lowest and highest value (the best a finding quotes is a point of the plot and of report.json)."""
    n = len(steps)
    if n <= max_points:
        return np.asarray(steps), np.asarray(values)
    idx = unique(np.linspace(0, n - 1, max_points).round().astype(int))
    v = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        idx = unique(np.concatenate((idx, bad[:20])))
    if bad.size < n:
        idx = unique(np.concatenate((idx, [int(np.nanargmin(np.where(np.isfinite(v), v, np.nan))),
                                           int(np.nanargmax(np.where(np.isfinite(v), v, np.nan)))])))
    return np.asarray(steps)[idx], np.asarray(values)[idx]


# ------------------------------------------------------------------------------------- chance level


@dataclass(frozen=True)
class ChanceLevel:
    """What a classifier that learned nothing scores: `classes` C (balanced), accuracy 1/C, loss ln C
    (cross-entropy of a uniform prediction), and where C came from ("hparams", "untrained loss")."""

    classes: int
    source: str

    @property
    def accuracy(self) -> float:
        return 1.0 / self.classes

    @property
    def loss(self) -> float:
        return float(np.log(self.classes))


_CLASS_KEYS = ("num_labels", "num_classes", "n_classes", "nclasses", "classes", "n_labels", "num_class")


def classes_from_hparams(hparams: dict) -> int | None:
    """C from a logged hyper-parameter (`num_labels` of an HF config, `num_classes`, `classes`, ...): an integer
    value of at least 2 under one of the usual keys (also as the last part of a nested key `model/num_classes`)."""
    for key, value in (hparams or {}).items():
        last = str(key).replace("/", ".").rsplit(".", 1)[-1].lower()
        if last not in _CLASS_KEYS or isinstance(value, bool):
            continue
        try:
            f = float(value)
        except (TypeError, ValueError):
            continue
        if np.isfinite(f) and f == int(f) and 2 <= f <= 1e6:
            return int(f)
    return None


def classes_from_loss(untrained_loss: float, tolerance: float = 0.1) -> int | None:
    """C such that the untrained loss is ln C within `tolerance` (relative): a classifier at initialisation
    predicts about uniformly, so its cross-entropy is ~ln C (ln 2 = 0.693 for two classes). None when no
    integer C >= 2 fits (a regression loss, or a loss that does not start untrained)."""
    if not np.isfinite(untrained_loss) or untrained_loss < 0.5 * np.log(2) or untrained_loss > np.log(1e6):
        return None
    c = int(round(float(np.exp(untrained_loss))))
    if c < 2:
        return None
    return c if abs(untrained_loss - np.log(c)) <= tolerance * np.log(c) else None


def accuracy_scale(values: np.ndarray) -> float:
    """100 for an accuracy logged in percent, else 1."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return 100.0 if v.size and float(v.max()) > 1.5 else 1.0


def above_chance(values: np.ndarray, chance_accuracy: float, quantile: float = 0.9) -> float | None:
    """How far an accuracy series got above chance, as Cohen's kappa of its `quantile` (robust to one lucky
    evaluation): (acc - chance) / (1 - chance); 0 = chance, 1 = perfect. None when nothing is finite."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size or chance_accuracy >= 1:
        return None
    acc = float(np.quantile(v, quantile)) / accuracy_scale(v)
    return (acc - chance_accuracy) / (1.0 - chance_accuracy)
