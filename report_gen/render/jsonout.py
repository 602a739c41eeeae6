"""report.json: exactly the report dict, strict JSON (NaN/Inf as strings), UTF-8, indent=1."""
from __future__ import annotations

import json
import os
from pathlib import Path

from report_gen.core import jsonable
from report_gen.render.images import encoded


def dumps(report: dict) -> str:
    """The report as strict JSON text; numpy values become plain numbers, NaN/Inf become strings, pictures PNGs."""
    return json.dumps(jsonable(encoded(report)), allow_nan=False, ensure_ascii=False, indent=1)


def write_json(report: dict, path: str | Path) -> Path:
    """Write the report to `path` (atomically: a temporary file renamed into place)."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(dumps(report) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path
