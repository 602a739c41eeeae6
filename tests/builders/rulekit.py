"""Builders for rule tests: runs assembled in memory from series, histograms and state dicts.

Histograms are built from real samples (exact min/max/num/sum/sum_squares, np.histogram buckets), and
checkpoints are real CheckpointData objects over in-memory tensors, so rules see exactly what the
readers would hand them.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from report_gen.core import Problem
from report_gen.facts.run import RunFacts
from report_gen.readers.signals import Series, Signals
from report_gen.readers.types import CheckpointData, HistogramSeries, RunLog, TensorInfo
from report_gen.rules.base import REGISTRY, all_rules


def series(tag: str, values, steps=None) -> Series:
    v = np.asarray(values, dtype=np.float64)
    s = np.arange(len(v), dtype=np.int64) if steps is None else np.asarray(steps, dtype=np.int64)
    return Series(tag, s, v, s.astype(float))


def _tensorflow_edges() -> np.ndarray:
    """The bucket edges TensorBoard writers use by default (±1e-12 · 1.1^k, and 0)."""
    pos, v = [], 1e-12
    while v < 1e20:
        pos.append(v)
        v *= 1.1
    pos = np.array(pos)
    return np.concatenate([-pos[::-1], [0.0], pos])


TF_EDGES = _tensorflow_edges()


def hist(tag: str, samples: list[np.ndarray], steps=None) -> HistogramSeries:
    """A HistogramSeries as torch's SummaryWriter.add_histogram writes it (default 'tensorflow' bins)."""
    n = len(samples)
    steps = np.arange(n, dtype=np.int64) if steps is None else np.asarray(steps, dtype=np.int64)
    h = HistogramSeries(tag, steps, steps.astype(float), *(np.zeros(n) for _ in range(5)))
    for i, x in enumerate(samples):
        x = np.asarray(x, dtype=np.float64).ravel()
        h.min[i], h.max[i], h.num[i] = x.min(), x.max(), x.size
        h.sum[i], h.sum_squares[i] = x.sum(), (x * x).sum()
        counts, edges = np.histogram(x[np.isfinite(x)], bins=TF_EDGES)
        nz = np.flatnonzero(counts)
        lo, hi = (nz[0], nz[-1] + 1) if nz.size else (0, 0)
        h.limits.append(edges[1:][lo:hi])
        h.counts.append(counts[lo:hi].astype(float))
    return h


def mem_checkpoint(state: dict[str, torch.Tensor], step: int | None, *, optimizer: dict | None = None,
                   path: str | None = None) -> CheckpointData:
    tensors = {k: v.detach().clone().float() for k, v in state.items()}
    infos = {k: TensorInfo(k, tuple(v.shape), "float32") for k, v in tensors.items()}
    for k, info in infos.items():
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            info.role = "buffer"
    return CheckpointData(path or f"mem/step_{step}.pt", step, "content", "memory", infos,
                          lambda n: tensors[n].clone(), optimizer=optimizer)


def make_run(name: str = "run", *, signals: Signals | None = None, checkpoints=(), probe=(),
             problems=()) -> RunFacts:
    return RunFacts(name=name, path=f"/runs/{name}", events=RunLog.empty(), signals=signals or Signals(),
                    checkpoints=list(checkpoints), problems=list(problems), probe=list(probe))


def hits(run: RunFacts, code: str, **options: Any):
    all_rules()
    rule = REGISTRY[code]
    if not any(n in run.available for n in rule.needs):
        raise AssertionError(f"{code} would not be evaluated on this run (needs any of {rule.needs}, "
                             f"has {sorted(run.available)})")
    return list(rule.func(run, rule.make_options(options)))


def problem(file: str, kind: str, severity: str = "warning", offset: int | None = None) -> Problem:
    return Problem(file=file, kind=kind, message=f"{kind} in {file}", severity=severity, offset=offset)


def decaying(n: int = 100, start: float = 2.3, end: float = 0.05, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)
    return end + (start - end) * np.exp(-5 * t) + noise * rng.standard_normal(n)


def cnn_state(seed: int = 0, out: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "conv1.weight": torch.randn(out, 3, 3, 3, generator=g) * 0.2,
        "conv1.bias": torch.randn(out, generator=g) * 0.01,
        "conv2.weight": torch.randn(out * 2, out, 3, 3, generator=g) * 0.08,
        "conv2.bias": torch.randn(out * 2, generator=g) * 0.01,
        "fc.weight": torch.randn(10, out * 2, generator=g) * 0.15,
        "fc.bias": torch.zeros(10),
    }
