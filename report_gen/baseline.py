"""Compare a candidate report with a baseline (a run folder or a previous report.json).

Findings are matched by a key that does not depend on layer order, file names or step counts:
(code, subject) for most rules; for input-integrity findings, (code, problem kind, file base name).
Runs are paired by name; when each side has exactly one run they are paired whatever their names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from report_gen.core import InputError

LAYER_FACTS = ("dead_kernel_ratio", "grad_rms", "update_ratio")


def _key(f: dict[str, Any]) -> tuple:
    if f.get("category") == "input-integrity":
        ev = f.get("evidence") or {}
        return (f.get("code"), ev.get("kind"), Path(str(ev.get("file") or f.get("subject", ""))).name)
    return (f.get("code"), f.get("subject"))


def _pair_runs(base: dict, cand: dict) -> dict[str, str]:
    """candidate run name -> baseline run name."""
    b_names = [r["name"] for r in base["inputs"]["runs"]]
    c_names = [r["name"] for r in cand["inputs"]["runs"]]
    if len(b_names) == 1 and len(c_names) == 1:
        return {c_names[0]: b_names[0]}
    return {n: n for n in c_names if n in b_names}


def load_baseline(path: str, opts) -> dict[str, Any]:
    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        from report_gen.render import load_report

        return load_report(p)
    if not p.exists():
        raise InputError(f"{path}: baseline not found (give a run folder or a report.json)")
    from dataclasses import replace

    from report_gen.engine import diagnose

    return diagnose([path], replace(opts, baseline=None))


def apply_baseline(report: dict[str, Any], baseline: str | dict, opts=None) -> None:
    base = baseline if isinstance(baseline, dict) else load_baseline(baseline, opts)
    pairs = _pair_runs(base, report)
    base_by_run: dict[str, dict[tuple, dict]] = {}
    for f in base["findings"]:
        base_by_run.setdefault(f["run"], {})[_key(f)] = f
    matched: set[tuple[str, tuple]] = set()
    for f in report["findings"]:
        b_run = pairs.get(f["run"])
        k = _key(f)
        if b_run is not None and k in base_by_run.get(b_run, {}):
            f["status"] = "persisting"
            matched.add((b_run, k))
        else:
            f["status"] = "new"
    paired_base = set(pairs.values())
    resolved = [dict(f, status="resolved") for f in base["findings"]
                if f["run"] in paired_base and (f["run"], _key(f)) not in matched]
    # lead with what the change made worse: new findings first, by severity
    order = {"error": 0, "warning": 1, "info": 2}
    report["findings"].sort(key=lambda f: (f["status"] != "new", order.get(f["severity"], 3), f["run"], f["code"]))
    report["baseline"] = {
        "path": baseline if isinstance(baseline, str) else base.get("inputs", {}).get("path"),
        "runs": {c: b for c, b in pairs.items()},
        "new": sum(f["status"] == "new" for f in report["findings"]),
        "persisting": sum(f["status"] == "persisting" for f in report["findings"]),
        "resolved": resolved,
        "deltas": _deltas(base, report, pairs),
        "curves": {c: _base_curves(base, b) for c, b in pairs.items()},
        "summary": base.get("summary"),
    }


def _curve_values(details: dict, run: str, key: str) -> np.ndarray | None:
    c = details.get("runs", {}).get(run, {}).get("curves", {}).get(key)
    if not c:
        return None
    v = np.array([np.nan if x is None or isinstance(x, str) else x for x in c["values"]], dtype=float)
    return v if np.isfinite(v).any() else None


def _deltas(base: dict, cand: dict, pairs: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    metrics = (("best train loss", "train_loss", np.nanmin, "lower"), ("final train loss", "train_loss", None, "lower"),
               ("best val loss", "val_loss", np.nanmin, "lower"), ("final val loss", "val_loss", None, "lower"),
               ("best val accuracy", "val_acc", np.nanmax, "higher"), ("final val accuracy", "val_acc", None, "higher"))
    for c_run, b_run in pairs.items():
        for label, key, agg, better in metrics:
            b = _curve_values(base.get("details", {}), b_run, key)
            c = _curve_values(cand.get("details", {}), c_run, key)
            if b is None or c is None:
                continue
            bv = float(agg(b)) if agg else float(b[np.isfinite(b)][-1])
            cv = float(agg(c)) if agg else float(c[np.isfinite(c)][-1])
            out.append({"run": c_run, "metric": label, "baseline": bv, "candidate": cv, "better": better,
                        "worse": (cv > bv) if better == "lower" else (cv < bv)})
        b_in = next((r for r in base["inputs"]["runs"] if r["name"] == b_run), {})
        c_in = next((r for r in cand["inputs"]["runs"] if r["name"] == c_run), {})
        if b_in.get("last_step") is not None and c_in.get("last_step") is not None:
            out.append({"run": c_run, "metric": "steps", "baseline": b_in["last_step"],
                        "candidate": c_in["last_step"], "better": None, "worse": False})
        b_layers = {r["param"]: r["facts"] for r in base.get("details", {}).get("runs", {}).get(b_run, {}).get("layers", [])}
        for row in cand.get("details", {}).get("runs", {}).get(c_run, {}).get("layers", []):
            bf = b_layers.get(row["param"])
            if not bf:
                continue
            for fact in LAYER_FACTS:
                bv, cv = bf.get(fact), row["facts"].get(fact)
                if not isinstance(bv, (int, float)) or not isinstance(cv, (int, float)):
                    continue
                changed = abs(cv - bv) > 0.05 if fact == "dead_kernel_ratio" else (
                    bv > 0 and cv > 0 and abs(np.log10(cv / bv)) >= 1.0)
                if changed:
                    worse = cv > bv if fact == "dead_kernel_ratio" else None
                    out.append({"run": c_run, "metric": f"{fact} of {row['param']}", "baseline": bv,
                                "candidate": cv, "better": "lower" if fact == "dead_kernel_ratio" else None,
                                "worse": bool(worse)})
    return out


def _base_curves(base: dict, run: str) -> dict[str, Any]:
    curves = base.get("details", {}).get("runs", {}).get(run, {}).get("curves", {})
    return {k: v for k, v in curves.items() if k in ("train_loss", "val_loss", "train_acc", "val_acc")}
