"""The entry points: one checkpoint (`open_checkpoint`), the checkpoints of a run with their graded
problems (`read_checkpoints`), and a series in training order (`order_series`)."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from report_gen.core import Problem, ProblemKind
from report_gen.readers.checkpoint.errors import CheckpointError, SavedTensor, one_line
from report_gen.readers.checkpoint.hf import open_folder, open_index, open_single_file
from report_gen.readers.checkpoint.tree import LoadPolicy, load_policy
from report_gen.readers.types import CheckpointData

log = logging.getLogger("report_gen")


def open_checkpoint(path: str, *, trust_pickles: bool = False, optimizer: bool = True) -> CheckpointData:
    """Open one checkpoint (file, shard index or model folder) lazily.

    Raises CheckpointError (an InputError) with a one-line message when nothing usable can be read,
    and never any other exception: an unexpected failure becomes kind "unreadable".
    optimizer=False: of the optimizer state only its param groups are read (kind, learning rates: no
    tensor data is read when opening).
    """
    return _open(path, load_policy(trust_pickles), optimizer)


def _open(path: str, policy: LoadPolicy, optimizer: bool = True) -> CheckpointData:
    try:
        if os.path.isdir(path):
            return open_folder(path, policy, optimizer)
        if not os.path.exists(path):
            raise CheckpointError(path, ProblemKind.MISSING, "no such file")
        if path.endswith(".json"):
            return open_index(path, policy, optimizer)
        return open_single_file(path, policy, optimizer)
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(path, ProblemKind.UNREADABLE, "could not be read (structure nested too deeply)") from None
    except OSError as exc:
        raise CheckpointError(path, ProblemKind.UNREADABLE,
                              f"cannot read file ({exc.strerror or one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - one damaged file must never end the report
        raise CheckpointError(path, ProblemKind.UNREADABLE, f"could not be read ({type(exc).__name__}: "
                                                            f"{one_line(exc)})") from None


def read_checkpoints(paths: Sequence[str], *, trust_pickles: bool = False,
                     progress: Callable[[int, int], None] | None = None, optimizer: bool = True,
                     isolate: bool = False,
                     ) -> tuple[list[CheckpointData], list[Problem]]:
    """Open the checkpoints of ONE run: the usable ones in training order, and every problem found.

    Never raises for a damaged file. A file that cannot be used is one Problem graded by the default
    severity of its kind: a file that is no checkpoint ("no-weights", "not-a-checkpoint") is info,
    anything else a warning. A bare tensor saved beside the checkpoints (the probe batch, embeddings:
    `SavedTensor`) is data, not a problem: it is reported only when no checkpoint could be used (it then
    says why none was read). Problems are in path order, each file's own problems (unsafe globals
    replaced, tensors skipped) where the file comes. progress(i, n) is called before the i-th of n files
    is opened. optimizer=False: of the optimizer state only its param groups are read (opening then reads
    no tensor data at all: only the pickles, headers and indexes).
    isolate: each file is first opened in a worker process with CPU, memory and time limits
    (`readers.isolation`; not with trust_pickles): a crash or hang there is one "unreadable" Problem.
    """
    policy = load_policy(trust_pickles)
    vetting = _isolation() if isolate and not trust_pickles else None
    try:
        ckpts, problems = _read_all(paths, policy, progress, vetting, optimizer)
    finally:
        if vetting is not None:
            vetting.close()
    return order_series(ckpts), problems


def _read_all(paths: Sequence[str], policy: LoadPolicy, progress: Callable[[int, int], None] | None,
              vetting, optimizer: bool = True) -> tuple[list[CheckpointData], list[Problem]]:
    ckpts, problems = [], []
    saved_tensors: list[tuple[int, Problem]] = []
    for i, path in enumerate(paths):
        if progress is not None:
            progress(i, len(paths))
        try:
            if vetting is not None:
                _vet(vetting, path)
            ckpt = _open(path, policy, optimizer)
        except SavedTensor as e:
            saved_tensors.append((len(problems), Problem(file=path, kind=e.kind, message=str(e))))
            continue
        except CheckpointError as e:
            problems.append(Problem(file=path, kind=e.kind, message=str(e), severity=e.severity))
            continue
        except Exception as e:  # noqa: BLE001 - one odd file must not lose the rest of the report
            log.debug("opening %s failed", path, exc_info=True)
            problems.append(Problem(file=path, kind=ProblemKind.UNREADABLE,
                                    message=f"{path}: could not be read ({type(e).__name__}: {e})"))
            continue
        problems.extend(ckpt.problems)
        if ckpt.tensors:
            ckpts.append(ckpt)
    if not ckpts:  # then the saved tensors say why no checkpoint was read
        for offset, (at, problem) in enumerate(saved_tensors):
            problems.insert(at + offset, problem)
    elif saved_tensors:
        log.debug("not checkpoints (saved tensors): %s", ", ".join(p.file for _, p in saved_tensors))
    return ckpts, problems


def _isolation():
    from report_gen.readers.isolation import Isolation

    return Isolation()


def _identity(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _vet(vetting, path: str) -> None:
    """Open `path` in an isolated worker first; CheckpointError with the worker's outcome when it
    could not be opened there (then the parent never parses it), or when the file changed since."""
    before = _identity(path)
    verdict = vetting.vet(path)
    if not verdict.ok:
        raise CheckpointError(path, ProblemKind(verdict.kind), verdict.problem, verdict.severity)
    if _identity(path) != before:
        raise CheckpointError(path, ProblemKind.UNREADABLE, "the file changed while it was read in an isolated "
                                                            "worker; not read")


def order_series(ckpts: list[CheckpointData]) -> list[CheckpointData]:
    """Checkpoints in training order: by step (from content, else file name), then mtime, then path.
    Checkpoints without any step come after the others, in mtime order."""
    return sorted(ckpts, key=lambda c: (c.step is None, c.step or 0, c.mtime, c.path))
