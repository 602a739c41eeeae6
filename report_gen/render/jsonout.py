"""report.json: exactly the report dict, strict JSON (NaN/Inf as strings), UTF-8, indent=1.

Integers are int64 (larger ones are bounded, when written and when read back: a step of 10**5000
in a hand-made report.json is read as 2**63 - 1 by `reportfile.load_report`), strings are valid
UTF-8 (`core.display_text`).
"""
from __future__ import annotations

import json
from pathlib import Path

from report_gen.core import jsonable
from report_gen.render.images import encoded
from report_gen.render.output import OutputFolder


def dumps(report: dict) -> str:
    """The report as strict JSON text; numpy values become plain numbers, NaN/Inf become strings, pictures PNGs."""
    return json.dumps(jsonable(encoded(report)), allow_nan=False, ensure_ascii=False, indent=1)


def write_json(report: dict, path: str | Path, *, folder: OutputFolder | None = None) -> Path:
    """Write the report to `path` atomically and without following a symlink planted there: a
    fresh temporary file renamed into place (`render.output.OutputFolder`). `folder`, when given,
    is the already opened folder of `path`."""
    path = Path(path)
    text = dumps(report) + "\n"
    if folder is not None:
        return folder.write_text(path.name, text)
    with OutputFolder(path.parent) as opened:
        return opened.write_text(path.name, text)
