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

from report_gen.core import Problem, ProblemKind
from report_gen.readers import csvlogs, events, hf_trainer, mlflow_store, wandb_run
from report_gen.readers.signals import phase_of
from report_gen.readers.types import DroppedSeries, RunLog, ScalarTable, scalar_key
from report_gen.safe_open import is_regular_file, regular_file_problem

log = logging.getLogger("report_gen")

LogFile = tuple[str, str]  # (path, sub)


@dataclass(frozen=True)
class LogReader:
    """One log format. `what` names its files in messages ("event files"); `label` names the source of
    a series in the report's "What was read" ("train/loss (TensorBoard, 600 points)").

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
    label: str = ""  # the source as a report names it ("TensorBoard", "trainer_state.json"); default: name

    def recognises(self, path: str) -> bool:
        """The file name says so, and the first bytes agree where the reader sniffs (only a regular
        file is ever sniffed: a FIFO under a generic name is no log at all)."""
        return self.name_matches(os.path.basename(path)) and (self.sniff is None or
                                                              (is_regular_file(path) and self.sniff(path)))


LOG_READERS: tuple[LogReader, ...] = (
    LogReader("tensorboard", "event files", events.is_event_file_name, events.read_events, label="TensorBoard"),
    LogReader("hf-trainer", "trainer_state.json files", hf_trainer.is_trainer_state_name,
              hf_trainer.read_trainer_states, label="trainer_state.json"),
    LogReader("lightning-csv", "Lightning metrics.csv files", csvlogs.is_lightning_csv_name,
              csvlogs.read_lightning_csv, csvlogs.sniff_lightning_csv, label="Lightning metrics.csv"),
    LogReader("ultralytics-csv", "Ultralytics results.csv files", csvlogs.is_ultralytics_csv_name,
              csvlogs.read_ultralytics_csv, csvlogs.sniff_ultralytics_csv, label="Ultralytics results.csv"),
    LogReader("mlflow-files", "MLflow file-store runs", mlflow_store.is_meta_yaml_name,
              mlflow_store.read_file_store, mlflow_store.sniff_run_meta, label="MLflow"),
    LogReader("mlflow-sqlite", "MLflow SQLite stores", mlflow_store.is_sqlite_name,
              mlflow_store.read_sqlite, mlflow_store.sniff_sqlite, members=mlflow_store.sqlite_runs,
              label="MLflow SQLite"),
    LogReader("wandb", "W&B run logs", wandb_run.is_wandb_log_name, wandb_run.read_wandb_runs, label="W&B"),
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
            logs[-1].source = reader.label or reader.name
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

    One quantity logged twice is ONE series: an HF `output_dir` holds `train/loss` in its
    trainer_state.json and again in the TensorBoard files of `runs/<date>/`. A scalar series of one
    log is the same as a series of another log when both have the same tag in the same phase (their
    sub-folders both say validation, or neither does: `runs/<date>/train/loss` and `train/loss` are one
    series); a histogram, image or text is the same when its key is. Of such copies the one with the
    most points is kept whole (the finer source: per-step TensorBoard scalars beat an epoch summary);
    on a tie the one in the run folder itself (no sub folder: its name, `train/loss`, does not depend on
    a dated `runs/<date>/` folder, so a baseline's findings match), then the first log's (registry
    order): two writers of one series repeat it at best and contradict it at worst, so the others are dropped,
    each listed in `RunLog.dropped` (the report's "ignored" series) and with one "duplicate-series"
    Problem (info) per log that lost any. Scalar rows keep the RunLog order (run, tag, then each series'
    own order); histogram, image and text keys stay in write order (the first log's, then the new keys
    of the next); the first log's hyper-parameter wins; problems, files and sources are concatenated.
    One log is returned as it is.
    """
    if not logs:
        return RunLog.empty()
    if len(logs) == 1:
        return logs[0]
    merged = RunLog.empty()
    merged.source = logs[0].source
    winner = _scalar_winners(logs)
    best_family = _family_winners(logs)
    kept_series = []
    for i, current in enumerate(logs):
        duplicates = []
        for one in current.table.series:
            key = scalar_key(one.run, one.tag)
            w, (w_run, w_tag) = winner[_identity(one.run, one.tag)]
            if w == i:
                kept_series.append(one)
                merged.sources[("scalar", key)] = current.source_of("scalar", key)
                continue
            duplicates.append(key)
            merged.dropped.append(DroppedSeries("scalar", key, current.source_of("scalar", key), len(one),
                                                _same_as(scalar_key(w_run, w_tag), logs[w].source)))
        for attr, kind in (("histograms", "histogram"), ("images", "image"), ("texts", "text")):
            into = getattr(merged, attr)
            for key, value in getattr(current, attr).items():
                if best_family[(attr, key)] == i:
                    into[key] = value
                    merged.sources[(kind, key)] = current.source_of(kind, key)
                else:
                    duplicates.append(key)
                    merged.dropped.append(DroppedSeries(kind, key, current.source_of(kind, key), len(value),
                                                        _same_as(key, logs[best_family[(attr, key)]].source)))
        for key, value in current.hparams.items():
            merged.hparams.setdefault(key, value)
        merged.problems.extend(current.problems)
        merged.dropped.extend(current.dropped)
        if duplicates:
            shown = ", ".join(duplicates[:5]) + (f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else "")
            merged.problems.append(Problem(
                file=current.files[0] if current.files else "", kind=ProblemKind.DUPLICATE_SERIES,
                count=len(duplicates),
                message=f"{len(duplicates)} series already read from another log of this run ({shown}); "
                        "this log's copy was left out"))
        merged.files.extend(current.files)
    merged.table = ScalarTable(kept_series)
    for current in logs:  # a histogram's shape, whichever log's copy of it was kept
        for key, shape in current.weight_shapes.items():
            if key in merged.histograms:
                merged.weight_shapes.setdefault(key, shape)
    for attr in ("histograms", "images", "texts"):  # write order: the first log's keys, then the next's
        order = [k for current in logs for k in getattr(current, attr)]
        setattr(merged, attr, {k: getattr(merged, attr)[k] for k in dict.fromkeys(order) if k in getattr(merged, attr)})
    return merged


def _identity(run: str, tag: str) -> tuple[str, str]:
    """What makes two logs' scalar series one quantity: the tag and the phase its sub-folder says."""
    return (phase_of(run), tag)


def _scalar_winners(logs: Sequence[RunLog]) -> dict[tuple[str, str], tuple[int, tuple[str, str]]]:
    """identity -> (index of the log whose copies are kept, the (run, tag) of its longest one): the log
    holding the most points of it, on a tie the first. Inside one log every (run, tag) stays its own
    series (two `runs/<date>/` folders of one Trainer are two event-file series)."""
    best: dict[tuple[str, str], tuple[int, int, tuple[str, str]]] = {}
    for i, current in enumerate(logs):
        for one in current.table.series:
            run, tag, n = one.run, one.tag, len(one)
            ident = _identity(run, tag)
            held = best.get(ident)
            if held is None or int(n) > held[1] or (int(n) == held[1] and held[0] != i and held[2][0] and not run):
                best[ident] = (i, int(n), (str(run), str(tag)))
    return {k: (i, pair) for k, (i, _, pair) in best.items()}


def _family_winners(logs: Sequence[RunLog]) -> dict[tuple[str, str], int]:
    """(attr, key) -> index of the log whose histogram/image/text series is kept: most points, then first."""
    best: dict[tuple[str, str], tuple[int, int]] = {}
    for i, current in enumerate(logs):
        for attr in ("histograms", "images", "texts"):
            for key, value in getattr(current, attr).items():
                held = best.get((attr, key))
                if held is None or len(value) > held[1]:
                    best[(attr, key)] = (i, len(value))
    return {k: i for k, (i, _) in best.items()}


def _same_as(kept: str, source: str) -> str:
    return f"the same series as {kept} ({source}), which holds more points or comes first: that one was read"
