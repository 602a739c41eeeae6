"""Compare a candidate report with a baseline (a run folder or a previous report.json).

Findings are matched by a key that does not depend on layer order, file names or step counts:
(code, subject) for most rules; for input-integrity findings, (code, problem kind, file pattern), where
the file pattern is "event file" for TensorBoard event files and the base name with every digit run
replaced by '#' otherwise (`epoch_12.pt` and `epoch_7.pt` match). Matching counts duplicates: two equal
keys in the candidate against one in the baseline give one persisting and one new finding.

Runs are paired by name; when each side has exactly one run they are paired whatever their names.
Everything stored in `report["baseline"]` is plain numbers and names; the renderer decides how to show it.
"""
from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from report_gen.core import INT64_MAX, INT64_MIN, severity_rank

log = logging.getLogger("report_gen")

# (label, curve key in details.runs[run].curves, aggregate, which direction is better)
SCALAR_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("best train loss", "train_loss", "min", "lower"),
    ("final train loss", "train_loss", "last", "lower"),
    ("best val loss", "val_loss", "min", "lower"),
    ("final val loss", "val_loss", "last", "lower"),
    ("best val accuracy", "val_acc", "max", "higher"),
    ("final val accuracy", "val_acc", "last", "higher"),
)
# per-layer fact in details.runs[run].layers[].facts -> which direction is better (None: neither)
LAYER_FACTS: dict[str, str | None] = {"dead_kernel_ratio": "lower", "grad_rms": None, "update_ratio": None}
OVERLAY_CURVES = ("train_loss", "val_loss", "train_acc", "val_acc")
_AGGREGATES: dict[str, Callable[[np.ndarray], float]] = {
    "min": lambda v: float(np.min(v)), "max": lambda v: float(np.max(v)), "last": lambda v: float(v[-1]),
}


# ----------------------------------------------------------------------------------------- matching


def match_key(finding: dict[str, Any]) -> tuple:
    """The identity of a finding across two runs (see the module docstring)."""
    if finding.get("category") == "input-integrity":
        evidence = finding.get("evidence") or {}
        name = Path(str(evidence.get("file") or finding.get("subject", ""))).name
        pattern = "event file" if "tfevents" in name else re.sub(r"\d+", "#", name)
        return (finding.get("code"), evidence.get("kind"), pattern)
    return (finding.get("code"), finding.get("subject"))


def pair_runs(base: dict[str, Any], cand: dict[str, Any]) -> dict[str, str]:
    """candidate run name -> baseline run name (one run on each side: paired whatever the names)."""
    b_names = [r.get("name") for r in base.get("inputs", {}).get("runs", [])]
    c_names = [r.get("name") for r in cand.get("inputs", {}).get("runs", [])]
    if len(b_names) == 1 and len(c_names) == 1:
        return {c_names[0]: b_names[0]}
    return {n: n for n in c_names if n in b_names}


def classify(cand_findings: list[dict], base_findings: list[dict], pairs: dict[str, str]) -> list[dict]:
    """Set `status` ("new" | "persisting") on every candidate finding; return the resolved baseline ones.

    Resolved findings are copies with status "resolved" and without their plot (it points into the
    baseline's details, which the candidate report does not carry).
    """
    unmatched: dict[tuple, list[dict]] = defaultdict(list)
    for f in base_findings:
        unmatched[(f.get("run"), match_key(f))].append(f)
    for f in cand_findings:
        pool = unmatched.get((pairs.get(f.get("run")), match_key(f)))
        f["status"] = "persisting" if pool else "new"
        if pool:
            pool.pop(0)
    paired = set(pairs.values())
    return [{**{k: v for k, v in f.items() if k != "plot"}, "status": "resolved"}
            for (run, _), left in unmatched.items() if run in paired for f in left]


def _lead_with_new(finding: dict) -> tuple:
    return (finding.get("status") != "new", -severity_rank(finding.get("severity")),
            str(finding.get("run")), str(finding.get("code")), str(finding.get("subject")))


# ------------------------------------------------------------------------------------------- deltas


def _run_details(report: dict, run: str) -> dict:
    return report.get("details", {}).get("runs", {}).get(run, {})


def _finite_values(curve: dict | None) -> np.ndarray:
    values = (curve or {}).get("values") or []
    out = np.array([v if _is_number(v) else np.nan for v in values] if isinstance(values, list) else [],
                   dtype=float)
    return out[np.isfinite(out)]


def scalar_deltas(base: dict, cand: dict, pairs: dict[str, str]) -> list[dict[str, Any]]:
    """Best/final loss and accuracy of each paired run, and its last step, baseline vs candidate."""
    out: list[dict[str, Any]] = []
    for c_run, b_run in pairs.items():
        b_curves, c_curves = _run_details(base, b_run).get("curves", {}), _run_details(cand, c_run).get("curves", {})
        for label, key, aggregate, better in SCALAR_METRICS:
            b, c = _finite_values(b_curves.get(key)), _finite_values(c_curves.get(key))
            if b.size and c.size:
                out.append({"run": c_run, "metric": label, "baseline": _AGGREGATES[aggregate](b),
                            "candidate": _AGGREGATES[aggregate](c), "better": better})
        b_last, c_last = _last_step(base, b_run), _last_step(cand, c_run)
        if b_last is not None and c_last is not None:
            out.append({"run": c_run, "metric": "steps", "baseline": b_last, "candidate": c_last, "better": None})
    return out


def _last_step(report: dict, run: str) -> int | None:
    step = next((r.get("last_step") for r in report.get("inputs", {}).get("runs", []) if r.get("name") == run), None)
    return step if _is_number(step) else None


def layer_deltas(base: dict, cand: dict, pairs: dict[str, str]) -> list[dict[str, Any]]:
    """Per-layer facts (dead-kernel ratio, gradient RMS, update ratio) of every parameter in both runs."""
    out: list[dict[str, Any]] = []
    for c_run, b_run in pairs.items():
        b_layers = {row.get("param"): row.get("facts") or {} for row in _run_details(base, b_run).get("layers", [])}
        for row in _run_details(cand, c_run).get("layers", []):
            b_facts = b_layers.get(row.get("param"))
            if b_facts is None:
                continue
            for fact, better in LAYER_FACTS.items():
                b, c = b_facts.get(fact), (row.get("facts") or {}).get(fact)
                if _is_number(b) and _is_number(c):
                    out.append({"run": c_run, "param": row["param"], "fact": fact, "baseline": b, "candidate": c,
                                "better": better})
    return out


def _is_number(value: Any) -> bool:
    """A finite int or float; ints beyond int64 (a step of 10**5000 in a file) do not count."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, np.integer):
        return True
    if isinstance(value, int):
        return INT64_MIN <= value <= INT64_MAX
    return isinstance(value, float) and bool(np.isfinite(value))


def baseline_curves(base: dict, pairs: dict[str, str]) -> dict[str, dict[str, Any]]:
    """candidate run -> the paired baseline run's loss/accuracy curves, to overlay on the candidate's."""
    out = {}
    for c_run, b_run in pairs.items():
        curves = _run_details(base, b_run).get("curves", {})
        out[c_run] = {k: curves[k] for k in OVERLAY_CURVES if k in curves}
    return out


# ------------------------------------------------------------------------------------------ the API


def apply_baseline(report: dict[str, Any], base: dict[str, Any], label: str | None = None) -> None:
    """Compare the candidate `report` with the baseline report `base`, in place on `report` only.

    A pure report-to-report comparison: loading a report.json or diagnosing a baseline folder is the
    orchestrator's job (engine.diagnose). Every finding gets a status, findings are reordered new first
    (then by severity), and `report["baseline"]` gets: path (`label`), runs (candidate -> baseline run),
    new, persisting, resolved, deltas (scalar metrics), layer_deltas, curves (baseline curves by
    candidate run) and the baseline's summary.
    """
    pairs = pair_runs(base, report)
    if not pairs:
        log.warning("baseline: no run of the baseline matches a run of the candidate by name; "
                    "every finding counts as new")
    findings = report.get("findings", [])
    resolved = classify(findings, base.get("findings", []), pairs)
    findings.sort(key=_lead_with_new)
    resolved.sort(key=_lead_with_new)
    report["baseline"] = {
        "path": label,
        "runs": pairs,
        "new": sum(f["status"] == "new" for f in findings),
        "persisting": sum(f["status"] == "persisting" for f in findings),
        "resolved": resolved,
        "deltas": scalar_deltas(base, report, pairs),
        "layer_deltas": layer_deltas(base, report, pairs),
        "curves": baseline_curves(base, pairs),
        "summary": base.get("summary"),
    }
