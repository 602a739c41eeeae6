"""Log readers: which files of a run are logs, which reader reads them, and how their RunLogs join.

A log reader turns the log files of ONE run into a `RunLog` (scalars, histograms, images, texts,
hparams, problems). TensorBoard event files are the first; run discovery asks `is_log_file`, never a
reader directly, and `read_logs` hands each reader its files and merges what they read.

Adding a reader (HF trainer_state.json, Lightning metrics.csv, Ultralytics results.csv, MLflow, ...)
is one module plus its registration:

1. `report_gen/readers/<format>.py` (or a package) providing
   - a name test, `(file name) -> bool`: cheap, on the last path part only (`trainer_state.json`);
   - optionally a sniff, `(path) -> bool`, asked only for names that passed, for names too generic
     to trust (`metrics.csv`): read at most a few KiB, never raise (an unreadable file is False);
   - `read(files) -> RunLog`: `files` are `(path, sub)` pairs of one run (`sub` is the folder below
     the run folder, "" for the run folder itself, recorded as the scalar `run` column and as a
     `sub/` key prefix, as `events.read_events` does); damage becomes graded `Problem`s in
     `RunLog.problems` (kinds from `core.ProblemKind`; add new kinds there), never an exception.
   Import heavy or optional dependencies inside `read`: discovery imports every registered module.
   Open files ONLY through `report_gen.safe_open` (`open_regular`, `read_regular` with a size
   bound; a library that opens by path gets the path after `regular_file_problem` said None): a run
   folder from an untrusted artifact may hold a FIFO or a link to /dev/zero under your file name,
   and a plain open() of it hangs the job. The registry already refuses to sniff or hand over a file
   that is not regular (it becomes a "not-a-regular-file" Problem of its run), and
   tests/readers/test_log_readers.py checks every registered reader against a FIFO and /dev/zero
   under a name it recognises: add your format's file name to `NAMES_PER_READER` there.
2. One `LogReader(...)` entry in `LOG_READERS` below (order = priority: the first reader that
   recognises a file reads it, and the first log holding a series keeps it, see `merge_logs`).
3. Tests in `tests/readers/test_<format>.py`, on fixtures written by the library that writes the
   format (a committed script that installs it), plus a discovery case
   (`tests/readers/test_log_readers.py` plugs a toy reader in end to end).

Known limits of the seam: a run folder is a folder that directly holds a log file (see
`discovery`): a format whose files sit deeper than their run names a file in the run folder as its
log file (MLflow's file store: the run's `meta.yaml`, whose reader then reads `metrics/<key>`); a
file holding several runs says so with `members` (MLflow's SQLite store). Discovery's two "nothing
usable here" messages still name only TensorBoard.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from report_gen.core import Problem, ProblemKind
from report_gen.readers import csvlogs, events, hf_trainer, mlflow_store, wandb_run
from report_gen.readers.types import RunLog, series_in_order
from report_gen.safe_open import is_regular_file, regular_file_problem

log = logging.getLogger("report_gen")

LogFile = tuple[str, str]  # (path, sub)


@dataclass(frozen=True)
class LogReader:
    """One log format. `what` names its files in messages ("event files").

    members: for a format whose ONE file holds several runs (an MLflow SQLite store), `(path) ->
        [(member id, member name)]`; discovery makes one run of each member and `read` is then called
        as `read(files, member=id)`. None for one-run files (all others).
    """

    name: str
    what: str
    name_matches: Callable[[str], bool]
    read: Callable[..., RunLog]
    sniff: Callable[[str], bool] | None = None
    members: Callable[[str], list[tuple[str, str]]] | None = None

    def recognises(self, path: str) -> bool:
        """The file name says so, and the first bytes agree where the reader sniffs (only a regular
        file is ever sniffed: a FIFO under a generic name is no log at all)."""
        return self.name_matches(os.path.basename(path)) and (self.sniff is None or
                                                              (is_regular_file(path) and self.sniff(path)))


LOG_READERS: tuple[LogReader, ...] = (
    LogReader("tensorboard", "event files", events.is_event_file_name, events.read_events),
    LogReader("hf-trainer", "trainer_state.json files", hf_trainer.is_trainer_state_name,
              hf_trainer.read_trainer_states),
    LogReader("lightning-csv", "Lightning metrics.csv files", csvlogs.is_lightning_csv_name,
              csvlogs.read_lightning_csv, csvlogs.sniff_lightning_csv),
    LogReader("ultralytics-csv", "Ultralytics results.csv files", csvlogs.is_ultralytics_csv_name,
              csvlogs.read_ultralytics_csv, csvlogs.sniff_ultralytics_csv),
    LogReader("mlflow-files", "MLflow file-store runs", mlflow_store.is_meta_yaml_name,
              mlflow_store.read_file_store, mlflow_store.sniff_run_meta),
    LogReader("mlflow-sqlite", "MLflow SQLite stores", mlflow_store.is_sqlite_name,
              mlflow_store.read_sqlite, mlflow_store.sniff_sqlite, members=mlflow_store.sqlite_runs),
    LogReader("wandb", "W&B run logs", wandb_run.is_wandb_log_name, wandb_run.read_wandb_runs),
)


def reader_for(path: str) -> LogReader | None:
    """The first registered reader that recognises `path`, or None."""
    return next((r for r in LOG_READERS if r.recognises(path)), None)


def is_log_file(path: str) -> bool:
    return reader_for(path) is not None


def read_logs(files: Sequence[LogFile], *, where: str, member: str | None = None) -> RunLog:
    """Read the log files of ONE run, each by the reader that recognises it, into one RunLog.

    member: the run inside a multi-run file (`LogReader.members`), handed to the readers that have members.

    Never raises for damage: a reader that fails on its files as a whole is one "unreadable"
    Problem (error) naming `where` (the run folder), and the other readers' logs are still read. A
    file that is not a regular file (a FIFO, a device, a socket, a link to one) is handed to no
    reader: it is one "not-a-regular-file" Problem, never opened.
    Raises ValueError for a file no reader recognises (discovery only hands over log files).
    """
    groups: dict[str, list[LogFile]] = {}
    refused = []
    for path, sub in files:
        problem = regular_file_problem(path)
        if problem is not None and os.path.exists(path):  # (a missing file is the reader's to report)
            refused.append(Problem(file=path, kind=ProblemKind.NOT_A_REGULAR_FILE,
                                   message=f"{path}: named like a log but {problem}; not read"))
            continue
        reader = reader_for(path)
        if reader is None:
            raise ValueError(f"{path}: no log reader recognises this file")
        groups.setdefault(reader.name, []).append((path, sub))
    logs = []
    for reader in LOG_READERS:
        if reader.name in groups:
            logs.append(_read_one(reader, groups[reader.name], where, member))
    merged = merge_logs(logs)
    merged.problems[:0] = refused
    return merged


def _read_one(reader: LogReader, files: list[LogFile], where: str, member: str | None) -> RunLog:
    try:
        return reader.read(files, member=member) if reader.members is not None else reader.read(files)
    except Exception as e:  # noqa: BLE001 - readers report damage as Problems; this is a last resort
        log.debug("reading the %s of %s failed", reader.what, where, exc_info=True)
        failed = RunLog.empty()
        failed.problems.append(Problem(file=where, kind=ProblemKind.UNREADABLE, severity="error",
                                       message=f"the {reader.what} could not be read: {type(e).__name__}: {e}"))
        return failed


def merge_logs(logs: Sequence[RunLog]) -> RunLog:
    """One RunLog from the RunLogs that several readers made of ONE run, taken in the given order.

    A series (a scalar (run, tag); a histogram, image or text key) comes whole from the first log
    that holds it: two writers of one series repeat it at best and contradict it at worst, so a later
    log's copy is dropped, with one "duplicate-series" Problem (info) per log that lost any. Scalar
    rows keep the RunLog order (run, tag, then each series' own order); histogram, image and text
    keys stay in write order (the first log's, then the new keys of the next); the first log's
    hyper-parameter wins; problems and files are concatenated. One log is returned as it is.
    """
    if not logs:
        return RunLog.empty()
    if len(logs) == 1:
        return logs[0]
    merged = RunLog.empty()
    frames, taken = [], set()
    for current in logs:
        pairs = list(zip(current.scalars["run"], current.scalars["tag"]))
        keep = np.array([p not in taken for p in pairs], dtype=bool)
        duplicates = sorted({f"{run}/{tag}" if run else tag for (run, tag), k in zip(pairs, keep) if not k})
        taken.update(pairs)
        frames.append(current.scalars[keep])
        for attr in ("histograms", "images", "texts"):
            into = getattr(merged, attr)
            for key, value in getattr(current, attr).items():
                if key in into:
                    duplicates.append(key)
                else:
                    into[key] = value
        for key, value in current.hparams.items():
            merged.hparams.setdefault(key, value)
        merged.problems.extend(current.problems)
        if duplicates:
            shown = ", ".join(duplicates[:5]) + (f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else "")
            merged.problems.append(Problem(
                file=current.files[0] if current.files else "", kind=ProblemKind.DUPLICATE_SERIES,
                count=len(duplicates),
                message=f"{len(duplicates)} series already read from another log of this run ({shown}); "
                        "this log's copy was left out"))
        merged.files.extend(current.files)
    merged.scalars = series_in_order(pd.concat(frames, ignore_index=True))
    return merged
