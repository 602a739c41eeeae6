"""Weights & Biases run folders (`wandb/run-<date>-<id>/`, `wandb/offline-run-<date>-<id>/`): an optional extra.

What W&B leaves, and what is read:

* `run-<id>.wandb`, the transaction log: the ONLY copy of the metric history (wandb 0.31 writes no
  summary or config file in offline mode). It is a LevelDB-style record log (a 7-byte header
  `:W&B` + 0xBEE1 + version 0, then 32 KiB blocks of records: CRC-32 seeded with the record type, length,
  type FULL/FIRST/MIDDLE/LAST) of `wandb_internal_pb2.Record` protobufs. wandb ships no reader of it
  any more (`wandb.sdk.internal.datastore` was removed when reading moved into the Go `wandb-core`;
  `wandb sync --view` is gone; `wandb.beta.LocalApi` and `wandb parse` are unreleased proposals), so
  report_gen frames the records itself (`records`: CRC-checked, never raises) and decodes them with
  wandb's OWN protobuf classes, which the package still ships: that needs `pip install report_gen[wandb]`.
  From the records: `history` (each `wandb.log` row: series named by their keys, step = `_step`, wall
  time = `_timestamp`; nested keys joined with `/`; histograms, images and other media, i.e. JSON
  objects, are not series), `config` (-> hparams, `_wandb` left out), `summary` (-> hparams as
  `summary.<key>`) and `run` (-> `wandb.run_id`, `wandb.run_name`, `wandb.project`).
  Without the extra the file is not decoded: one "unreadable" Problem (info) says how to read it.
* `files/wandb-history.jsonl` (SDKs before 0.10 wrote the history as JSON lines): series, as above.
* `files/config.yaml` (`key: {value: ...}`) -> hparams; `files/wandb-summary.json` (the final values)
  -> hparams `summary.<key>`, never a series (a final value is not a curve).

The history from the `.wandb` log wins over `wandb-history.jsonl` for a key both hold. A run folder
whose only history is a summary has no series: its verdict is honest ("unknown"), not PASS.

Damage: a bad CRC or a record cut short ends the framing there, with one "bad-data-crc" or
"truncated-record" Problem and the offset; a record that does not decode is skipped and counted
("bad-proto"); bad JSON lines are "bad-json" with the line number; files above their caps are not read.
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from report_gen.core import Problem, ProblemKind
from report_gen.readers.textlogs import (SeriesBuilder, flatten_hparams, inside, load_yaml, plain_value, read_text,
                                         run_log, run_root, to_float)
from report_gen.readers.types import RunLog
from report_gen.safe_open import open_regular

MAX_WANDB_BYTES = 512 * 1024 * 1024
_BLOCK = 32 * 1024
_HEADER = struct.Struct("<4sHB")
_RECORD = struct.Struct("<IHB")
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_NAME = re.compile(r"run-[A-Za-z0-9]+\.wandb")


def is_wandb_log_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def records(path: str, problems: list[Problem], cap: int | None = None) -> Iterator[bytes]:
    """The record payloads of a `.wandb` log, in order; damage ends the framing with a Problem."""
    cap = MAX_WANDB_BYTES if cap is None else cap
    try:
        size = os.path.getsize(path)
        if size > cap:
            problems.append(Problem(path, ProblemKind.TOO_LARGE,
                                    f"{path}: {size} bytes, above the {cap}-byte cap; not read"))
            return
        with open_regular(path) as f:  # never a FIFO or device (report_gen.safe_open)
            data = f.read(cap + 1)
    except OSError as e:
        problems.append(Problem(path, ProblemKind.UNREADABLE, f"{path}: could not be read: {e.strerror or e}"))
        return
    if len(data) < _HEADER.size or _HEADER.unpack_from(data)[:2] != (b":W&B", 0xBEE1):
        problems.append(Problem(path, ProblemKind.BAD_PROTO, f"{path}: not a W&B transaction log (bad header)",
                                offset=0))
        return
    pos, pending = _HEADER.size, None
    while pos < len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _RECORD.size:
            pos += left  # block trailer: zero padding
            continue
        if pos + _RECORD.size > len(data):
            break
        crc, length, kind = _RECORD.unpack_from(data, pos)
        if crc == 0 and length == 0 and kind == 0:
            pos += left  # zero-filled rest of a block (a preallocated or flushed file)
            continue
        chunk = data[pos + _RECORD.size:pos + _RECORD.size + length]
        if len(chunk) < length:
            problems.append(Problem(path, ProblemKind.TRUNCATED_RECORD,
                                    f"{path}: the last record (offset {pos}) is cut: a killed run", offset=pos))
            return
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc or kind not in (1, 2, 3, 4):
            problems.append(Problem(path, ProblemKind.BAD_DATA_CRC,
                                    f"{path}: a record at offset {pos} fails its checksum; the rest is not read",
                                    offset=pos))
            return
        pos += _RECORD.size + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = [chunk]
        elif pending is not None:
            pending.append(chunk)
            if kind == _LAST:
                yield b"".join(pending)
                pending = None


def _record_class():
    try:
        from wandb.proto import wandb_internal_pb2
    except Exception:  # noqa: BLE001 - wandb missing or broken: the optional extra is not there
        return None
    return wandb_internal_pb2.Record


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _add_row(row: dict[str, Any], series: SeriesBuilder, path: str) -> None:
    step = row.get("_step")
    if not isinstance(step, int) or isinstance(step, bool):
        return
    wall = row.get("_timestamp")
    wall = to_float(wall) if isinstance(wall, (int, float)) and not isinstance(wall, bool) else math.nan
    for key, value in row.items():
        if key.startswith("_") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        series.add(key, step, to_float(value), wall_time=wall, file=path)  # (float() of a huge int raises)


def _item_value(item: Any) -> Any:
    """An item's value: `value_json`, or (newer SDKs, HistoryItem) the typed field that is set."""
    if item.value_json:
        return _json(item.value_json)
    for name in ("number", "integer", "boolean", "text"):
        try:
            if item.HasField(name):
                return getattr(item, name)
        except ValueError:  # no such field in this wandb's schema
            continue
    return None


def _items(items: Any) -> Iterator[tuple[str, Any]]:
    for item in items:
        key = "/".join(item.nested_key) if len(item.nested_key) else item.key
        yield key, _item_value(item)


def _read_log(path: str, series: SeriesBuilder, hparams: dict[str, Any], problems: list[Problem]) -> None:
    Record = _record_class()
    if Record is None:
        problems.append(Problem(path, ProblemKind.UNREADABLE, f"{path}: the metric history in this W&B log is read "
                                "only with the wandb package: pip install 'report_gen[wandb]'", severity="info"))
        return
    bad, config, summary = 0, {}, {}
    for payload in records(path, problems):
        record = Record()
        try:
            record.ParseFromString(payload)
            kind = record.WhichOneof("record_type")
        except Exception:  # noqa: BLE001 - protobuf raises its own DecodeError family
            bad += 1
            continue
        if kind == "history":
            row = dict(_items(record.history.item))
            if "_step" not in row and record.history.HasField("step"):
                row["_step"] = record.history.step.num
            _add_row(row, series, path)
        elif kind == "config":
            config.update({k: v for k, v in _items(record.config.update) if not k.startswith("_wandb")})
        elif kind == "summary":
            summary.update(dict(_items(record.summary.update)))
        elif kind == "run":
            run = record.run
            for key, value in (("run_id", run.run_id), ("run_name", run.display_name), ("project", run.project)):
                if value:
                    hparams.setdefault(f"wandb.{key}", plain_value(value))
            config.update({k: v for k, v in _items(run.config.update) if not k.startswith("_wandb")})
    if bad:
        problems.append(Problem(path, ProblemKind.BAD_PROTO, f"{path}: {bad} record(s) could not be decoded; "
                                "skipped", count=bad))
    _config_hparams(config, hparams)
    _summary_hparams(summary, hparams)


def _summary_hparams(summary: dict[str, Any], hparams: dict[str, Any]) -> None:
    """Final values as `summary.<key>`; media objects (`{"_type": "histogram", ...}`) and `_` keys left out."""
    media = tuple(str(k)[:-len("_type")] for k in summary if str(k).endswith("/_type"))  # log items: nested keys
    kept = {k: v for k, v in summary.items() if not str(k).startswith(("_", *media))
            and not (isinstance(v, dict) and "_type" in v)}
    for key, value in flatten_hparams(kept).items():
        hparams.setdefault(f"summary.{key}", value)


def _config_hparams(config: Any, hparams: dict[str, Any]) -> None:
    """W&B config values are `{"value": X, "desc": ...}` in config.yaml (and plain in the log)."""
    if not isinstance(config, dict):
        return
    plain = {}
    for key, value in config.items():
        if str(key).startswith("_wandb") or key == "wandb_version":
            continue
        plain[key] = value["value"] if isinstance(value, dict) and "value" in value else value
    for key, value in flatten_hparams(plain).items():
        hparams.setdefault(key, value)


def _history_jsonl(path: str, root: str, series: SeriesBuilder, problems: list[Problem]) -> None:
    text = read_text(path, problems, root=root, what="W&B history")
    if text is None:
        return
    bad, first = 0, None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row = _json(line)
        if not isinstance(row, dict):
            bad += 1
            first = first or number
            continue
        _add_row(row, series, path)
    if bad:
        problems.append(Problem(path, ProblemKind.BAD_JSON, f"{path}: {bad} line(s) are not JSON objects "
                                f"(first at line {first}); skipped", count=bad, offset=first))


def read_wandb_runs(files: Sequence[tuple[str, str]]) -> RunLog:
    problems: list[Problem] = []
    frames, read, hparams = [], [], {}
    for path, sub in files:
        root = run_root(path, sub)
        folder = os.path.dirname(path)
        read.append(path)
        from_log = SeriesBuilder(sub)
        if inside(path, root):
            _read_log(path, from_log, hparams, problems)
        else:
            problems.append(Problem(path, ProblemKind.UNSAFE_PATH, f"{path}: points outside the run folder; not read"))
        from_files = SeriesBuilder(sub)
        side = os.path.join(folder, "files")
        if os.path.isfile(os.path.join(side, "wandb-history.jsonl")):
            _history_jsonl(os.path.join(side, "wandb-history.jsonl"), root, from_files, problems)
        logged = set(from_log.values)
        from_files.values = {k: v for k, v in from_files.values.items() if k not in logged}
        frames += [from_log.scalar_series(), from_files.scalar_series()]
        if os.path.isfile(os.path.join(side, "config.yaml")):
            _config_hparams(load_yaml(os.path.join(side, "config.yaml"), problems, root=root), hparams)
        summary_path = os.path.join(side, "wandb-summary.json")
        if os.path.isfile(summary_path):
            text = read_text(summary_path, problems, root=root, what="W&B summary")
            summary = _json(text) if text is not None else None
            if text is not None and not isinstance(summary, dict):
                problems.append(Problem(summary_path, ProblemKind.BAD_JSON, f"{summary_path}: not a JSON object"))
            elif isinstance(summary, dict):
                _summary_hparams(summary, hparams)
    return run_log(frames, problems, read, hparams)
