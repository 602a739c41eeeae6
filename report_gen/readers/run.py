"""Reading one discovered run: its logs and its checkpoints, every piece of damage a graded Problem.

The engine calls `read_run` and gets all the readers know about a run; the readers decide how severe
their problems are (`core.ProblemKind` holds the default severities), the engine never does.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from report_gen.core import Problem, ProblemKind
from report_gen.readers.discovery import RunSpec
from report_gen.readers.registry import read_logs
from report_gen.readers.types import CheckpointData, RunLog


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
             progress: Callable[[str, int, int], None] | None = None, isolate: bool = False) -> RunInputs:
    """Read the logs and checkpoints of one run. Never raises for damaged files.

    progress(message, i, n) is called before the i-th of the run's n checkpoints is opened.
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
                                        isolate=isolate)
        problems.extend(found)
    if not ckpts and log.scalars.empty and not log.histograms and (spec.event_files or spec.checkpoints):
        problems.append(Problem(file=spec.path, kind=ProblemKind.NOTHING_READABLE,
                                message="no scalar, histogram or checkpoint data could be read from this run"))
    return RunInputs(log, ckpts, problems)
