"""MLflow local stores, read with the standard library only (no mlflow import, no tracking server).

File store (`mlruns/<experiment_id>/<run_id>/`)
    The log file is the run's `meta.yaml` (sniff: it names a `run_id`/`run_uuid`; an experiment's
    `meta.yaml` does not), so the run folder is `<run_id>/` and each MLflow run is one report_gen run.
    `metrics/<key>` files hold one "timestamp value step" line per logged value (very old files:
    "timestamp value", step 0); a key with `/` is a nested path (`metrics/train/loss` -> `train/loss`).
    Values `nan`, `inf`, `-inf` are kept. The timestamp (ms) is the wall time. A last line without its
    line end (a cut write) is left out ("truncated-record", info), a line that does not parse is
    skipped ("bad-row" with the first line number).
    `params/<key>` (nested likewise) -> `RunLog.hparams[key]` (numbers parsed, text otherwise);
    `tags/<key>`: `mlflow.runName` and user tags (`tag.<key>`; `mlflow.*` system tags other than the run
    name are left out); `meta.yaml` -> `mlflow.run_name`, `mlflow.status` (FINISHED, FAILED, ... from
    MLflow's RunStatus numbers), `mlflow.experiment_id`, `mlflow.run_id`, `mlflow.lifecycle_stage`.
    Only files below the run folder are read (no symlink is followed out of it), at most
    `MAX_KEYS` files per kind, each under `textlogs.MAX_LOG_BYTES` (params and tags: `MAX_VALUE_BYTES`).

SQLite store (`mlflow.db`, any `*.db` / `*.sqlite` / `*.sqlite3` with MLflow's `runs` and `metrics`
tables)
    One file holds many runs: `sqlite_runs(path)` lists their ids for discovery, which makes one run
    of each; `read_sqlite(files, member=run_uuid)` reads one. The file is opened read-only through a
    `file:...?mode=ro&immutable=1` URI: nothing is ever written (no journal, no lock taken, no WAL
    replay), and a store being written meanwhile is read as it is on disk. `metrics` rows in write
    (rowid) order; `is_nan` rows are NaN and MLflow's stand-ins for infinities (+-1.7976931348623157e308)
    are +-inf; a key present only in `latest_metrics` (an incomplete store) is read from there.
    `params`, `tags` and the `runs` row give the same hparams as the file store. At most `MAX_ROWS`
    metric rows per run are read ("too-large" beyond).
    A store with zero runs lists none (discovery makes no run of it); a file that is not SQLite, is
    corrupt, locked in a way that stops reading, or lacks MLflow's tables is one "bad-database" Problem.

Steps: an MLflow history has no writing-session marker, so a series is kept whole and ordered by step
(the event reader's policy within one session: values at repeated steps are all kept).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from report_gen.core import Problem, ProblemKind
from report_gen.readers.textlogs import (SeriesBuilder, inside, load_yaml, plain_value, read_text, run_log, run_root,
                                         to_float)
from report_gen.readers.types import RunLog
from report_gen.safe_open import open_regular, regular_file_problem

if TYPE_CHECKING:  # sqlite3 is imported when a store is read, not for every run
    import sqlite3

MAX_KEYS = 10000
MAX_VALUE_BYTES = 64 * 1024
MAX_ROWS = 5_000_000
_RUN_STATUS = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_FLOAT_MAX = 1.7976931348623157e308


# ---- file store ----------------------------------------------------------------------------------------

def is_meta_yaml_name(name: str) -> bool:
    return name == "meta.yaml"


def sniff_run_meta(path: str) -> bool:
    """A run's meta.yaml: it names a run id (an experiment's names only an experiment_id)."""
    try:
        with open_regular(path) as f:  # never a FIFO or device (report_gen.safe_open)
            head = f.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return False
    return any(line.startswith(("run_id:", "run_uuid:")) for line in head.splitlines())


def _typed(text: str) -> Any:
    t = text.strip()
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    return plain_value(t)


def _key_files(folder: str, root: str, problems: list[Problem]) -> list[tuple[str, str]]:
    """(key, path) of every file below `folder` (keys with '/'), in key order; no symlink followed out."""
    out: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if not inside(path, root):
                problems.append(Problem(path, ProblemKind.UNSAFE_PATH,
                                        f"{path}: points outside the run folder; not read"))
                continue
            out.append((os.path.relpath(path, folder).replace(os.sep, "/"), path))
            if len(out) > MAX_KEYS:
                problems.append(Problem(folder, ProblemKind.TOO_LARGE,
                                        f"{folder}: more than {MAX_KEYS} files; the rest were not read"))
                return out[:MAX_KEYS]
    return out


def _metric_file(key: str, path: str, root: str, series: SeriesBuilder, problems: list[Problem]) -> None:
    text = read_text(path, problems, root=root, what="MLflow metric file")
    if text is None:
        return
    bad, first_bad = 0, None
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if number == len(lines):  # text after the last line end: MLflow ends every line, so a cut write
            problems.append(Problem(path, ProblemKind.TRUNCATED_RECORD,
                                    f"{path}: the last line (line {number}) has no line end: a cut write; "
                                    "it was left out", offset=number))
            continue
        parts = line.split()
        value = to_float(parts[1]) if len(parts) in (2, 3) else None
        stamp = to_float(parts[0]) if parts else None
        step = parts[2] if len(parts) == 3 else "0"
        if value is None or stamp is None or not step.lstrip("-").isdigit():
            bad += 1
            first_bad = first_bad or number
            continue
        digits = step.lstrip("-")  # int() of more than 4,300 digits raises: bounded first
        series.add(key, int(step) if len(digits) <= 19 else (-(2**63) if step.startswith("-") else 2**63 - 1),
                   value, wall_time=stamp / 1000.0, file=path)
    if bad:
        problems.append(Problem(path, ProblemKind.BAD_ROW, f"{path}: {bad} line(s) are not 'timestamp value step' "
                                f"(first at line {first_bad}); skipped", count=bad, offset=first_bad))


def _run_facts(meta: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not isinstance(meta, dict):
        return out
    status = meta.get("status")
    for key, value in (("run_name", meta.get("run_name") or meta.get("name")),
                       ("status", _RUN_STATUS.get(status, status) if isinstance(status, int) else status),
                       ("experiment_id", meta.get("experiment_id")),
                       ("run_id", meta.get("run_id") or meta.get("run_uuid")),
                       ("lifecycle_stage", meta.get("lifecycle_stage"))):
        if value not in (None, ""):
            out[f"mlflow.{key}"] = plain_value(value)
    return out


def _tag_facts(tags: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tags:
        if key == "mlflow.runName":
            out.setdefault("mlflow.run_name", plain_value(value))
        elif not key.startswith("mlflow."):
            out[f"tag.{key}"] = plain_value(value)
    return out


def read_file_store(files: Sequence[tuple[str, str]]) -> RunLog:
    problems: list[Problem] = []
    frames, read, hparams = [], [], {}
    for path, sub in files:
        root = run_root(path, sub)
        folder = os.path.dirname(path)
        meta = load_yaml(path, problems, root=root)
        read.append(path)
        series = SeriesBuilder(sub)
        for key, metric in _key_files(os.path.join(folder, "metrics"), root, problems):
            _metric_file(key, metric, root, series, problems)
        frames.append(series.scalar_series())
        for key, param in _key_files(os.path.join(folder, "params"), root, problems):
            text = read_text(param, problems, root=root, cap=MAX_VALUE_BYTES, what="MLflow param")
            if text is not None:
                hparams.setdefault(key, _typed(text))
        tags = []
        for key, tag in _key_files(os.path.join(folder, "tags"), root, problems):
            text = read_text(tag, problems, root=root, cap=MAX_VALUE_BYTES, what="MLflow tag")
            if text is not None:
                tags.append((key, text.strip()))
        hparams.update({k: v for k, v in {**_run_facts(meta), **_tag_facts(tags)}.items() if k not in hparams})
    return run_log(frames, problems, read, hparams)


# ---- SQLite store ----------------------------------------------------------------------------------------

def is_sqlite_name(name: str) -> bool:
    return name.lower().endswith(_SQLITE_SUFFIXES)


def sniff_sqlite(path: str) -> bool:
    try:
        with open_regular(path) as f:  # never a FIFO or device (report_gen.safe_open)
            return f.read(16) == _SQLITE_MAGIC
    except OSError:
        return False


def _connect(path: str) -> sqlite3.Connection:
    import sqlite3

    problem = regular_file_problem(path)  # sqlite opens by name: a FIFO would block it forever
    if problem is not None:
        raise sqlite3.OperationalError(f"not read: {problem}")
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro&immutable=1"
    con = sqlite3.connect(uri, uri=True, timeout=0.5, check_same_thread=False)
    con.execute("PRAGMA query_only = 1")
    return con


def _is_mlflow(con: sqlite3.Connection) -> bool:
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {"runs", "metrics"} <= names


def sqlite_runs(path: str) -> list[tuple[str, str]]:
    """(run id, run name) of every run of an MLflow SQLite store, in start order; [] for a store with no
    runs or another database; one ("", file name) for a file that cannot be listed (its read says why)."""
    import sqlite3

    try:
        con = _connect(path)
        try:
            if not _is_mlflow(con):
                return []
            rows = con.execute("SELECT run_uuid, name FROM runs ORDER BY start_time, run_uuid").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return [("", os.path.basename(path))]
    return [(str(uuid), str(name) if name else str(uuid)) for uuid, name in rows]


def _seconds(stamp: Any) -> float:
    """An MLflow timestamp (ms) as seconds, NaN when there is none."""
    return stamp / 1000.0 if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else float("nan")


def _value(value: Any, is_nan: Any) -> float | None:
    if is_nan:
        return float("nan")
    number = to_float(value)
    if number is None:
        return None
    if number >= _FLOAT_MAX:
        return float("inf")
    if number <= -_FLOAT_MAX:
        return float("-inf")
    return number


def read_sqlite(files: Sequence[tuple[str, str]], member: str | None = None) -> RunLog:
    import sqlite3

    problems: list[Problem] = []
    frames, read, hparams = [], [], {}
    for path, sub in files:
        read.append(path)
        try:
            con = _connect(path)
            try:
                if not _is_mlflow(con):
                    problems.append(Problem(path, ProblemKind.BAD_DATABASE,
                                            f"{path}: an SQLite file without MLflow's runs and metrics tables"))
                    continue
                runs = [member] if member else [r[0] for r in con.execute("SELECT run_uuid FROM runs")]
                for run_uuid in runs:
                    series = SeriesBuilder(sub)
                    _sqlite_run(con, path, run_uuid, series, hparams, problems)
                    frames.append(series.scalar_series())
            finally:
                con.close()
        except sqlite3.Error as e:
            problems.append(Problem(path, ProblemKind.BAD_DATABASE,
                                    f"{path}: the SQLite store could not be read ({type(e).__name__}: {e})"))
    return run_log(frames, problems, read, hparams)


def _sqlite_run(con: sqlite3.Connection, path: str, run_uuid: str, series: SeriesBuilder,
                hparams: dict[str, Any], problems: list[Problem]) -> None:
    import sqlite3

    rows = con.execute("SELECT key, value, timestamp, step, is_nan FROM metrics WHERE run_uuid = ? ORDER BY rowid "
                       "LIMIT ?", (run_uuid, MAX_ROWS + 1)).fetchall()
    if len(rows) > MAX_ROWS:
        problems.append(Problem(path, ProblemKind.TOO_LARGE, f"{path}: run {run_uuid} has more than {MAX_ROWS} "
                                "metric rows; the rest were not read"))
        rows = rows[:MAX_ROWS]
    seen = set()
    bad = 0
    for key, value, stamp, step, is_nan in rows:
        number = _value(value, is_nan)
        if number is None or not isinstance(step, int) or not isinstance(key, str):
            bad += 1
            continue
        seen.add(key)
        series.add(key, step, number, wall_time=_seconds(stamp),
                   file=path)
    try:
        latest = con.execute("SELECT key, value, timestamp, step, is_nan FROM latest_metrics WHERE run_uuid = ?",
                             (run_uuid,)).fetchall()
    except sqlite3.Error:
        latest = []
    for key, value, stamp, step, is_nan in latest:
        number = _value(value, is_nan)
        if key not in seen and number is not None and isinstance(step, int) and isinstance(key, str):
            series.add(key, step, number, wall_time=_seconds(stamp),
                       file=path)
    if bad:
        problems.append(Problem(path, ProblemKind.BAD_ROW, f"{path}: {bad} metric row(s) of run {run_uuid} "
                                "without a number, an integer step or a key; skipped", count=bad))
    for key, value in con.execute("SELECT key, value FROM params WHERE run_uuid = ? ORDER BY key", (run_uuid,)):
        if isinstance(key, str):
            hparams.setdefault(key, _typed(str(value)))
    tags = list(con.execute("SELECT key, value FROM tags WHERE run_uuid = ? ORDER BY key", (run_uuid,)))
    row = con.execute("SELECT name, status, experiment_id, lifecycle_stage FROM runs WHERE run_uuid = ?",
                      (run_uuid,)).fetchone()
    meta = {"run_id": run_uuid}
    if row:
        meta.update(name=row[0], status=row[1], experiment_id=row[2], lifecycle_stage=row[3])
    hparams.update({k: v for k, v in {**_run_facts(meta), **_tag_facts(tags)}.items() if k not in hparams})
