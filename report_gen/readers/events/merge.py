"""Merging the decoded files of ONE run, and the step policy.

Sub-folders
    ``read_events`` gets ``(path, sub)`` pairs for one run. ``sub`` is recorded, not interpreted: in the
    scalar DataFrame the ``run`` column holds ``sub`` ("" for files directly in the run folder); the keys
    of ``histograms``, ``images`` and ``texts`` (and the ``tag`` attribute of their items) are ``tag``
    when ``sub == ""`` and ``f"{sub}/{tag}"`` otherwise. Files of the same sub are merged in write order:
    by the wall time of their first event, then by file name.

Order of tags
    ``histograms``, ``images`` and ``texts`` are dicts in order of FIRST APPEARANCE (write order): subs
    in sorted order ("" first), then files in merge order, then records in file order; a tag first
    logged in a later file comes after every tag of the earlier files. Downstream code relies on this:
    loggers write per-layer histograms from the input layer to the output layer, so key order is model
    depth (alphabetical order would put ``classifier.*`` before ``features.*``). The scalar DataFrame
    is NOT in write order: its rows are sorted by ``run``, then ``tag`` (both alphabetically), then
    step, then write order.

Step policy (like TensorBoard's purge of orphaned data)
    Values of one (sub, tag) are taken in write order. A value at step ``s`` starts a *restart* when
    ``s`` is <= a step already seen for that tag and the value comes from a different writing session
    than the previous value: a later file, or after a TF1 ``session_log`` START record. On a restart
    every earlier value at a step >= ``s`` is dropped. Within one session nothing is dropped: several
    values at the same step (per-batch values logged with the epoch as step) and even steps going
    backwards (one tag logged by two loops with different step counters) are all kept, then ordered by
    step. No wall-time gap threshold is used: a restarted process always writes a new file (torch, TF
    and Keras writers name files by time, host and pid), while a long pause inside one file is usually
    just a slow epoch or an evaluation. Each file that restarts a series gets one
    ``Problem(kind="step-restart", severity="info")`` with the number of values dropped.

    An *appended evaluation* is not a restart: a later session (file, or TF1 session) whose every
    value sits at ONE step, and whose every series is an evaluation series (`signals.
    is_evaluation_series`: a val/eval/test tag or folder, or an epoch counter), and that holds no
    histogram, image or text. That is what `trainer.evaluate()` after `trainer.train()` writes (HF
    examples do it; the TensorBoardCallback opens a new file): `eval/*` and `train/epoch` at the final
    step. Its values are merged like those of one session (nothing dropped, several values at one step
    kept in write order). The same tags at the same step earlier are NOT a sign of a restart: the
    Trainer's final evaluate() repeats the last in-training evaluation when the last step is an
    evaluation step (the real fixtures `hf/bert-healthy-tensorboard` and `hf/gpt2-healthy-tensorboard`).
    A session that logs a training series (loss, lr, grad norm), a histogram, or values at two
    different steps is judged by the restart rule above, whatever else it holds.
    After the policy, values are ordered by step (ties in write order); ``max_per_tag`` then keeps that
    many values per tag, evenly spaced and always including the first and the last.
"""
from __future__ import annotations

import os

import numpy as np

from report_gen.core import Problem, ProblemKind
from report_gen.numeric import unique
from report_gen.readers.events.decode import FileContent, HistBatch
from report_gen.readers.signals import is_evaluation_series
from report_gen.readers.types import HistogramSeries, ImageRef, RunLog, ScalarSeries


def merge_key(content: FileContent) -> tuple:
    first_wall = content.first[1] if content.first else float("inf")
    return (content.sub, first_wall, os.path.basename(content.path), content.path)


class Restarts:
    """Dropped-value counts per file that restarted a series, turned into Problems at the end."""

    def __init__(self) -> None:
        self.dropped: dict[str, int] = {}
        self.first_step: dict[str, int] = {}
        self.tags: dict[str, set[str]] = {}

    def add(self, path: str, tag: str, step: int, dropped: int) -> None:
        self.dropped[path] = self.dropped.get(path, 0) + dropped
        self.first_step[path] = min(step, self.first_step.get(path, step))
        self.tags.setdefault(path, set()).add(tag)

    def problems(self) -> list[Problem]:
        return [Problem(path, ProblemKind.STEP_RESTART,
                        f"{path}: training restarted (steps went back to {self.first_step[path]}); "
                        f"{n} earlier value(s) of {len(self.tags[path])} tag(s) at later steps dropped",
                        severity="info", count=n)
                for path, n in self.dropped.items()]


def apply_step_policy(steps: np.ndarray, sessions: np.ndarray | None, max_per_tag: int | None,
                      appended: frozenset[int] = frozenset()) -> tuple[np.ndarray, list]:
    """Apply the step policy to one series in write order.

    Returns the indices to keep (ordered by step, ties in write order, thinned to ``max_per_tag``) and
    the restarts as ``(index, dropped)`` pairs. Sessions in ``appended`` (appended evaluations) never
    start a restart; ``sessions`` None means one writing session (which never restarts).
    """
    kept, restarts = step_policy(steps, sessions, max_per_tag, appended)
    return (np.arange(steps.size) if kept is None else kept), restarts


def step_policy(steps: np.ndarray, sessions: np.ndarray | None, max_per_tag: int | None,
                appended: frozenset[int] = frozenset()) -> tuple[np.ndarray | None, list]:
    """`apply_step_policy`, with None for "every value, as they are" (one session, logged in step
    order, nothing to thin: the usual series, which then needs no copy)."""
    n = steps.size
    keep = None
    restarts = []
    if n > 1 and sessions is not None:
        new_session = sessions[1:] != sessions[:-1]
        if new_session.any():  # one writing session (the usual case) never restarts
            if appended:
                new_session &= ~np.isin(sessions[1:], list(appended))
            prev_max = np.maximum.accumulate(steps)[:-1]
            starts = np.flatnonzero((steps[1:] <= prev_max) & new_session) + 1
            if starts.size:
                keep, restarts = _apply_restarts(steps, starts)
    kept = None if keep is None else np.flatnonzero(keep)
    in_order = steps if kept is None else steps[kept]
    if in_order.size > 1 and np.any(in_order[1:] < in_order[:-1]):  # usually logged in step order already
        order = np.argsort(in_order, kind="stable")
        kept = order if kept is None else kept[order]
    if max_per_tag is not None and in_order.size > max_per_tag:
        thinned = unique(np.linspace(0, in_order.size - 1, max_per_tag).round().astype(np.int64))
        kept = thinned if kept is None else kept[thinned]
    return kept, restarts


def _apply_restarts(steps: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(keep mask, [(restart index, values it dropped)]) for the restarts at `starts` (ascending).

    Value j is dropped by the FIRST restart i > j with steps[i] <= steps[j] (the one that drops it
    when restarts are applied one after the other in write order). Found for all values at once:
    a value is dropped at all when its step is >= the smallest restart step after it (a suffix
    minimum); for those, the first such restart is found by binary lifting over a sparse table of
    minima of the restart steps (block k holds the minimum of 2**k consecutive restarts). O((n + r)
    log r) numpy work for n values and r restarts, no Python loop over either, where applying the
    restarts one by one costs O(n r) (10,000 restarts: benchmarks/README-hostile.md).
    """
    n, r = steps.size, starts.size
    restart_steps = steps[starts]
    # smallest restart step strictly after each value
    after = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    suffix_min = np.minimum.accumulate(restart_steps[::-1])[::-1]
    first_after = np.searchsorted(starts, np.arange(n), side="right")  # first restart index > j
    has_after = first_after < r
    after[has_after] = suffix_min[first_after[has_after]]
    dropped = steps >= after
    dropper = np.full(n, -1, dtype=np.int64)
    queries = np.flatnonzero(dropped)
    if queries.size:
        levels = max(int(r - 1).bit_length(), 1)
        padded = np.concatenate([restart_steps, np.full(1 << levels, np.iinfo(np.int64).min)])
        table = [padded]
        for k in range(1, levels + 1):
            prev, width = table[-1], 1 << (k - 1)
            table.append(np.minimum(prev, np.concatenate([prev[width:], np.full(width, np.iinfo(np.int64).min)])))
        pos = first_after[queries]
        wanted = steps[queries]
        for k in range(levels, -1, -1):  # skip every block of 2**k restarts whose minimum is above the step
            skip = table[k][pos] > wanted
            pos = pos + np.where(skip, 1 << k, 0)
        dropper[queries] = starts[pos]
    counts = np.bincount(dropper[queries], minlength=n) if queries.size else np.zeros(n, dtype=np.int64)
    return ~dropped, [(i, int(counts[i])) for i in starts.tolist() if counts[i]]


def _session_ids(group: list[FileContent], file_index: np.ndarray, seqs: np.ndarray) -> np.ndarray:
    """Writing-session number of each value: files in merge order, split at session_log START."""
    base = np.cumsum([0] + [len(c.session_starts) + 1 for c in group])
    sessions = base[file_index].astype(np.int64)
    if any(c.session_starts for c in group):  # each file's rows found once (not one mask per file)
        by_file = np.argsort(file_index, kind="stable")
        bounds = np.searchsorted(file_index[by_file], np.arange(len(group) + 1))
        for i, content in enumerate(group):
            if content.session_starts:
                rows = by_file[bounds[i]:bounds[i + 1]]
                sessions[rows] += np.searchsorted(np.asarray(content.session_starts), seqs[rows], side="right")
    return sessions


def appended_evaluations(sub: str, group: list[FileContent]) -> frozenset[int]:
    """Session ids (as `_session_ids` numbers them) of the appended evaluations of one sub (see the
    module docstring); the first session never is one."""
    spans: dict[int, tuple[int, int]] = {}  # session -> (lowest, highest) step it wrote a scalar at
    blocked: set[int] = set()
    evaluation: dict[str, bool] = {}  # per tag, not per record (a million records, a few tags)
    base = np.cumsum([0] + [len(c.session_starts) + 1 for c in group])
    for i, content in enumerate(group):
        starts = np.asarray(content.session_starts, dtype=np.int64)

        def session(seqs: np.ndarray) -> np.ndarray:
            return base[i] + np.searchsorted(starts, seqs, side="right")

        for (codes, names), cols in zip(content.scalar_tags, content.scalar_cols):
            if not cols[0].size:
                continue
            # one session for the whole part (a file without TF1 session STARTs): no per-record ids
            ids = session(np.asarray(cols[0], dtype=np.int64)) if starts.size else None
            is_eval = np.array([evaluation.setdefault(t, is_evaluation_series(t, sub)) for t in names], dtype=bool)
            if not is_eval.all():
                blocked.update([int(base[i])] if ids is None else _distinct(ids[~is_eval[codes]]))
            steps = np.asarray(cols[1], dtype=np.int64)
            for sid in [int(base[i])] if ids is None else _distinct(ids):  # sessions of one part: one or a few
                mine = steps if ids is None or ids[0] == ids[-1] == sid else steps[ids == sid]
                lo, hi = int(mine.min()), int(mine.max())
                old = spans.get(sid)
                spans[sid] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
        for attr in ("histograms", "images", "texts"):
            for points in getattr(content, attr).values():
                if points:
                    blocked.update(session(np.array([p.seq for p in points], dtype=np.int64)).tolist())
        for batches in content.hist_batches.values():  # histograms decoded in bulk
            for batch in batches:
                if batch.seqs.size:
                    blocked.update(session(np.asarray(batch.seqs, dtype=np.int64)).tolist())
    return frozenset(sid for sid, (lo, hi) in spans.items() if sid > 0 and lo == hi and sid not in blocked)


def _distinct(ids: np.ndarray) -> list[int]:
    """The distinct values of `ids`; one pass when they are in order (a part's session ids are: its
    records are in file order), a sort otherwise."""
    if ids.size and np.all(ids[1:] >= ids[:-1]):
        return ids[np.concatenate([[0], np.flatnonzero(ids[1:] != ids[:-1]) + 1])].tolist()
    return np.unique(ids).tolist()


def merge_scalars(sub: str, group: list[FileContent], max_per_tag: int | None,
                  restarts: Restarts, appended: frozenset[int] = frozenset()) -> list[ScalarSeries]:
    parts = [(i, tags, cols) for i, c in enumerate(group) for tags, cols in zip(c.scalar_tags, c.scalar_cols)]
    if not parts:
        return []
    index: dict[str, int] = {}  # tag -> code over the whole sub
    remaps = [np.array([index.setdefault(t, len(index)) for t in names], dtype=np.int64) for _, (_, names), _ in parts]
    names = sorted(index)
    rank = np.empty(len(names), dtype=np.int64)
    rank[[index[t] for t in names]] = np.arange(len(names))
    # codes in alphabetical order of the tags, one gather per part
    codes = _joined([rank[remap][part_codes] for remap, (_, (part_codes, _), _) in zip(remaps, parts)])
    seqs, steps, walls, values = (_joined([cols[k] for _, _, cols in parts]) for k in range(4))
    one_file = all(i == parts[0][0] for i, _, _ in parts)
    file_index = None if one_file else np.concatenate([np.full(cols[0].size, i, dtype=np.int64) for i, _, cols in parts])
    written = seqs if one_file else file_index * (1 << 40) + seqs  # write order (files in merge order, then records)
    first = np.argsort(written, kind="stable") if written.size > 1 and np.any(written[1:] < written[:-1]) else None
    # sessions: None when every value comes from one writing session (one file, no TF1 session START)
    sessions = None if one_file and not group[parts[0][0]].session_starts else _session_ids(
        group, np.zeros(seqs.size, dtype=np.int64) + parts[0][0] if one_file else file_index, seqs)
    out = []
    for code, rows in enumerate(_rows_per_code(codes if first is None else codes[first], len(names))):
        if first is not None:
            rows = first[rows]  # per tag, in write order
        tag_steps = steps[rows]
        kept, found = step_policy(tag_steps, None if sessions is None else sessions[rows], max_per_tag, appended)
        for i, dropped in found:
            where = parts[0][0] if file_index is None else file_index[rows[i]]
            restarts.add(group[where].path, names[code], int(tag_steps[i]), dropped)
        if kept is not None:
            rows, tag_steps = rows[kept], tag_steps[kept]
        out.append(ScalarSeries(sub, names[code], tag_steps.astype(np.int64, copy=False),
                                walls[rows].astype(np.float64, copy=False), values[rows].astype(np.float64, copy=False)))
    return out


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    """One array of them all (the array itself when there is one)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _rows_per_code(codes: np.ndarray, k: int) -> list[np.ndarray]:
    """For each code 0..k-1, the indices where it occurs, ascending: a pass per code for a few codes, a
    stable radix sort (int16 keys) for many."""
    if k <= 16:
        return [np.flatnonzero(codes == c) for c in range(k)]
    keys = codes.astype(np.int16) if k < (1 << 15) else codes
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(k + 1)).tolist()
    return [order[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]


def merge_points(sub: str, group: list[FileContent], max_per_tag: int | None, restarts: Restarts,
                 data: RunLog) -> None:
    """Merge histograms, images and texts of one sub into ``data`` (keys prefixed with ``sub/``)."""
    prefix = f"{sub}/" if sub else ""
    merge_histograms(prefix, group, max_per_tag, restarts, data)
    for attr in ("images", "texts"):
        # first appearance: files in merge order, then (dict insertion order) records in file order
        tags = dict.fromkeys(tag for c in group for tag in getattr(c, attr))
        for tag in tags:
            points = [(i, p) for i, c in enumerate(group) for p in getattr(c, attr).get(tag, [])]
            if not points:
                continue
            file_index = np.array([i for i, _ in points], dtype=np.int64)
            seqs = np.array([p.seq for _, p in points], dtype=np.int64)
            steps = np.array([p.step for _, p in points], dtype=np.int64)
            kept, found = apply_step_policy(steps, _session_ids(group, file_index, seqs), max_per_tag)
            for i, dropped in found:
                restarts.add(group[points[i][0]].path, tag, int(steps[i]), dropped)
            chosen = [points[k][1] for k in kept.tolist()]
            key = prefix + tag
            if attr == "images":
                data.images[key] = [ImageRef(key, p.step, w, h, enc) for p in chosen for w, h, enc in p.payload]
            else:
                data.texts[key] = [(p.step, p.payload) for p in chosen]


def _histogram_tags(group: list[FileContent]) -> list[str]:
    """Histogram tags in order of first appearance: files in merge order, then records in file order
    (whichever decoder, bulk or protobuf, read a tag's first record)."""
    tags: dict[str, None] = {}
    for c in group:
        first = {tag: points[0].seq for tag, points in c.histograms.items() if points}
        for tag, seq in c.hist_first.items():
            first[tag] = min(seq, first.get(tag, seq))
        tags.update(dict.fromkeys(sorted(first, key=first.__getitem__)))
    return list(tags)


def _file_histograms(c: FileContent, tag: str) -> HistBatch | None:
    """Every value of `tag` in one file, bulk-decoded and protobuf-decoded together, in write order."""
    parts = list(c.hist_batches.get(tag, []))
    points = c.histograms.get(tag, [])
    if points:
        stats = np.array([p.payload[:5] for p in points], dtype=np.float64).reshape(-1, 5)
        parts.append(HistBatch(np.array([p.seq for p in points], dtype=np.int64),
                               np.array([p.step for p in points], dtype=np.int64),
                               np.array([p.wall_time for p in points], dtype=np.float64), stats,
                               [p.payload[5] for p in points], [p.payload[6] for p in points]))
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    seqs = np.concatenate([p.seqs for p in parts])
    order = np.argsort(seqs, kind="stable")
    limits = [a for p in parts for a in p.limits]
    counts = [a for p in parts for a in p.counts]
    return HistBatch(seqs[order], np.concatenate([p.steps for p in parts])[order],
                     np.concatenate([p.wall_times for p in parts])[order],
                     np.concatenate([p.stats for p in parts])[order],
                     [limits[k] for k in order.tolist()], [counts[k] for k in order.tolist()])


def merge_histograms(prefix: str, group: list[FileContent], max_per_tag: int | None, restarts: Restarts,
                     data: RunLog) -> None:
    """Merge the histograms of one sub into ``data`` (step policy as for every other kind)."""
    for tag in _histogram_tags(group):
        per_file = [(i, h) for i, c in enumerate(group) if (h := _file_histograms(c, tag)) is not None]
        file_index = np.concatenate([np.full(h.seqs.size, i, dtype=np.int64) for i, h in per_file])
        seqs = np.concatenate([h.seqs for _, h in per_file])
        steps = np.concatenate([h.steps for _, h in per_file]).astype(np.int64)
        kept, found = apply_step_policy(steps, _session_ids(group, file_index, seqs), max_per_tag)
        for i, dropped in found:
            restarts.add(group[file_index[i]].path, tag, int(steps[i]), dropped)
        stats = np.concatenate([h.stats for _, h in per_file])[kept]
        limits = [a for _, h in per_file for a in h.limits]
        counts = [a for _, h in per_file for a in h.counts]
        rows = kept.tolist()
        key = prefix + tag
        data.histograms[key] = HistogramSeries(
            tag=key, steps=steps[kept], wall_times=np.concatenate([h.wall_times for _, h in per_file])[kept],
            min=stats[:, 0].copy(), max=stats[:, 1].copy(), num=stats[:, 2].copy(), sum=stats[:, 3].copy(),
            sum_squares=stats[:, 4].copy(), limits=[limits[k] for k in rows], counts=[counts[k] for k in rows])
