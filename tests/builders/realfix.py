"""The real-library fixtures (tests/fixtures/real/<lib>/<case>/, written by the libraries themselves, each
with its MANIFEST.json entry) diagnosed for rule tests."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from report_gen.config import Config
from report_gen.engine import Options, diagnose

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"


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


@lru_cache(maxsize=None)
def _findings(lib: str, name: str, sub: str, options: str) -> tuple[dict[str, Any], ...]:
    """Every finding of one case, diagnosed once per test session (rules are independent, so selecting a
    code afterwards gives exactly what `--select` would)."""
    return tuple(report(lib, name, sub=sub, **json.loads(options))["findings"])


def findings(lib: str, name: str, *codes: str, sub: str = "", **rule_options) -> list[dict[str, Any]]:
    """The findings of `codes` (all when none) on one real case."""
    found = _findings(lib, name, sub, json.dumps(rule_options, sort_keys=True))
    return [dict(f) for f in found if not codes or f["code"] in codes]


def at_least_warning(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in found if f["severity"] in ("warning", "error")]


def trainer_state_signals(lib: str, name: str, checkpoint: str):
    """Signals built straight from an HF Trainer's trainer_state.json log_history (the numbers as the Trainer
    wrote them, read here with json, independently of report_gen's readers): train/loss, train/grad_norm,
    train/learning_rate, eval/loss, eval/accuracy, as its TensorBoardCallback would name them."""
    import numpy as np

    from report_gen.readers.signals import Series, Signals

    state = json.loads((case(lib, name) / checkpoint / "trainer_state.json").read_text())
    cols: dict[str, list[tuple[int, float]]] = {}
    for entry in state["log_history"]:
        for key, tag in (("loss", "train/loss"), ("grad_norm", "train/grad_norm"), ("learning_rate", "train/learning_rate"),
                         ("eval_loss", "eval/loss"), ("eval_accuracy", "eval/accuracy")):
            if key in entry:
                cols.setdefault(tag, []).append((int(entry["step"]), float(entry[key])))

    def s(tag):
        if tag not in cols:
            return None
        steps, values = zip(*cols[tag])
        return Series(tag, np.array(steps, dtype=np.int64), np.array(values, dtype=np.float64))

    return Signals(train_loss=s("train/loss"), grad_norm=s("train/grad_norm"), lr=s("train/learning_rate"),
                   val_loss=s("eval/loss"), val_acc=s("eval/accuracy"))
