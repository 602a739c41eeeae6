"""The spike detectors vectorised (a 250k-step loss took 11 s in their per-point loops) flag exactly what
the per-point loops of the original callbacks flag: those loops are kept here as the oracle."""
from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from report_gen.facts.spikes import fabric_spikes, foundry_spikes, olmo_spikes


def olmo_loop(v, window=128, n_std=6.0):
    v = np.asarray(v, dtype=np.float64)
    return [i for i in range(window, v.size)
            if v[i - window:i].std() >= 1e-10 and v[i] > v[i - window:i].mean() + n_std * v[i - window:i].std()]


def foundry_loop(v, factor=2.0, window=100, patience=4):
    v = np.asarray(v, dtype=np.float64)
    out, run = [], 0
    for i in range(window, v.size):
        if v[i] >= factor * float(v[i - window:i].mean()):
            run += 1
            if run == patience + 1:
                out.append(i)
        else:
            run = 0
    return out


def fabric_loop(v, window=10, rtol=2.0, warmup=1, atol=None):
    out, recent, last = [], deque(maxlen=window), 0.0
    for i, x in enumerate(np.asarray(v, dtype=np.float64)):
        if i >= warmup and recent:
            mean = float(np.mean(recent))
            far = (atol is None or abs(x - mean) >= abs(atol)) and (rtol is None or abs(x - mean) >= abs(rtol * mean))
            if x - last > 0 and far:
                out.append(i)
                continue
        recent.append(float(x))
        last = float(x)
    return out


def series(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = 2.0 * np.exp(-np.arange(n) / (n / 4)) + 0.05 * rng.standard_normal(n) + 0.1
    for at in rng.integers(0, n, 6):  # spikes of one point and of several
        v[at:at + int(rng.integers(1, 9))] *= float(rng.choice([3.0, 12.0, 40.0]))
    if seed % 2:
        v[n // 3:n // 3 + 50] = 0.5  # a flat stretch (std 0 windows)
    return v


@pytest.mark.parametrize("seed, n", [(0, 3000), (1, 3000), (2, 500), (3, 129), (4, 11), (5, 2), (6, 1)])
def test_vectorised_detectors_flag_what_the_loops_flag(seed, n):
    v = series(seed, n)
    assert olmo_spikes(v) == olmo_loop(v)
    assert foundry_spikes(v) == foundry_loop(v)
    assert fabric_spikes(v) == fabric_loop(v)
    assert fabric_spikes(v, atol=0.3, rtol=None) == fabric_loop(v, atol=0.3, rtol=None)


def test_a_healthy_curve_without_spikes_is_judged_without_the_loop(monkeypatch):
    from report_gen.facts import spikes

    def no_loop(*args):
        raise AssertionError("Fabric's per-point loop ran on a curve without a candidate")

    monkeypatch.setattr(spikes, "_fabric_from", no_loop)
    v = 2.0 * np.exp(-np.arange(250_000) / 60_000) + 0.1  # decreasing: never a Fabric candidate
    assert fabric_spikes(v) == [] and foundry_spikes(v) == [] and olmo_spikes(v) == []
    with pytest.raises(AssertionError):  # and a curve with a spike does go through the loop
        fabric_spikes(np.concatenate([v[:100], [50.0], v[100:200]]))
