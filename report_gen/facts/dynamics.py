"""Facts about how each parameter moves across an ordered series of checkpoints.

Parameters are processed name by name, and for each name at most two versions (previous and current
checkpoint) are in memory at once, so peak memory stays near twice the largest tensor.

A tensor that cannot be read from one checkpoint (`CheckpointData.load` raises CheckpointError) is
skipped for that checkpoint only, as if it were missing there; the failures are reported as one
`Problem` per checkpoint through the optional `problems` list of `series_facts`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Collection

import numpy as np
import torch

from report_gen.core import InputError, Problem, ProblemKind
from report_gen.facts.weights import WeightStats, weight_stats
from report_gen.numeric import float64_sum
from report_gen.readers.types import CheckpointData

ProgressFn = Callable[[int, int, str], None]


@dataclass
class ParamSeries:
    """One parameter across the checkpoint series (checkpoint index i = position in the series).

    steps: the step of every checkpoint of the series (None where unknown).
    stats: one WeightStats per checkpoint holding the parameter; `present[k]` is the checkpoint
           index of `stats[k]`.
    rel_update[i]: ||W_{i+1} - W_i|| / ||W_i|| between checkpoints i and i+1 (L2 norms; nan where
           either is missing or the shape changed; inf when ||W_i|| = 0 but the update is not).
    abs_update_mean[i]: mean |W_{i+1} - W_i| (same convention).
    nan_appeared_at: index of the first checkpoint whose tensor holds NaN or Inf, else None.
    unreadable: checkpoint indexes where the tensor is listed but could not be read (skipped, so
           treated like a missing tensor: no stats, and no update into or out of that checkpoint).
    """

    name: str
    steps: list[int | None]
    stats: list[WeightStats]
    rel_update: np.ndarray
    abs_update_mean: np.ndarray
    nan_appeared_at: int | None = None
    present: list[int] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)


class _Failures:
    """Tensor load failures, one entry per checkpoint: (count, first failure message)."""

    def __init__(self) -> None:
        self.by_path: dict[str, tuple[int, str, str]] = {}

    def add(self, path: str, name: str, exc: Exception) -> None:
        count, kind, first = self.by_path.get(path, (0, "", ""))
        if not count:
            kind = str(getattr(exc, "kind", None) or ProblemKind.UNREADABLE_TENSOR)
            text = str(exc)
            if text.startswith(f"{path}: "):  # CheckpointError messages start with the path
                text = text[len(path) + 2:]
            first = f"{name}: {text}" if isinstance(exc, InputError) else f"{name}: {type(exc).__name__}: {text}"
        self.by_path[path] = (count + 1, kind, first)

    def problems(self) -> list[Problem]:
        return [Problem(file=path, kind=ProblemKind.UNREADABLE_TENSOR, severity="warning", count=count,
                        message=f"{count} tensor(s) could not be read from this checkpoint and were skipped "
                                f"({kind}; first: {first.splitlines()[0][:300] if first else ''})")
                for path, (count, kind, first) in self.by_path.items()]


_BLOCK = 1 << 18  # values per block of the update pass


def update_facts(prev: torch.Tensor, cur: torch.Tensor, prev_l2: float) -> tuple[float, float]:
    """(relative L2 update, mean absolute update) from `prev` to `cur` (same shape).

    One pass in blocks of 2**18 values (float32 differences, block sums accumulated in float64): no
    full-size difference tensor is ever allocated. Bit-identical tensors give exactly 0.
    """
    a = cur.detach().reshape(-1)
    b = prev.detach().reshape(-1)
    a = a if a.dtype == torch.float32 else a.to(torch.float32)
    b = b if b.dtype == torch.float32 else b.to(torch.float32)
    n = a.numel()
    if n == 0:
        return math.nan, math.nan
    buf = torch.empty(min(n, _BLOCK))
    sq = abs_sum = 0.0
    for start in range(0, n, _BLOCK):
        d = torch.sub(a[start:start + _BLOCK], b[start:start + _BLOCK], out=buf[:min(_BLOCK, n - start)])
        sq += float(torch.dot(d, d))
        abs_sum += float(torch.abs(d, out=d).sum())
    diff_l2 = math.sqrt(sq)
    abs_mean = abs_sum / n
    if prev_l2 == 0.0:
        return (math.nan if diff_l2 == 0.0 else math.inf), abs_mean
    return diff_l2 / prev_l2, abs_mean


def _ordered_names(ckpts: list[CheckpointData]) -> list[str]:
    names: dict[str, None] = {}
    for ckpt in ckpts:
        names.update(dict.fromkeys(ckpt.tensors))
    return list(names)


def _load(ckpt: CheckpointData, name: str, failures: _Failures) -> torch.Tensor | None:
    try:
        return ckpt.load(name)
    except Exception as exc:  # noqa: BLE001 - CheckpointError by contract; anything else is damage too
        failures.add(ckpt.path, name, exc)
        return None


def _release(t: torch.Tensor | None) -> None:
    if t is not None:
        from report_gen.readers.checkpoint.tree import release_pages

        release_pages(t)


def _param_series(name: str, ckpts: list[CheckpointData], failures: _Failures | None = None,
                  eager: Collection[str] = ()) -> ParamSeries:
    n = len(ckpts)
    series = ParamSeries(name=name, steps=[c.step for c in ckpts], stats=[],
                         rel_update=np.full(max(n - 1, 0), np.nan),
                         abs_update_mean=np.full(max(n - 1, 0), np.nan))
    prev: torch.Tensor | None = None
    prev_l2 = math.nan
    for i, ckpt in enumerate(ckpts):
        if name not in ckpt.tensors:
            _release(prev)
            prev = None
            continue
        cur = _load(ckpt, name, failures if failures is not None else _Failures())
        if cur is None:
            series.unreadable.append(i)
            _release(prev)
            prev = None
            continue
        stats = weight_stats(name, cur, source=reloader(ckpt, name), eager=eager)
        series.stats.append(stats)
        series.present.append(i)
        if series.nan_appeared_at is None and (stats.nan_count or stats.inf_count):
            series.nan_appeared_at = i
        if prev is not None and prev.shape == cur.shape:
            series.rel_update[i - 1], series.abs_update_mean[i - 1] = update_facts(prev, cur, prev_l2)
        _release(prev)
        prev, prev_l2 = cur, stats.l2
    _release(prev)
    return series


def reloader(ckpt: CheckpointData, name: str) -> Callable[[], torch.Tensor]:
    """Reload one tensor of one checkpoint on demand (what WeightStats' expensive facts read)."""
    return lambda: ckpt.load(name)


def _tensor_bytes(ckpts: list[CheckpointData], name: str) -> int:
    total = 0
    for c in ckpts:
        info = c.tensors.get(name)
        if info is not None:
            total += 4 * math.prod(info.shape)  # read as float32
    return total


def _series_in_worker(task: tuple[list[str], bool, list[str], tuple[str, ...]]):
    """A pool worker: open the checkpoints itself (its own file handles and mappings) and compute the
    series of some names; returns them (without loaders) and the failures, in name order."""
    from report_gen.readers.checkpoint import open_checkpoint

    paths, trust, names, eager = task
    ckpts = [open_checkpoint(p, trust_pickles=trust, optimizer=False) for p in paths]
    failures = _Failures()
    return {n: _param_series(n, ckpts, failures, eager) for n in names}, failures.by_path


def _series_pool(ckpts: list[CheckpointData], names: list[str], eager: Collection[str], trust_pickles: bool,
                 jobs: int | None) -> tuple[dict[str, ParamSeries], _Failures] | None:
    """The series of all names computed by a process pool, when the tensors make it pay; else None."""
    from report_gen import parallel, runtime

    plan = runtime.current() if jobs is None else runtime.plan(jobs)
    sizes = [_tensor_bytes(ckpts, n) for n in names]
    if not parallel.worth_a_pool(sum(sizes), len(names), plan.jobs) or any(os.path.isdir(c.path) for c in ckpts):
        return None
    pieces = min(len(names), 4 * plan.jobs)  # contiguous groups of about equal bytes, in name order
    target, groups, current, acc = sum(sizes) / pieces, [], [], 0
    for name, size in zip(names, sizes):
        current.append(name)
        acc += size
        if acc >= target * (len(groups) + 1) and len(groups) < pieces - 1:
            groups.append(current)
            current = []
    groups.append(current)
    tasks = [([c.path for c in ckpts], trust_pickles, g, tuple(eager)) for g in groups if g]
    outcomes = parallel.run_tasks(_series_in_worker, tasks, plan.jobs, max(1, plan.cores // plan.jobs))
    out: dict[str, ParamSeries] = {}
    failures = _Failures()
    for task, outcome in zip(tasks, outcomes):
        if isinstance(outcome, parallel.Crashed):
            for name in task[2]:  # a dead worker: its tensors count as unreadable, in this process's words
                failures.add(ckpts[-1].path, name, RuntimeError(outcome.message))
                out[name] = ParamSeries(name=name, steps=[c.step for c in ckpts], stats=[],
                                        rel_update=np.full(max(len(ckpts) - 1, 0), np.nan),
                                        abs_update_mean=np.full(max(len(ckpts) - 1, 0), np.nan),
                                        unreadable=[i for i, c in enumerate(ckpts) if name in c.tensors])
            continue
        series, by_path = outcome
        for path, (count, kind, first) in by_path.items():
            before = failures.by_path.get(path)
            failures.by_path[path] = (count, kind, first) if before is None else (before[0] + count, before[1], before[2])
        for name, ps in series.items():
            for k, i in enumerate(ps.present):  # loaders of this process for the lazy facts
                ps.stats[k].source = reloader(ckpts[i], name)
            out[name] = ps
    return {n: out[n] for n in names}, failures


def series_facts(ckpts: list[CheckpointData], *, progress: ProgressFn | None = None,
                 problems: list[Problem] | None = None, eager: Collection[str] = (),
                 trust_pickles: bool = False, jobs: int | None = None) -> dict[str, ParamSeries]:
    """ParamSeries for every tensor name found in the (already ordered) checkpoints.

    progress(done, total, name) is called after each name, if given.
    problems: if given, one Problem (kind "unreadable-tensor", severity "warning", count = number of
    tensors) is appended per checkpoint from which some tensor could not be read; those tensors
    are skipped for that checkpoint (see ParamSeries.unreadable) and everything else is computed.
    eager: the expensive WeightStats groups to compute while each tensor is read (facts.weights.EXPENSIVE);
    the others are computed if and when read, by reloading the tensor.
    When the tensors are large enough for it to pay (parallel.worth_a_pool), names are shared among
    forked workers (`jobs`, default: the runtime plan) that reopen the files themselves (with the
    same `trust_pickles`); results are identical and in the same order.
    """
    names = _ordered_names(ckpts)
    pooled = _series_pool(ckpts, names, eager, trust_pickles, jobs) if len(names) > 1 else None
    if pooled is not None:
        out, failures = pooled
        if progress is not None:
            progress(len(names), len(names), names[-1])
    else:
        failures = _Failures()
        out = {}
        for done, name in enumerate(names, start=1):
            out[name] = _param_series(name, ckpts, failures, eager)
            if progress is not None:
                progress(done, len(names), name)
    if problems is not None:
        problems.extend(failures.problems())
    return out
