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
