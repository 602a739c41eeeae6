"""report_gen.numeric: `unique` is np.unique (values, first indices, dtype) without importing numpy.ma."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from report_gen.numeric import unique


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.uint64, np.float64])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 5000])
def test_unique_is_np_unique(dtype, n):
    a = np.random.default_rng(n).integers(0, 40, n).astype(dtype)
    want, want_first = np.unique(a, return_index=True)
    got, got_first = unique(a, return_index=True)
    assert got.dtype == want.dtype and np.array_equal(got, want)
    assert got_first.dtype == want_first.dtype and np.array_equal(got_first, want_first)
    assert np.array_equal(unique(a), np.unique(a)) and unique(list(a)).dtype == np.unique(list(a)).dtype


def test_unique_imports_neither_numpy_ma_nor_torch():
    code = ("import sys, numpy as np; from report_gen.numeric import unique; unique(np.array([3, 1, 3]), True); "
            "print(sorted(m for m in ('numpy.ma', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]"]
