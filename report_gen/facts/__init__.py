"""Facts: pure functions over arrays and tensors. Modules that need torch import it themselves, so
this package and its light modules (curves, histograms) stay importable without it."""

DUP_CORR = 0.9  # |corr| above which two units count as near-duplicates (a fixed reporting level)
