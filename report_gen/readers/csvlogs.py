"""CSV training logs: Lightning's CSVLogger `metrics.csv` (+ `hparams.yaml`) and Ultralytics' `results.csv`
(+ `args.yaml`). One table reader, two registered formats.

Lightning `metrics.csv`
    Columns: `step` (the global step, the x axis of every series), `epoch`, and one column per logged
    key (`train_loss_step`, `train_loss_epoch`, `val_loss`, ...); a row holds the keys logged at one
    call, the other cells are empty. Each column except `step` is a series of that name (`epoch` too,
    as Lightning's TensorBoardLogger logs it). When a new key appears mid-run the CSVLogger rewrites the
    file with a wider header; older or hand-edited files can hold rows shorter than the header (padded
    with empty cells) or a second header line (the columns switch to it). `hparams.yaml` in the same
    folder goes to `RunLog.hparams` (flattened, safe loader: see `textlogs`).
    Sniff: the header has a `step` column (a `metrics.csv` of anything else is not read).

Ultralytics `results.csv` (YOLOv5/v8/v10/11/26)
    Columns: `epoch` (the x axis), `time` (seconds since the start, kept as the wall time where present)
    and one column per metric (`train/box_loss`, `metrics/mAP50(B)`, `val/cls_loss`, `lr/pg0`, ...).
    Older versions pad the names with spaces (`        epoch,      train/box_loss`): names are stripped.
    `args.yaml` in the same folder goes to `RunLog.hparams`.
    Sniff: the first column is `epoch` and another starts with `train/`, `val/`, `metrics/` or `lr/`.

Restarts (both): the same step policy as the event reader (`events.merge`), with a writing session
starting where the x axis (the row's step, or epoch) goes below the previous row's, or at a repeated
header: Lightning's global step never decreases within one `fit`, so a lower one is a resumed fit
appending to the file (the CSVLogger keeps writing to it). The resumed rows win: every earlier value of
a series at a step >= the first resumed step is dropped, with one "step-restart" Problem (info).

Damage (never an exception): a row with more cells than the header, or without a usable step, is
skipped with one "bad-row" Problem per file (first line number, count); a cell that is not a number
(nor nan/inf) is skipped likewise; a last line without its line end (both loggers end every row with one: a
write cut by a killed process, its last number possibly cut short) is left out, one
"truncated-record" Problem (info); files above `textlogs.MAX_LOG_BYTES` are not read.
"""
from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence

from report_gen.core import Problem, ProblemKind
from report_gen.readers.events.merge import Restarts
from report_gen.readers.textlogs import (SeriesBuilder, flatten_hparams, load_yaml, read_text, run_log, run_root,
                                         to_float)
from report_gen.readers.types import RunLog
from report_gen.safe_open import open_regular

_SNIFF_BYTES = 4096
_ULTRALYTICS_GROUPS = ("train/", "val/", "metrics/", "lr/")


def _header(path: str) -> list[str] | None:
    try:
        with open_regular(path) as f:  # never a FIFO or device (report_gen.safe_open)
            head = f.read(_SNIFF_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None
    line = head.split("\n", 1)[0].strip("\r\ufeff")
    return [c.strip() for c in line.split(",")] if line else None


def is_lightning_csv_name(name: str) -> bool:
    return name == "metrics.csv"


def sniff_lightning_csv(path: str) -> bool:
    header = _header(path)
    return bool(header) and "step" in header


def is_ultralytics_csv_name(name: str) -> bool:
    return name == "results.csv"


def sniff_ultralytics_csv(path: str) -> bool:
    header = _header(path)
    return bool(header) and header[0] == "epoch" and any(c.startswith(_ULTRALYTICS_GROUPS) for c in header[1:])


class _Damage:
    """Per-file counts of skipped rows/cells, one Problem each at the end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.rows: list[tuple[int, str]] = []
        self.cells: list[tuple[int, str]] = []

    def problems(self) -> list[Problem]:
        out = []
        for found, what in ((self.rows, "row(s)"), (self.cells, "cell(s) that are not numbers")):
            if found:
                line, why = found[0]
                out.append(Problem(self.path, ProblemKind.BAD_ROW,
                                   f"{self.path}: {len(found)} {what} skipped (first at line {line}: {why})",
                                   count=len(found), offset=line))
        return out


def _step(text: str) -> int | None:
    value = to_float(text)
    if value is None or not math.isfinite(value) or value != int(value):
        return None
    return int(value)


def read_table(path: str, text: str, x_column: str, series: SeriesBuilder, problems: list[Problem], *,
               time_column: str | None = None, skip: frozenset[str] = frozenset()) -> None:
    """Add every numeric cell of a CSV log to `series` (x axis `x_column`); damage to `problems`."""
    damage = _Damage(path)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        last = lines[-1]
    else:
        last = None
    header: list[str] | None = None
    session, previous = 0, None
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if header is None or (x_column in cells and all(to_float(c) is None for c in cells if c)):
            if header is not None:
                session += 1  # a repeated header: a new writer
            header = [c.strip("\ufeff") for c in cells]
            if x_column not in header:
                problems.append(Problem(path, ProblemKind.BAD_ROW, f"{path}: no '{x_column}' column in the header "
                                        f"(line {number}); not read", offset=number))
                return
            x_at = header.index(x_column)
            time_at = header.index(time_column) if time_column in header else None
            continue
        if len(cells) > len(header):
            damage.rows.append((number, f"{len(cells)} cells for {len(header)} columns"))
            continue
        if last is not None and number == len(lines) and row == next(csv.reader([last]), None):
            problems.append(Problem(path, ProblemKind.TRUNCATED_RECORD,
                                    f"{path}: the last line (line {number}) has no line end: a cut write; "
                                    "it was left out", offset=number))
            continue
        if len(cells) < len(header):
            cells = cells + [""] * (len(header) - len(cells))
        step = _step(cells[x_at])
        if step is None:
            damage.rows.append((number, f"'{cells[x_at][:20]}' is not a {x_column}"))
            continue
        if previous is not None and step < previous:
            session += 1  # the x axis went back: a resumed run appending to the file
        previous = step
        wall = to_float(cells[time_at]) if time_at is not None else None
        for name, cell in zip(header, cells):
            if not cell or name in skip or name == x_column or name == time_column:
                continue
            value = to_float(cell)
            if value is None:
                damage.cells.append((number, f"'{cell[:20]}' in column '{name}'"))
                continue
            series.add(name, step, value, wall_time=math.nan if wall is None else wall, session=session, file=path)
    problems.extend(damage.problems())


def _read_csv_logs(files: Sequence[tuple[str, str]], x_column: str, side_file: str, time_column: str | None) -> RunLog:
    problems: list[Problem] = []
    frames, read, hparams = [], [], {}
    restarts = Restarts()
    for path, sub in files:
        root = run_root(path, sub)
        text = read_text(path, problems, root=root, what="CSV log")
        if text is None:
            continue
        read.append(path)
        series = SeriesBuilder(sub)
        read_table(path, text, x_column, series, problems, time_column=time_column)
        frames.append(series.scalar_series(restarts))
        side = os.path.join(os.path.dirname(path), side_file)
        if os.path.isfile(side):
            doc = load_yaml(side, problems, root=root)
            if isinstance(doc, dict):
                for key, value in flatten_hparams(doc).items():
                    hparams.setdefault(key, value)
    problems.extend(restarts.problems())
    return run_log(frames, problems, read, hparams)


def read_lightning_csv(files: Sequence[tuple[str, str]]) -> RunLog:
    return _read_csv_logs(files, "step", "hparams.yaml", None)


def read_ultralytics_csv(files: Sequence[tuple[str, str]]) -> RunLog:
    return _read_csv_logs(files, "epoch", "args.yaml", "time")
