"""Numerical helpers shared by readers and facts: float64 accumulation over float32 tensors in chunks,
so a large tensor never needs a full float64 copy; for the readers, `unique` (np.unique without numpy.ma)
and `crc32c_module` (the C CRC32C without importlib.metadata).

torch is imported only by the helpers that use it: a reader of logs imports this module without it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:
    import torch

CHUNK = 1 << 20  # elements per float64 chunk (8 MB): bounds temporaries


def chunks(t: torch.Tensor) -> Iterator[torch.Tensor]:
    flat = t.reshape(-1)
    for start in range(0, flat.numel(), CHUNK):
        yield flat[start:start + CHUNK]


def float64_sum(t: torch.Tensor, power: int = 1, center: float = 0.0) -> float:
    """sum((t - center) ** power), accumulated in float64 chunk by chunk."""
    import torch

    total = 0.0
    for chunk in chunks(t):
        d = chunk.to(torch.float64)
        if center:
            d = d - center
        total += float((d if power == 1 else d.pow(power)).sum())
    return total


def unique(values, return_index: bool = False):
    """`np.unique` of a 1-D array of integers (or any values without NaN), sorted, as numpy computes it
    (a sort, then the first of each run of equal values; with `return_index`, a stable argsort and
    the index of each value's first occurrence), without the `numpy.ma` import numpy 2.x's
    `np.unique` triggers on its first call (~12 ms of a logs-only diagnose)."""
    a = np.asarray(values).reshape(-1)
    if return_index:
        perm = a.argsort(kind="stable")
        ordered = a[perm]
    else:
        ordered = np.sort(a)
    first = np.empty(ordered.shape, dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return (ordered[first], perm[first]) if return_index else ordered[first]


def crc32c_module():
    """crc32c's C extension (`.crc32c(data, value=0)`), loaded without running the crc32c package's
    `__init__`, whose `importlib.metadata.version("crc32c")` imports importlib.metadata, email, csv and
    socket (~20 ms of a logs-only diagnose). The package itself when its layout is not the known one."""
    import importlib.machinery
    import importlib.util
    import os
    import sys

    if "crc32c" in sys.modules:  # already paid for
        return sys.modules["crc32c"]
    spec = importlib.util.find_spec("crc32c")  # where the package is; finding it runs nothing
    for folder in (spec.submodule_search_locations or ()) if spec is not None else ():
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, "_crc32c" + suffix)
            if os.path.isfile(path):
                loader = importlib.machinery.ExtensionFileLoader("crc32c._crc32c", path)
                module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
                loader.exec_module(module)
                return module
    import crc32c

    return crc32c
