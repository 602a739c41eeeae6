"""Reading one discovered run: its logs and its checkpoints, every piece of damage a graded Problem.

The engine calls `read_run` and gets all the readers know about a run; the readers decide how severe
their problems are (`core.ProblemKind` holds the default severities), the engine never does. Then
`split_models` makes one run per model when a run's checkpoints hold several (discovery goes by names
and cannot know).
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from report_gen.core import Problem, ProblemKind
from report_gen.readers.discovery import RunSpec
from report_gen.readers.registry import read_logs
from report_gen.readers.types import CheckpointData, RunLog

#: what a writer that was opened and never used leaves (an event file with only its version record, or
#: none at all): no damage, nothing to read yet
_UNUSED_LOG = frozenset({ProblemKind.VERSION_ONLY.value, ProblemKind.EMPTY_FILE.value})


@dataclass
class RunInputs:
    """What the readers made of one run.

    log: every log file of the run merged into one RunLog (empty when the run has none)
    checkpoints: the usable checkpoints, in training order
    problems: every problem, graded: the log's, then the checkpoints' in path order, then the run's
        own ("nothing-readable" when neither logs nor checkpoints gave anything)
    """

    log: RunLog
    checkpoints: list[CheckpointData] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def read_run(spec: RunSpec, *, trust_pickles: bool = False,
             progress: Callable[[str, int, int], None] | None = None, tensors: bool = True,
             isolate: bool = False) -> RunInputs:
    """Read the logs and checkpoints of one run. Never raises for damaged files.

    progress(message, i, n) is called before the i-th of the run's n checkpoints is opened.
    tensors=False: checkpoints are opened for their names, shapes, steps and optimizer param groups only
    (no optimizer state tensors, no tensor data), for a caller that needs no checkpoint tensor facts.
    isolate: checkpoints are vetted in a limited worker process first (`readers.isolation`).
    """
    log = read_logs(spec.event_files, where=spec.path, member=spec.member)
    problems = list(log.problems)
    ckpts: list[CheckpointData] = []
    if spec.checkpoints:  # torch is imported only when there is a checkpoint to read
        from report_gen.readers.checkpoint import read_checkpoints

        def opening(i: int, n: int) -> None:
            if progress is not None:
                progress(f"{spec.name}: checkpoint {i + 1}/{n}", i, n)

        ckpts, found = read_checkpoints(spec.checkpoints, trust_pickles=trust_pickles, progress=opening,
                                        optimizer=tensors, isolate=isolate)
        problems.extend(found)
    if not ckpts and log.table.empty and not log.histograms and (spec.event_files or spec.checkpoints):
        if not spec.checkpoints and all(p.kind in _UNUSED_LOG for p in problems):
            # log files that were opened and never written (or hold a graph only): info, the run is `unknown`
            problems.append(Problem(file=spec.path, kind=ProblemKind.NOTHING_READABLE, severity="info",
                                    message="the log files hold no data yet: a writer that was opened and never "
                                            "used, or a graph only"))
        else:
            problems.append(Problem(file=spec.path, kind=ProblemKind.NOTHING_READABLE,
                                    message="no scalar, histogram or checkpoint data could be read from this run"))
    return RunInputs(log, ckpts, problems)


# ------------------------------------------------------------------------------------- models


def _model_of(ckpt: CheckpointData) -> dict[str, tuple[int, ...]]:
    return {n: t.shape for n, t in ckpt.tensors.items() if t.role == "param"} or \
        {n: t.shape for n, t in ckpt.tensors.items()}


def same_model(a: dict[str, tuple[int, ...]], b: dict[str, tuple[int, ...]]) -> bool:
    """Two checkpoints hold one model when the parameters they share have the same shapes and they share
    at least half of the smaller one's parameters (a few tensors skipped as unreadable, or a head added
    during training, do not make another model)."""
    shared = a.keys() & b.keys()
    return bool(shared) and len(shared) * 2 >= min(len(a), len(b)) and all(a[n] == b[n] for n in shared)


def _model_name(paths: list[str], index: int) -> str:
    """`autoencoder` for autoencoder_epoch_1.pt, autoencoder_epoch_2.pt; else model-<index>."""
    stems = [os.path.basename(os.path.normpath(p)).split(".", 1)[0] for p in paths]
    prefix = os.path.commonprefix(stems)
    name = re.sub(r"([_\-=.]*(epoch|step|ckpt|checkpoint|iter|it)?[_\-=.]*\d*)+$", "", prefix, flags=re.IGNORECASE)
    return name or f"model-{index}"


def split_models(spec: RunSpec, inputs: RunInputs) -> list[tuple[RunSpec, RunInputs]]:
    """One run per model when the checkpoints of `spec` hold several (different parameter names or shapes):
    checkpoints of different models are never one training series.

    Checkpoints are grouped in training order, each joining the first group of the same model
    (`same_model`). One group: the run as it is. Several: a group holding more checkpoints than every
    other stays with the logs in the run; every other group becomes a checkpoint-only run
    `<run>/<model>` (the common start of its file names, `autoencoder` for `autoencoder_epoch_3.pt`, else
    `model-<i>`) with its checkpoints' problems; on a tie for the largest every group splits off and the
    run keeps its logs alone (whose logs would they be?). Each affected run gets one "mixed-models"
    Problem (info) saying how the checkpoints were split.
    """
    groups: list[tuple[dict[str, tuple[int, ...]], list[CheckpointData]]] = []
    for ckpt in inputs.checkpoints:
        model = _model_of(ckpt)
        for shapes, members in groups:
            if same_model(shapes, model):
                members.append(ckpt)
                shapes.update({k: v for k, v in model.items() if k not in shapes})
                break
        else:
            groups.append((dict(model), [ckpt]))
    if len(groups) <= 1:
        return [(spec, inputs)]
    sizes = sorted((len(m) for _, m in groups), reverse=True)
    keep = next(i for i, (_, m) in enumerate(groups) if len(m) == sizes[0]) if sizes[0] > sizes[1] else None
    names, taken = [], {spec.name}
    for i, (_, members) in enumerate(groups, start=1):
        base = f"{spec.name}/{_model_name([c.path for c in members], i)}"
        name, n = base, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name)
        names.append(name)
    split = [(names[i], members) for i, (_, members) in enumerate(groups) if i != keep]
    kept = groups[keep][1] if keep is not None else []
    summary = "; ".join(f"{name}: {len(members)}" for name, members in split)
    note = (f"checkpoints of {len(groups)} different models (different parameter names or shapes) are never one "
            f"series: {'the largest group stays here, ' if kept else ''}the others are read as runs of their own "
            f"({summary} checkpoint(s))")
    moved = {c.path for _, members in split for c in members}
    out = []
    own = [p for p in inputs.problems if p.file not in moved]
    if inputs.log.files or kept:
        out.append((dataclasses.replace(spec, checkpoints=[c.path for c in kept]),
                    RunInputs(inputs.log, kept, own + [Problem(spec.path, ProblemKind.MIXED_MODELS, note)])))
    for name, members in split:
        paths = {c.path for c in members}
        out.append((RunSpec(name, spec.path, [], [c.path for c in members]),
                    RunInputs(RunLog.empty(), members, [p for p in inputs.problems if p.file in paths]
                              + [Problem(spec.path, ProblemKind.MIXED_MODELS, note)])))
    return out
