"""Core value types shared by every layer: severities, findings, problems, the Report.

Nothing here knows about TensorBoard, torch, jinja2 or matplotlib. A Finding carries a message and
numbers, never markup; renderers decide how it looks.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any


SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2}
REPORT_FORMATS = ("html", "md", "json")


def severity_rank(severity: Any) -> int:
    """error=2, warning=1, info=0, anything unknown=-1 (sorted last). The one severity order."""
    return SEVERITY_RANK.get(str(severity), -1)


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return SEVERITY_RANK[self.value]

    @classmethod
    def parse(cls, text: str) -> "Severity":
        try:
            return cls(str(text).strip().lower())
        except ValueError:
            raise ValueError(f"unknown severity {text!r} (expected error, warning or info)") from None


class InputError(Exception):
    """A problem with the user's input that stops the whole command (exit code 2).

    The message is one line and names the file and the problem.
    """


@dataclass
class Problem:
    """Something wrong with one input file that did not stop the run from being read.

    kind: short machine-readable key, e.g. "truncated-record", "bad-length-crc", "bad-data-crc",
          "junk-bytes", "empty-file", "version-only", "step-restart", "duplicate-steps",
          "lfs-pointer", "unsafe-pickle", "not-a-checkpoint", ...
    severity: how much it should worry a reader: a truncated last record is "info" (a killed run),
          a corrupt region is "warning", a file that could not be read at all is "error".
    """

    file: str
    kind: str
    message: str
    severity: str = "warning"
    offset: int | None = None
    count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if v is not None}


@dataclass
class Finding:
    code: str
    name: str
    category: str
    severity: str
    run: str
    subject: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    suggestion: str = ""
    status: str | None = None  # "new" | "persisting" with --baseline
    plot: dict[str, Any] | None = None  # hint for the renderer: {"kind": ..., ...}; not in JSON contract

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.code, self.run, self.subject)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "code": self.code,
            "name": self.name,
            "category": self.category,
            "severity": self.severity,
            "run": self.run,
            "subject": self.subject,
            "message": self.message,
            "evidence": jsonable(self.evidence),
            "suggestion": self.suggestion,
        }
        if self.status is not None:
            d["status"] = self.status
        if self.plot is not None:
            d["plot"] = jsonable(self.plot)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Finding":
        return cls(
            code=str(d.get("code", "")),
            name=str(d.get("name", "")),
            category=str(d.get("category", "")),
            severity=str(d.get("severity", "info")),
            run=str(d.get("run", "")),
            subject=str(d.get("subject", "")),
            message=str(d.get("message", "")),
            evidence=dict(d.get("evidence") or {}),
            suggestion=str(d.get("suggestion", "")),
            status=d.get("status"),
            plot=d.get("plot"),
        )


def jsonable(value: Any) -> Any:
    """Turn numpy scalars/arrays and non-finite floats into plain JSON values."""
    import math

    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if np is not None:
        if isinstance(value, np.ndarray):
            return [jsonable(v) for v in value.tolist()]
        if isinstance(value, np.generic):
            value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    return str(value)


def severity_counts(findings: list[Finding]) -> dict[str, int]:
    counts = {"error": 0, "warning": 0, "info": 0}
    for f in findings:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    return counts


VERDICTS = ("fail", "warn", "unknown", "pass")  # worst first
# rules of this category judge the files, not the training: a run only they could evaluate was not judged
NOT_JUDGING_CATEGORIES = frozenset({"input-integrity"})


def verdict_for(counts: dict[str, int], judged: bool = True) -> str:
    """fail on any error, warn on any warning; otherwise `unknown` when nothing about the training could
    be judged (no rule but the input-integrity ones could run), else pass. Never PASS on what was not read."""
    if counts.get("error"):
        return "fail"
    if counts.get("warning"):
        return "warn"
    return "pass" if judged else "unknown"


def judged_runs(evaluated: Any) -> set[str]:
    """Names of the runs on which at least one rule about the training ran (from report.json `evaluated`)."""
    out: set[str] = set()
    for entry in evaluated if isinstance(evaluated, list) else []:
        if isinstance(entry, dict) and entry.get("category") not in NOT_JUDGING_CATEGORIES:
            out.update(str(r) for r in entry.get("runs") or [] if isinstance(entry.get("runs"), list))
    return out
