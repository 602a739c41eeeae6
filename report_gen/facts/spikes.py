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


def olmo_spikes(values, window: int = 128, n_std: float = 6.0) -> list[int]:
    v = np.asarray(values, dtype=np.float64)
    out = []
    for i in range(window, v.size):
        hist = v[i - window:i]
        mean, std = float(hist.mean()), float(hist.std())
        if std >= 1e-10 and v[i] > mean + n_std * std:
            out.append(i)
    return out


def foundry_spikes(values, factor: float = 2.0, window: int = 100, patience: int = 4) -> list[int]:
    """Positions where llm-foundry raises (the (patience+1)-th consecutive outlier), one per outlier run."""
    v = np.asarray(values, dtype=np.float64)
    out, run = [], 0
    for i in range(window, v.size):
        mean = float(v[i - window:i].mean())
        if v[i] >= factor * mean:
            run += 1
            if run == patience + 1:
                out.append(i)
        else:
            run = 0
    return out


def fabric_spikes(values, window: int = 10, rtol: float = 2.0, warmup: int = 1,
                  atol: float | None = None) -> list[int]:
    v = np.asarray(values, dtype=np.float64)
    out: list[int] = []
    recent: deque[float] = deque(maxlen=window)
    last = 0.0
    for i, x in enumerate(v):
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


def baseline_before(values, index: int, window: int = 10) -> float:
    """Median of the `window` values before `index` (what the series was doing before a spike)."""
    v = np.asarray(values, dtype=np.float64)
    head = v[max(0, index - window):index]
    return float(np.median(head)) if head.size else float("nan")
