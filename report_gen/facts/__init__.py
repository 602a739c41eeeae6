"""Facts: pure functions over arrays and tensors. Modules that need torch import it themselves, so
this package and its light modules (curves, histograms) stay importable without it."""

import numpy as np

DUP_CORR = 0.9  # |corr| above which two units count as near-duplicates (a fixed reporting level)

#: expensive weight-fact groups (facts.weights.EXPENSIVE): computed only when a selected rule declares
#: it reads them (`@rule(..., facts=...)`, computed while each tensor is read) or when something reads
#: them (computed then, by reloading the tensor)
WEIGHT_FACT_GROUPS = ("quantiles", "correlations", "spectrum")


def dead_units(unit_absmax, threshold: float, relative: float) -> np.ndarray:
    """Boolean mask of dead kernels/units: max |w| below `threshold` and below `relative` × the layer's
    median kernel max |w| (so a layer whose weights are all small by design has none)."""
    amax = np.asarray(unit_absmax, dtype=float)
    if not amax.size:
        return np.zeros(0, dtype=bool)
    return (amax < threshold) & (amax < relative * float(np.median(amax)))


def chance_dead_probability(unit_size: int, layer_std: float, threshold: float) -> float:
    """P(max |w| < threshold) for a unit of `unit_size` weights drawn from the layer's own distribution, taken
    as N(0, layer_std^2) (of the uniform and normal inits of the same std, the normal puts more mass near 0,
    so this errs towards "by chance"): erf(threshold / (std sqrt 2)) ** unit_size."""
    import math

    if not (layer_std > 0 and math.isfinite(layer_std)) or unit_size <= 0:
        return 1.0
    return math.erf(threshold / (layer_std * math.sqrt(2.0))) ** unit_size


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how likely `k` or more of `n` units are "dead" by chance alone."""
    import math

    if k <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)
            for i in range(k, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(x - top) for x in logs))
