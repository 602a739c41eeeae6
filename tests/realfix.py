"""The real-library fixtures (tests/fixtures/real/<lib>/<case>/, written by the libraries themselves, each
with its MANIFEST.json entry) diagnosed for rule tests."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from report_gen.config import Config
from report_gen.engine import Options, diagnose

REAL = Path(__file__).resolve().parent / "fixtures" / "real"


@lru_cache(maxsize=None)
def manifest(lib: str) -> dict[str, Any]:
    return json.loads((REAL / lib / "MANIFEST.json").read_text())["cases"]


def case(lib: str, name: str) -> Path:
    path = REAL / lib / name
    assert path.is_dir(), f"missing real fixture {lib}/{name}"
    return path


def report(lib: str, name: str, *codes: str, sub: str = "", **rule_options: dict[str, Any]) -> dict[str, Any]:
    """report.json of one real case (or of `sub`, a folder inside it), only `codes` selected when given;
    rule_options: {"K101": {"warning_ratio": 0.02}}."""
    cfg = Config(rule_options=dict(rule_options)) if rule_options else Config()
    path = case(lib, name) / sub if sub else case(lib, name)
    return diagnose([str(path)], Options(config=cfg, select=list(codes) or None))


def findings(lib: str, name: str, *codes: str, sub: str = "", **rule_options) -> list[dict[str, Any]]:
    return report(lib, name, *codes, sub=sub, **rule_options)["findings"]


def at_least_warning(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in found if f["severity"] in ("warning", "error")]
