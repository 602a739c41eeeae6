"""Helpers for the hostile-input tests: time bounds as ratios, and runs in a child process.

The machine these tests run on is shared, so a bound is never an absolute number of seconds: it is a
multiple of a fixed pure-Python reference loop timed right before (`spin`). On an idle machine the
reference takes about 0.05 s, so `IDLE_SECONDS_PER_SPIN` = 0.05 turns "2 s on an idle machine" into
"40 reference loops".
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager

IDLE_SECONDS_PER_SPIN = 0.05


def spin() -> float:
    """Seconds one fixed pure-Python reference loop takes now (best of 3)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        x = 0
        for i in range(1_000_000):
            x += i & 7
        best = min(best, time.perf_counter() - start)
    return best


@contextmanager
def bounded_time(idle_seconds: float = 2.0):
    """Assert the block takes at most `idle_seconds` scaled by how slow the machine is right now."""
    allowed = idle_seconds / IDLE_SECONDS_PER_SPIN * spin()
    start = time.perf_counter()
    yield
    took = time.perf_counter() - start
    assert took < allowed, f"took {took:.2f} s, allowed {allowed:.2f} s ({idle_seconds} s idle-equivalent)"


def run_python(code: str, timeout: float = 60.0, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (a crash or hang there cannot take the test run down)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)


# -- openers run inside an isolated worker (readers/isolation.py); module-level so the worker can
#    import them by name. Each misbehaves only on a file whose name says so, else opens normally.

def misbehaving_open(path: str):
    """open_checkpoint, except: *crash* -> SIGSEGV, *hang* -> sleeps forever, *spin* -> burns CPU,
    *hog* -> allocates until the memory limit stops it."""
    import signal
    import time

    from report_gen.readers.checkpoint import open_checkpoint

    name = os.path.basename(path)
    if "crash" in name:
        os.kill(os.getpid(), signal.SIGSEGV)
    if "hang" in name:
        time.sleep(3600)
    if "spin" in name:
        while True:
            pass
    if "hog" in name:
        chunks = []
        while True:
            chunks.append(bytearray(64 << 20))
    return open_checkpoint(path)
