"""Spike detectors of the large-model trainers, as pure functions over a logged series.

Each returns the positions (indexes into the finite values, in order) that the original callback would
flag, given the series as it was logged (one value per logged point). Verified against the sources:

* **Megatron-LM** `RerunStateMachine.is_unexpectedly_large` (megatron/core/rerun_state_machine.py, NVIDIA/
  Megatron-LM) with `SPIKY_LOSS_FACTOR = 10` (pretrain_gpt.py, `--check-for-spiky-loss`): the max |value| of
  the first `num_samples=100` values is the reference; later values >= 10 × that max are spikes.
* **OLMo-core** `StabilityMonitorCallback` (src/olmo_core/train/callbacks/stability_monitor.py, allenai/
  OLMo-core): `window_size=128`, `threshold_std=6.0`: once 128 values are known, a value above the mean + 6
  (population) standard deviations of the previous 128 values is a spike (never when that std < 1e-10).
* **llm-foundry** `KillLossSpike` (llmfoundry/callbacks/kill_loss_spike_callback.py, mosaicml/llm-foundry):
  `outlier_multiplier=2`, `window_size=100`, `patience=4`: once 100 values are known, a value >= 2 × the mean
  of the previous 100 is an outlier, and more than 4 consecutive outliers (the 5th) are a loss spike.
* **Lightning Fabric** `SpikeDetection` (src/lightning/fabric/utilities/spike.py, Lightning-AI/pytorch-
  lightning): `window=10`, `warmup=1`, `rtol=2.0`, `atol=None`, mode "min": from the second value on, a value
  that is not below the previous one and whose distance from the running mean of the last 10 (non-spike)
  values is >= 2 × that mean is a spike. Spikes do not enter the running mean.

The detectors differ in how much history they need (Fabric: 1 value, Megatron/llm-foundry: 100, OLMo-core:
128), which decides what they can see in a short run.
"""
from __future__ import annotations

from collections import deque

import numpy as np

METHODS = ("fabric", "olmo", "foundry", "megatron")


def megatron_spikes(values, factor: float = 10.0, num_samples: int = 100) -> list[int]:
    v = np.abs(np.asarray(values, dtype=np.float64))
    if v.size <= num_samples:
        return []
    ref = float(np.max(v[:num_samples]))
    return [int(i) for i in np.flatnonzero(v[num_samples:] >= factor * ref) + num_samples]


def _previous_windows(v: np.ndarray, window: int) -> np.ndarray:
    """Row i - window holds the `window` values before value i, for every i >= window (a view)."""
    return np.lib.stride_tricks.sliding_window_view(v[:-1], window)


def olmo_spikes(values, window: int = 128, n_std: float = 6.0) -> list[int]:
    v = np.asarray(values, dtype=np.float64)
    if v.size <= window:
        return []
    hist = _previous_windows(v, window)  # each window's mean and population std, as the callback computes them
    mean, std = hist.mean(axis=1), hist.std(axis=1)
    hit = (std >= 1e-10) & (v[window:] > mean + n_std * std)
    return (np.flatnonzero(hit) + window).tolist()


def foundry_spikes(values, factor: float = 2.0, window: int = 100, patience: int = 4) -> list[int]:
    """Positions where llm-foundry raises (the (patience+1)-th consecutive outlier), one per outlier run."""
    v = np.asarray(values, dtype=np.float64)
    if v.size <= window:
        return []
    outlier = v[window:] >= factor * _previous_windows(v, window).mean(axis=1)
    at = np.arange(outlier.size)
    last_normal = np.maximum.accumulate(np.where(outlier, -1, at))  # the latest non-outlier at or before i
    return (np.flatnonzero(outlier & (at - last_normal == patience + 1)) + window).tolist()


def fabric_spikes(values, window: int = 10, rtol: float = 2.0, warmup: int = 1,
                  atol: float | None = None) -> list[int]:
    """Fabric's detector is sequential (a spike does not enter the running mean), but until the first
    spike the running mean is that of the previous `window` values: that stretch is found with numpy, and
    the loop runs only from the first spike on."""
    v = np.asarray(values, dtype=np.float64)
    start = warmup
    if v.size > max(warmup, 1):
        i = np.arange(v.size)
        mean = np.zeros(v.size)
        head = min(window, v.size - 1)  # value i < window sees the i values before it
        mean[1:head + 1] = np.cumsum(v[:head]) / np.arange(1, head + 1)
        if v.size > window:
            mean[window:] = _previous_windows(v, window).mean(axis=1)
        prev = np.concatenate([[0.0], v[:-1]])
        dist = np.abs(v - mean) * (1 + 1e-9)  # a little slack: the exact loop below decides
        far = (True if atol is None else dist >= abs(atol)) & (True if rtol is None else dist >= abs(rtol * mean))
        maybe = np.flatnonzero((i >= max(warmup, 1)) & (v - prev > 0) & far)
        if not maybe.size:
            return []
        start = max(warmup, int(maybe[0]) - window)  # no spike before the first candidate
    return _fabric_from(v, start, window, rtol, warmup, atol)


def _fabric_from(v: np.ndarray, start: int, window: int, rtol: float | None, warmup: int,
                 atol: float | None) -> list[int]:
    """Fabric's loop from value `start` on, with no spike before it (its state there is the last
    `window` values and the previous value)."""
    out: list[int] = []
    recent: deque[float] = deque((float(x) for x in v[max(0, start - window):start]), maxlen=window)
    last = float(v[start - 1]) if start > 0 else 0.0
    for i in range(start, v.size):
        x = v[i]
        if i >= warmup and recent:
            mean = float(np.mean(recent))
            worse = x - last > 0
            far = (atol is None or abs(x - mean) >= abs(atol)) and (rtol is None or abs(x - mean) >= abs(rtol * mean))
            if worse and far:
                out.append(i)
                continue
        recent.append(float(x))
        last = float(x)
    return out


def detect(method: str, values) -> list[int]:
    """The spikes of `values` under one of METHODS, with the published defaults."""
    if method == "fabric":
        return fabric_spikes(values)
    if method == "olmo":
        return olmo_spikes(values)
    if method == "foundry":
        return foundry_spikes(values)
    if method == "megatron":
        return megatron_spikes(values)
    raise ValueError(f"unknown spike method {method!r}; choose one of {', '.join(METHODS)}")


def spike_events(indexes: list[int], gap: int = 1) -> list[tuple[int, int]]:
    """Consecutive flagged positions grouped into events: [(first, last)], a gap of more than `gap`
    unflagged points starts a new event."""
    events: list[tuple[int, int]] = []
    for i in indexes:
        if events and i - events[-1][1] <= gap + 1:
            events[-1] = (events[-1][0], i)
        else:
            events.append((i, i))
    return events


def baselines_before(values, indexes: np.ndarray, window: int = 10) -> np.ndarray:
    """Median of the `window` values before each of `indexes` (what the series was doing before a spike;
    NaN where no value precedes)."""
    v = np.asarray(values, dtype=np.float64)
    idx = np.asarray(indexes, dtype=np.int64)
    out = np.full(idx.size, np.nan)
    full = idx >= window
    if full.any() and v.size > window:
        out[full] = np.median(np.lib.stride_tricks.sliding_window_view(v, window)[idx[full] - window], axis=1)
    for k in np.flatnonzero(~full & (idx > 0)).tolist():
        out[k] = float(np.median(v[:idx[k]]))
    return out
