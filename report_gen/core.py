"""Core value types shared by every layer: severities, findings, problems, the Report.

Nothing here knows about TensorBoard, torch, jinja2 or matplotlib. A Finding carries a message and
numbers, never markup; renderers decide how it looks.
"""
from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from typing import Any

from report_gen.vocab import Plot, parse_plot


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


def json_object_option(value: Any, option: str, example: str = "") -> dict:
    """A command-line option holding a JSON object (`--model-kwargs`, `--storage-options`) as a dict: {} for
    None or empty; InputError (one line, naming the option) when it is not JSON or not an object."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise InputError(f"{option}: invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(value, dict):
        raise InputError(f"{option} must be a JSON object{', e.g. ' + example if example else ''}")
    return value


class ProblemKind(str, enum.Enum):
    """Every kind of damage a reader reports (`Problem.kind`), with its default severity.

    The default is the grade when the reader knows nothing more; a reader that does (an empty event
    file is harmless, an empty checkpoint is not) passes the severity explicitly. The values are the
    strings report.json carries (contract): add kinds, never rename them.
    """

    severity: "Severity"

    def __new__(cls, value: str, severity: Severity) -> "ProblemKind":
        member = str.__new__(cls, value)
        member._value_ = value
        member.severity = severity
        return member

    def __str__(self) -> str:
        return self.value

    # any file: an I/O error or an unexpected failure (an event file that cannot be opened: error)
    UNREADABLE = "unreadable", Severity.WARNING
    # a FIFO, device, socket or symlink to one named like an input (report_gen/safe_open.py): never opened
    NOT_A_REGULAR_FILE = "not-a-regular-file", Severity.WARNING
    # TFRecord framing (readers/tfrecord.py)
    TRUNCATED_RECORD = "truncated-record", Severity.INFO  # the last record ends early: a killed run
    BAD_LENGTH_CRC = "bad-length-crc", Severity.WARNING
    BAD_DATA_CRC = "bad-data-crc", Severity.WARNING
    JUNK_BYTES = "junk-bytes", Severity.WARNING  # printable non-record bytes (a log written into the file)
    BAD_LENGTH = "bad-length", Severity.WARNING  # a valid header claims more than the file holds; resynced past
    OVERSIZED_RECORD = "oversized-record", Severity.WARNING  # longer than MAX_RECORD_BYTES: skipped by seek
    FILE_GREW = "file-grew", Severity.INFO  # written to while read: read up to its size at open
    FILE_SHRANK = "file-shrank", Severity.WARNING  # truncated while read: records past that point missing
    # event protos and the step policy (readers/events/)
    EMPTY_FILE = "empty-file", Severity.WARNING  # an empty event file is graded info by its reader
    VERSION_ONLY = "version-only", Severity.INFO
    BAD_PROTO = "bad-proto", Severity.WARNING
    STEP_RESTART = "step-restart", Severity.INFO
    # text logs: JSON, CSV, YAML, MLflow stores, W&B folders (readers/textlogs.py and the readers using it)
    TOO_LARGE = "too-large", Severity.WARNING  # a log file above its reader's size cap: not read (or read in part)
    BAD_JSON = "bad-json", Severity.WARNING
    BAD_ROW = "bad-row", Severity.WARNING  # a CSV row / metric line that does not parse (the others are kept)
    BAD_YAML = "bad-yaml", Severity.WARNING
    UNSAFE_YAML_TAG = "unsafe-yaml-tag", Severity.INFO  # a !!python/... tag kept as text, never constructed
    BAD_DATABASE = "bad-database", Severity.WARNING  # an SQLite store that is locked, corrupt or not MLflow's
    # several logs of one run (readers/registry.py)
    DUPLICATE_SERIES = "duplicate-series", Severity.INFO  # a later log's copy of a series is left out
    # a whole run (readers/run.py)
    NOTHING_READABLE = "nothing-readable", Severity.ERROR  # info when the logs were only opened, never written
    MIXED_MODELS = "mixed-models", Severity.INFO  # one folder's checkpoints hold several models: split into runs
    # checkpoints (readers/checkpoint/): not a checkpoint at all, harmless beside checkpoints
    NOT_A_CHECKPOINT = "not-a-checkpoint", Severity.INFO
    NO_WEIGHTS = "no-weights", Severity.INFO
    # checkpoints that cannot be used
    LFS_POINTER = "lfs-pointer", Severity.WARNING
    TEXT_FILE = "text-file", Severity.WARNING
    TRUNCATED = "truncated", Severity.WARNING
    CORRUPT = "corrupt", Severity.WARNING
    OPTIMIZER_ONLY = "optimizer-only", Severity.WARNING
    SCHEDULER_ONLY = "scheduler-only", Severity.WARNING
    UNSAFE_PICKLE = "unsafe-pickle", Severity.WARNING
    HOSTILE_PICKLE = "hostile-pickle", Severity.WARNING  # refused by readers/pickle_guard.py before unpickling
    TORCHSCRIPT_V1 = "torchscript-v1", Severity.WARNING
    LEGACY_TAR = "legacy-tar", Severity.WARNING
    MISSING = "missing", Severity.WARNING
    MISSING_SHARD = "missing-shard", Severity.WARNING
    UNSAFE_PATH = "unsafe-path", Severity.WARNING  # a shard index (or a log symlink) names a file outside its folder
    # checkpoints read with something left out
    UNSAFE_PICKLE_NEUTRALISED = "unsafe-pickle-neutralised", Severity.WARNING  # info when nothing dangerous
    TRUSTED_PICKLE = "trusted-pickle", Severity.WARNING
    UNREADABLE_TENSOR = "unreadable-tensor", Severity.WARNING
    MISSING_TENSOR = "missing-tensor", Severity.WARNING
    UNREADABLE_OPTIMIZER_STATE = "unreadable-optimizer-state", Severity.WARNING
    # the probe (probe.py)
    STATE_DICT_MISMATCH = "state-dict-mismatch", Severity.WARNING
    # the process pool of one diagnose (parallel.py): the worker reading a run or file died
    WORKER_CRASHED = "worker-crashed", Severity.ERROR
    # remote inputs staged by storage.py: the run's diagnosis misses a file that exists (or existed)
    MISSING_OBJECT = "missing-object", Severity.ERROR  # listed, then gone when fetched
    PERMISSION_DENIED = "permission-denied", Severity.ERROR
    TRANSFER_FAILED = "transfer-failed", Severity.ERROR  # after the bounded retries
    UNSAFE_NAME = "unsafe-name", Severity.WARNING  # a key that cannot be a file inside the cache: not staged


@dataclass
class Problem:
    """Something wrong with one input file that did not stop the run from being read.

    kind: a `ProblemKind` (stored as its plain string; an unknown kind is a ValueError here, not a
          typo found at render time).
    severity: how much it should worry a reader: a truncated last record is "info" (a killed run),
          a corrupt region is "warning", a file that could not be read at all is "error". Omitted: the
          kind's default severity.
    """

    file: str
    kind: str
    message: str
    severity: str | None = None
    offset: int | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        kind = ProblemKind(self.kind)
        self.kind = kind.value
        severity = self.severity if self.severity is not None else kind.severity
        self.severity = (severity if isinstance(severity, Severity) else Severity.parse(severity)).value

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
    plot: Plot | None = None  # hint for the renderer (vocab plot kinds); not in the JSON contract

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
            d["plot"] = jsonable(self.plot.to_dict())
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
            plot=parse_plot(d.get("plot")),
        )


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def clamp_int64(value: int) -> int:
    """`value` bounded to the int64 range (a step of 10**5000 read from a file becomes 2**63 - 1), so
    it can be formatted, converted to float and compared without an OverflowError."""
    return INT64_MIN if value < INT64_MIN else INT64_MAX if value > INT64_MAX else value


def display_text(value: str) -> str:
    """`value` safe to encode as UTF-8: the lone surrogates that stand for the raw bytes of a
    non-UTF-8 file name (os functions decode those with 'surrogateescape') become backslash escapes,
    'run\\xff'. The raw name stays what the readers use for I/O; this is only what is shown."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte (from JSON text, say)
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def jsonable(value: Any) -> Any:
    """Turn numpy scalars/arrays and non-finite floats into plain JSON values; ints are bounded to
    int64 and strings made encodable (`clamp_int64`, `display_text`), so writing never fails."""
    import math

    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if isinstance(value, enum.Enum):  # vocabulary members (Signal, Key, ...) are their value in JSON
        value = value.value
    if isinstance(value, dict):
        return {display_text(str(k)): jsonable(v) for k, v in value.items()}
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
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return clamp_int64(value)
    if isinstance(value, str):
        return display_text(value)
    return display_text(str(value))


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
