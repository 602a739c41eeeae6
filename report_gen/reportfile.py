"""report.json files: reading one back and checking it is a report_gen report (DESIGN §4).

Used by `report-gen render`, by `--baseline report.json` and by sweeps; the writer lives in
render/jsonout.py. Everything from the file is untrusted: a wrong shape is a one-line InputError.
"""
from __future__ import annotations

import json
from pathlib import Path

from report_gen.core import INT64_MAX, INT64_MIN, SEVERITY_RANK, InputError, clamp_int64
from report_gen.safe_open import read_regular

SCHEMA_VERSION = 1
#: a report.json larger than this is not one report_gen wrote (reports are KB to a few MB)
MAX_REPORT_BYTES = 256 << 20


def _bounded_int(text: str) -> int:
    """JSON integers beyond int64 (a step of 10**5000, past Python's 4,300-digit str limit too)
    are bounded to int64, not an error: the rest of the report is still usable."""
    digits = text.lstrip("-")
    if len(digits) <= 18:
        return int(text)
    return INT64_MIN if text.startswith("-") else INT64_MAX if len(digits) > 19 else clamp_int64(int(text))


def load_report(path: str | Path) -> dict:
    """Read a report.json written by report_gen; InputError (one line) when it is not one.

    Only a regular file is read (a FIFO or a device is refused, never waited on), at most
    MAX_REPORT_BYTES; integers are bounded to int64."""
    path = Path(path)
    try:
        text = read_regular(path, MAX_REPORT_BYTES).decode("utf-8-sig")  # -sig: PowerShell writes a BOM
        report = json.loads(text, parse_int=_bounded_int)
    except RecursionError:
        raise InputError(f"{path}: not a report (JSON nested too deeply)") from None
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or error.__class__.__name__})") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: cannot read ({error.__class__.__name__})") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno})") from None
    except ValueError as error:  # a number or escape json cannot convert
        raise InputError(f"{path}: not valid JSON ({str(error)[:80]})") from None
    if not isinstance(report, dict):
        raise InputError(f"{path}: not a report (expected a JSON object)")
    version = report.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InputError(f"{path}: unsupported schema_version {version!r} (expected {SCHEMA_VERSION})")
    _check_shape(report, path)
    return report


_FINDING_TEXT = ("code", "name", "category", "severity", "run", "subject", "message")


def _check_shape(report: dict, path: Path) -> None:
    """The contract keys other code relies on have the contract's types (renderers tolerate the rest)."""
    def bad(where: str, what: str) -> InputError:
        return InputError(f"{path}: not a report: {where} must be {what}")

    if not isinstance(report.get("summary", {}), dict):
        raise bad("summary", "an object")
    inputs = report.get("inputs", {})
    if not isinstance(inputs, dict) or not isinstance(inputs.get("runs", []), list) \
            or not all(isinstance(r, dict) for r in inputs.get("runs", [])):
        raise bad("inputs.runs", "a list of objects")
    for key in ("findings", "suppressed", "not_evaluated", "evaluated"):
        items = report.get(key, [])
        if not isinstance(items, list) or not all(isinstance(f, dict) for f in items):
            raise bad(key, "a list of objects")
    for i, f in enumerate(report.get("findings", [])):
        for key in _FINDING_TEXT:
            if key in f and not isinstance(f[key], str):
                raise bad(f"findings[{i}].{key}", "a string")
        if f.get("severity", "info") not in SEVERITY_RANK:
            raise bad(f"findings[{i}].severity", "error, warning or info")
        if not isinstance(f.get("evidence", {}), dict):
            raise bad(f"findings[{i}].evidence", "an object")
