"""report_gen.numeric: `unique` is np.unique (values, first indices, dtype) without importing numpy.ma;
`crc32c_module` is the C CRC32C without importlib.metadata."""
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


def test_crc32c_module_is_the_c_crc32c():
    import crc32c

    from report_gen.numeric import crc32c_module

    module = crc32c_module()
    rng = np.random.default_rng(1)
    for n in (0, 1, 8, 12, 1000):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert module.crc32c(data) == crc32c.crc32c(data) and module.crc32c(data, 7) == crc32c.crc32c(data, 7)
    assert module.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720)


def test_crc32c_module_loads_without_importlib_metadata():
    code = ("import sys; from report_gen.numeric import crc32c_module; m = crc32c_module(); "
            "print(m.crc32c(b'123456789') == 0xE3069283, 'importlib.metadata' in sys.modules, 'email' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False", "False"]
