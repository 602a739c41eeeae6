"""The one view model that feeds both template sets (HTML and Markdown) and the terminal summary.

Every presentation decision lives here: sorting, grouping, rounding, text clean-up and truncation,
which plots matter and in which order. Templates only lay out what `build_context` returns, so the
HTML and the Markdown report always agree. This module reads ONLY the report dict (never the run)
and never decides a diagnostic threshold: it shows the verdicts the rules already made.
"""
from __future__ import annotations

import dataclasses
import json
import math
import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from report_gen.core import INT64_MAX, INT64_MIN, display_text, judged_runs, severity_rank, verdict_for
from report_gen.render.images import encoded
from report_gen.vocab import (DISTRIBUTION_SOURCES, USER_ROLES, ActivationSeriesPlot, CurvePlot, DistributionPlot,
                              GradDepthPlot, ImagePlot, Key, LayerSeriesPlot, Plot, ProbeSeriesPlot, Signal, curve_label,
                              parse_plot, role_words)

SEVERITY_ORDER = ("error", "warning", "info")
SEVERITY_LABELS = {"error": "Errors", "warning": "Warnings", "info": "Info"}
VERDICT_LABELS = {"fail": "FAIL", "warn": "WARN", "unknown": "UNKNOWN", "pass": "PASS"}
CURVE_GROUPS = (
    ("Loss", lambda name: "loss" in name.lower()),
    ("Accuracy", lambda name: name in (Signal.TRAIN_ACC, Signal.VAL_ACC)),
    ("Learning rate", lambda name: name == Signal.LR),
    ("Gradient norm", lambda name: name == Signal.GRAD_NORM),
)
CHANGE_ORDER = ("worse", "better", "same", "")  # baseline metric changes: what got worse is shown first
#: findings about the input files (DESIGN §5): shown after every finding about the training
INPUT_CATEGORY = "input-integrity"
INPUT_LABEL = "Input files"
LONG_EVIDENCE = 48  # HTML: evidence values longer than this are a note under the table, not a table cell
#: what a run card says was read, in the words of the person who logged it (signal -> words); derived
#: signals (loss_any, checkpoint_series, ...) say nothing a user logged and are not listed
SIGNAL_WORDS = {
    Signal.TRAIN_LOSS: "training loss", Signal.VAL_LOSS: "validation loss", Signal.TRAIN_ACC: "training accuracy",
    Signal.VAL_ACC: "validation accuracy", Signal.LR: "learning rate", Signal.GRAD_NORM: "gradient norm",
    Signal.WEIGHT_HIST: "weight histograms", Signal.GRAD_HIST: "gradient histograms",
    Signal.ACT_HIST: "activation histograms", Signal.ACT_STATS: "activation statistics",
    Signal.UPDATE_RATIO: "update ratios", Signal.GRAD_NORM_PARAM: "per-parameter gradient norms",
    Signal.DYNAMICS: "layer dynamics", Signal.KERNEL_IMAGES: "kernel images", Signal.ACT_IMAGES: "activation maps",
    Signal.OPTIMIZER_STATE: "optimizer state (in the checkpoints)", Signal.PROBE: "activations measured by the probe",
    Signal.ATTENTION: "attention (measured by the probe)",
}


@dataclass(frozen=True)
class Limits:
    """How much of the report to show. None means "everything".

    max_findings: keep only the most severe N findings (the rest are counted as cut).
    max_rows: cap for long secondary tables (layers, rule coverage, suppressed, problems).
    max_text: longest free text (message, suggestion, name) before it is cut with an ellipsis.
    """

    max_findings: int | None = None
    max_rows: int | None = None
    max_text: int = 2000


# ----------------------------------------------------------------------------------------- helpers


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


#: bidirectional formatting characters: they can make a name read differently from what it is
#: (U+202E turns "exe.txt" around); removed from everything shown
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean_text(value: Any, limit: int = 2000) -> str:
    """str(value) for display: control characters (C0 and C1: ESC, BEL, CSI, ...) replaced by spaces,
    bidirectional overrides removed, the raw bytes of a non-UTF-8 name shown as backslash escapes
    (`core.display_text`), cut to `limit` characters with '…'."""
    text = "" if value is None else value if isinstance(value, str) else _safe_str(value)
    text = display_text(text[: limit + 1] if len(text) > 4 * limit + 64 else text)
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text if ch not in BIDI_CONTROLS)
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _safe_str(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return format_value(value)
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a value whose str() fails is shown by its type
        return f"<{type(value).__name__}>"


def format_value(value: Any) -> str:
    """A number or small value rounded for people: 4 significant digits, nan/inf kept as words."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:  # a step of 10**5000: shown by its order of magnitude
            return f"{'-' if value < 0 else ''}~1e{int((abs(value).bit_length() - 1) * 0.30103)} (out of range)"
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(format_value(v) for v in value[:8])
        return f"[{shown}{', …' if len(value) > 8 else ''}]"
    if isinstance(value, dict):
        items = list(value.items())
        shown = ", ".join(f"{clean_text(k, 60)}={format_value(v)}" for k, v in items[:8])
        return shown + (", …" if len(items) > 8 else "")
    return clean_text(value, 200)


def format_duration(seconds: Any) -> str:
    """93.2 -> '1 min 33 s'; unknown -> '—'."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds):
        return "—"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def plot_key(plot: Plot) -> str:
    """A stable string naming one plot: the same plot gives the same key (and the same PNG)."""
    return json.dumps(plot.to_dict(), sort_keys=True, separators=(",", ":"), default=str)


def template_root() -> Path:
    """Where the templates live: inside the installed wheel, else the source checkout's templates/."""
    packaged = resources.files("report_gen") / "templates"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "templates"


def template_environment(kind: str, **options: Any):
    """The jinja2 environment for one report format (`kind`: a folder of templates/), with compiled
    templates cached on disk.

    Compiling the report's templates costs more than reading a million scalars, so the compiled code
    is kept in jinja2's own bytecode cache: a per-user folder of the temp directory that jinja2 creates
    with mode 0700 and refuses to use if another user owns it. Each entry is keyed by the template's
    name and checked against a checksum of its source, the Python version and jinja2's version, so an
    edited template or another interpreter compiles afresh. Set REPORT_GEN_TEMPLATE_CACHE=0 to compile
    every time; when the folder cannot be made, templates are simply compiled."""
    import os

    import jinja2

    cache = None
    if os.environ.get("REPORT_GEN_TEMPLATE_CACHE", "1") != "0":
        try:
            cache = jinja2.FileSystemBytecodeCache()
        except (OSError, RuntimeError):
            cache = None
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_root() / kind)), bytecode_cache=cache,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, **options)


# ------------------------------------------------------------------------------------ plot specs


def _curve_series_title(series: Iterable[str]) -> str:
    return ", ".join(curve_label(s) for s in series)


def plot_title(plot: Plot) -> str:
    """Human title (also the image alt text) for a plot."""
    if isinstance(plot, CurvePlot):
        title = _curve_series_title(plot.series)
        if plot.baseline:
            title += " vs baseline (dashed)"
        return f"{title} (step {format_value(plot.mark_step)} marked)" if plot.mark_step is not None else title
    if isinstance(plot, DistributionPlot):
        return f"{plot.key} over time"
    if isinstance(plot, GradDepthPlot):
        return "gradient RMS by depth"
    if plot.is_image:
        return str(plot.image)
    if isinstance(plot, LayerSeriesPlot):
        return f"{plot.fact} of {plot.param}"
    if isinstance(plot, ActivationSeriesPlot):
        return f"activation statistics of {plot.layer} over training"
    if isinstance(plot, ProbeSeriesPlot):
        return f"probe activation statistics of {plot.layer} across checkpoints"
    return plot.kind


def _plot_ref(plot: Plot | None, limits: Limits) -> dict | None:
    if plot is None:
        return None
    return {"key": plot_key(plot), "spec": plot, "title": clean_text(plot_title(plot), min(limits.max_text, 200)),
            "is_image": plot.is_image}


# -------------------------------------------------------------------------------------- findings


def _finding_view(finding: dict, index: int, limits: Limits, overlay: dict[str, set] | None = None) -> dict:
    """One finding for the templates; `overlay` (run -> baseline curve names) adds the baseline to curve plots."""
    text = limits.max_text
    evidence = [(clean_text(k, 80), format_value(v)) for k, v in _dict(finding.get("evidence")).items()]
    shown = [(k.replace("_", " "), v) for (k, v), raw in zip(evidence, _dict(finding.get("evidence")).values())
             if raw is not None]
    severity = str(finding.get("severity", "info"))
    return {
        "id": f"finding-{index}",
        "code": clean_text(finding.get("code", ""), 20),
        "name": clean_text(finding.get("name", ""), 80),
        "category": clean_text(finding.get("category", ""), 80),
        "severity": severity if severity in SEVERITY_ORDER else "info",
        "run": clean_text(finding.get("run", ""), 200),
        "subject": clean_text(finding.get("subject", ""), 300),
        "message": clean_text(finding.get("message", ""), text),
        "suggestion": clean_text(finding.get("suggestion", ""), text),
        "status": clean_text(finding.get("status") or "", 20),
        "reason": clean_text(finding.get("reason") or "", text),
        "evidence": evidence[:40],
        # HTML: the evidence as a table of short values, long values (lists, notes) as notes under it
        "evidence_table": [(k, v) for k, v in shown if len(v) <= LONG_EVIDENCE][:40],
        "evidence_notes": [(k, v) for k, v in shown if len(v) > LONG_EVIDENCE][:10],
        "input": is_input_notice(finding),
        "plot": _plot_ref(_with_overlay(parse_plot(finding.get("plot")), overlay or {}), limits),
    }


def _with_overlay(plot: Plot | None, overlay: dict[str, set]) -> Plot | None:
    """A curve plot marked to draw the baseline's curves too, when the baseline has any of its series."""
    if isinstance(plot, CurvePlot) and overlay.get(plot.run, set()) & set(plot.series):
        return dataclasses.replace(plot, baseline=True)
    return plot


def is_input_notice(finding: Any) -> bool:
    """A finding about the input files (category input-integrity), not about the training."""
    return isinstance(finding, dict) and str(finding.get("category", "")) == INPUT_CATEGORY


def sort_findings(findings: Iterable[Any]) -> list[dict]:
    """Findings about the training first, then those about the input files; each most severe first, then
    by code, run and subject (a stable, readable order)."""
    items = [f for f in findings if isinstance(f, dict)]
    return sorted(items, key=lambda f: (is_input_notice(f), -severity_rank(f.get("severity")),
                                        str(f.get("code", "")), str(f.get("run", "")), str(f.get("subject", ""))))


def _group_by_severity(views: list[dict]) -> list[dict]:
    """Training findings by severity, then the input notices in one group of their own."""
    training = [v for v in views if not v["input"]]
    groups = [{"severity": s, "label": SEVERITY_LABELS[s], "findings": [v for v in training if v["severity"] == s]}
              for s in SEVERITY_ORDER if any(v["severity"] == s for v in training)]
    notices = [v for v in views if v["input"]]
    if notices:
        groups.append({"severity": "input", "label": f"{INPUT_LABEL}", "findings": notices})
    return groups


def _capped(rows: list, limits: Limits) -> dict:
    cap = limits.max_rows
    shown = rows if cap is None else rows[:cap]
    return {"rows": shown, "cut": len(rows) - len(shown)}


# ------------------------------------------------------------------------------------------ runs


def _run_view(index: int, run_input: dict, details: dict, findings: list[dict], limits: Limits,
              overlay: dict[str, set] | None = None, judged: bool = True) -> dict:
    """One run's summary card plus its layer table and plot references; `findings` are raw dicts.

    `overlay` (run -> baseline curve names) makes the run's curve plots draw the baseline's curves too.
    """
    name = str(run_input.get("name", ""))
    summary = _dict(details.get("summary"))
    steps = _list(summary.get("steps")) or [run_input.get("first_step"), run_input.get("last_step")]
    first, last = (steps + [None, None])[:2]
    own = [f for f in findings if str(f.get("run", "")) == name]
    counts = {s: sum(1 for f in own if f.get("severity") == s) for s in SEVERITY_ORDER}
    problems = [{"file": clean_text(p.get("file", ""), 300), "kind": clean_text(p.get("kind", ""), 60),
                 "severity": p.get("severity") if p.get("severity") in SEVERITY_ORDER else "warning",
                 "message": clean_text(p.get("message", ""), limits.max_text),
                 "offset": format_value(p.get("offset")) if p.get("offset") is not None else ""}
                for p in map(_dict, _list(run_input.get("problems")))]
    return {
        "id": f"run-{index}",
        "name": clean_text(name, 200),
        "path": clean_text(run_input.get("path", ""), 500),
        "steps": f"{format_value(first)} – {format_value(last)}" if first is not None or last is not None else "—",
        "wall_time": format_duration(summary.get("wall_time_s")),
        "event_files": format_value(run_input.get("event_files")),
        "checkpoints": format_value(summary.get("checkpoints", run_input.get("checkpoints"))),
        "parameters": format_value(summary.get("parameters")),
        "parameter_count": format_value(summary.get("parameter_count")),
        "signals": [clean_text(s, 200) for s in _list(summary.get("signals"))][:60],
        "logged": _read_words(_list(summary.get("signals"))),
        "hparams": [(clean_text(k, 100), format_value(v)) for k, v in _dict(summary.get("hparams")).items()][:60],
        "optimizer": _optimizer_text(_dict(summary.get("optimizer"))),
        "probe": _probe_text(_dict(run_input.get("probe"))),
        "read": _capped(_series_rows(run_input.get("series"), ignored=False), limits),
        "ignored": _capped(_series_rows(run_input.get("ignored"), ignored=True), limits),
        "weights_at": _weights_text(run_input.get("weights_at")),
        "problems": _capped(problems, limits),
        "counts": counts,
        "verdict": verdict_for(counts, judged=judged),
        "judged": judged,
        "layers": _layers_view(_list(details.get("layers")), limits),
        "curves": _curve_refs(name, _dict(details.get("curves")), limits, overlay or {}),
        "distributions": _distribution_refs(name, _dict(details.get("distributions")), limits),
        "activations": _activation_refs(name, _dict(details.get("activation_series")), limits),
        "grad_depth": _plot_ref(GradDepthPlot(name), limits) if _list(details.get("grad_depth")) else None,
        "images": _image_refs(name, _dict(details.get("images")), limits),
    }


ROLE_HINT = ("To give an ignored series a role: --role ROLE=TAG (repeatable) or [tool.report_gen.roles] in "
             f"pyproject.toml, with ROLE one of {', '.join(USER_ROLES)}; a glob such as 'eval/*loss' works too.")
_POINTS = {"scalar": ("point", "points"), "histogram": ("step", "steps"), "image": ("image", "images"),
           "text": ("entry", "entries")}
_GROUPED = 3  # more histograms/images than this with one role and source are shown as one row


def _series_rows(entries: Any, ignored: bool) -> list[dict]:
    """What was read (or ignored), in user words: "train/loss (TensorBoard, 600 points) -> training loss".
    Scalars one row each; histograms and images one row per role (or reason) and source when numerous."""
    rows: list[dict] = []
    families: dict[tuple, list[dict]] = {}
    for e in map(_dict, _list(entries)):
        kind = str(e.get("kind", "scalar"))
        if kind in ("histogram", "image"):
            families.setdefault((kind, e.get("role", ""), e.get("reason", ""), e.get("source", "")), []).append(e)
        else:
            rows.append(_series_row(e, ignored))
    for (kind, _, _, _), group in families.items():
        if len(group) <= _GROUPED:
            rows.extend(_series_row(e, ignored) for e in group)
            continue
        first, n = group[0], len(group)
        points = sorted({int(e["points"]) for e in group if isinstance(e.get("points"), int)})
        each = _POINTS[kind][1 if points and points[-1] != 1 else 0]
        span = f"{points[0]}" if len(points) == 1 else f"{points[0]}-{points[-1]}" if points else "?"
        rows.append({"tag": clean_text(f"{first.get('tag', '')} … {group[-1].get('tag', '')}", 300),
                     "what": clean_text(f"{n} {kind}s, {first.get('source', '')}, {span} {each} each", 200),
                     "role": "" if ignored else clean_text(role_words(first.get("role", "")), 200),
                     "note": clean_text(first.get("reason" if ignored else "note", ""), 400)})
    return rows


def _series_row(e: dict, ignored: bool) -> dict:
    kind = str(e.get("kind", "scalar"))
    points = e.get("points")
    one, many = _POINTS.get(kind, ("point", "points"))
    count = f"{format_value(points)} {one if points == 1 else many}"
    label = "" if kind == "scalar" else f"{kind}, "
    return {"tag": clean_text(e.get("tag", ""), 300),
            "what": clean_text(f"{label}{e.get('source', '')}, {count}", 200),
            "role": "" if ignored else clean_text(role_words(e.get("role", "")), 200),
            "note": clean_text(e.get("reason" if ignored else "note", ""), 400)}


def _weights_text(paths: Any) -> str:
    """Where the model weights were found inside the checkpoints (the key path of the largest state dict)."""
    shown = [("the file itself" if not p else f"key {p}") for p in map(str, _list(paths))]
    return clean_text(", ".join(shown), 300)


def _read_words(signals: list) -> list[str]:
    """What was read, in user words, in the vocabulary's order; unknown signal names as they are."""
    names = {str(s) for s in signals}
    words = [w for sig, w in SIGNAL_WORDS.items() if sig.value in names]
    derived = {Signal.LOSS_ANY.value, Signal.CHECKPOINT.value, Signal.CHECKPOINT_SERIES.value,
               Signal.PROBE_SERIES.value, Signal.INPUT_PROBLEMS.value}
    known = {sig.value for sig in SIGNAL_WORDS} | derived
    return words + [clean_text(n, 200) for n in sorted(names - known)][:60]


def _optimizer_text(opt: dict) -> str:
    if not opt:
        return ""
    note = f" ({clean_text(opt.get('note', ''), 300)})" if opt.get("note") else ""
    return clean_text(f"{opt.get('kind', '?')}, state mapped: {opt.get('mapping', '?')}", 200) + note


def _probe_text(probe: dict) -> str:
    if not probe:
        return ""
    parts = [f"model {clean_text(probe.get('model', '?'), 200)}", f"input {clean_text(probe.get('input', '?'), 200)}",
             f"{format_value(probe.get('checkpoints', 0))} checkpoint(s) probed"]
    if probe.get("note"):
        parts.append(clean_text(probe["note"], 200))
    return "; ".join(parts)


def _layers_view(layers: list, limits: Limits) -> dict:
    rows_in = [_dict(layer) for layer in layers]
    columns: list[str] = []
    for layer in rows_in:
        columns += [k for k in _dict(layer.get("facts")) if k not in columns]
    rows = []
    for layer in rows_in:
        facts, flags = _dict(layer.get("facts")), _dict(layer.get("flags"))
        cells = [{"value": format_value(facts.get(c)) if c in facts else "",
                  "severity": str(flags[c]) if str(flags.get(c)) in SEVERITY_ORDER else None} for c in columns]
        shape = _list(layer.get("shape"))
        rows.append({"param": clean_text(layer.get("param", ""), 200),
                     "shape": "×".join(format_value(s) for s in shape) if shape else "",
                     "cells": cells, "flagged": any(c["severity"] for c in cells)})
    if limits.max_rows is not None:  # when rows get cut, keep the flagged ones
        rows.sort(key=lambda r: not r["flagged"])
    return {"columns": [clean_text(c, 60) for c in columns], **_capped(rows, limits)}


def _curve_refs(run: str, curves: dict, limits: Limits, overlay: dict[str, set]) -> list[dict]:
    refs = []
    for title, belongs in CURVE_GROUPS:
        series = [name for name in curves if belongs(name)]
        if series:
            ref = _plot_ref(_with_overlay(CurvePlot(run, series), overlay), limits)
            refs.append({**ref, "title": title})
    return refs


def _distribution_refs(run: str, distributions: dict, limits: Limits) -> list[dict]:
    def order(key: str) -> tuple:
        rank = next((i for i, source in enumerate(DISTRIBUTION_SOURCES) if source.name_in(key) is not None),
                    len(DISTRIBUTION_SOURCES))
        return (rank, key)

    return [_plot_ref(DistributionPlot(run, key), limits) for key in sorted(map(str, distributions), key=order)]


MAX_ACTIVATION_PLOTS = 8


def _activation_refs(run: str, series: dict, limits: Limits) -> list[dict]:
    """Activation statistics against step: probed checkpoints first (the post-hoc view), then logged."""
    keys = sorted(map(str, series), key=lambda k: (Key.PROBE.name_in(k) is None, k))[:MAX_ACTIVATION_PLOTS]
    refs = []
    for key in keys:
        layer = Key.PROBE.name_in(key)
        plot = ActivationSeriesPlot(run, key) if layer is None else ProbeSeriesPlot(run, layer)
        refs.append(_plot_ref(plot, limits))
    return refs


def _image_refs(run: str, images: dict, limits: Limits) -> list[dict]:
    refs = []
    for key, image in images.items():
        image = _dict(image)
        ref = _plot_ref(ImagePlot(run, str(key)), limits)
        title = clean_text(image.get("title") or key, 200)
        step = image.get("step")
        stepped = step is None or f"step {format_value(step)}" in title  # the title may say it already
        refs.append({**ref, "title": title if stepped else f"{title} (step {format_value(step)})"})
    return refs


# -------------------------------------------------------------------------------------- baseline


def baseline_overlay(baseline: Any) -> dict[str, set]:
    """candidate run -> names of the baseline curves stored for it (report["baseline"]["curves"])."""
    curves = _dict(_dict(baseline).get("curves"))
    return {str(run): {str(k) for k in _dict(series)} for run, series in curves.items() if _dict(series)}


def _baseline_view(baseline: Any, views: list[dict], runs: list[dict], limits: Limits) -> dict | None:
    if not isinstance(baseline, dict):
        return None
    resolved = [_finding_view(f, i, limits) for i, f in enumerate(sort_findings(_list(baseline.get("resolved"))))]
    for view in resolved:
        view["id"] = "resolved-" + view["id"]
    deltas = [{"run": clean_text(d.get("run", ""), 200), "metric": clean_text(d.get("metric", ""), 200),
               "baseline": format_value(d.get("baseline")), "candidate": format_value(d.get("candidate")),
               "better": clean_text(d.get("better") or "", 20), "change": _delta_direction(d)}
              for d in map(_dict, _list(baseline.get("deltas")))]
    deltas.sort(key=lambda d: CHANGE_ORDER.index(d["change"]))  # what got worse first, then better
    return {
        "path": clean_text(baseline.get("path") or "", 500),
        "new": [v for v in views if v["status"] == "new"],
        "persisting": [v for v in views if v["status"] != "new"],
        "new_count": format_value(baseline.get("new", sum(1 for v in views if v["status"] == "new"))),
        "persisting_count": format_value(baseline.get("persisting", sum(1 for v in views if v["status"] != "new"))),
        "resolved": resolved,
        "deltas": deltas,
        "worse_count": sum(d["change"] == "worse" for d in deltas),
        "better_count": sum(d["change"] == "better" for d in deltas),
        "layer_deltas": _layer_deltas_view(_list(baseline.get("layer_deltas")), limits),
        "curves": [{"run": run["name"], "plots": [r for r in run["curves"] if r["spec"].baseline]}
                   for run in runs if any(r["spec"].baseline for r in run["curves"])],
    }


def _layer_deltas_view(layer_deltas: list, limits: Limits) -> dict:
    """Per-layer fact changes, the largest relative change first (capped like other long tables)."""
    items = sorted(map(_dict, layer_deltas), key=_change_size, reverse=True)
    rows = [{"run": clean_text(d.get("run", ""), 200), "param": clean_text(d.get("param", ""), 200),
             "fact": clean_text(d.get("fact", ""), 60), "baseline": format_value(d.get("baseline")),
             "candidate": format_value(d.get("candidate")), "ratio": _ratio_text(d), "change": _delta_direction(d)}
            for d in items]
    return _capped(rows, limits)


def _pair(delta: dict) -> tuple[float, float] | None:
    """(baseline, candidate) of a delta when both are finite numbers, else None."""
    pair = (delta.get("baseline"), delta.get("candidate"))
    finite = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pair)
    return pair if finite else None


def _change_size(delta: dict) -> float:
    """|log10(candidate / baseline)|; infinite when exactly one side is 0, 0 when unknown or equal."""
    pair = _pair(delta)
    if pair is None or pair[0] == pair[1]:
        return 0.0
    base, cand = pair
    return abs(math.log10(cand / base)) if base and cand and cand / base > 0 else math.inf


def _ratio_text(delta: dict) -> str:
    """'×2.5' (candidate / baseline), or '—' when there is no finite ratio."""
    pair = _pair(delta)
    return f"×{pair[1] / pair[0]:.3g}" if pair is not None and pair[0] else "—"


def _delta_direction(delta: dict) -> str:
    """'better', 'worse', 'same' or '' (unknown): candidate vs baseline in the metric's good direction."""
    pair, better = _pair(delta), delta.get("better")
    if pair is None or better not in ("lower", "higher"):
        return ""
    base, cand = pair
    if cand == base:
        return "same"
    return "better" if (cand < base) == (better == "lower") else "worse"


# ------------------------------------------------------------------------------------- the model


def build_context(report: dict, limits: Limits = Limits()) -> dict[str, Any]:
    """Turn a report dict (report.json schema 1 + `details`) into the view model the templates show.

    Never raises on missing or oddly-typed pieces: whatever is absent is simply not shown.
    """
    report = encoded(report)
    all_sorted = sort_findings(_list(report.get("findings")))
    shown = all_sorted if limits.max_findings is None else all_sorted[: max(limits.max_findings, 0)]
    # counts and verdict are recomputed from the findings, so a hand-edited report.json cannot show a
    # banner that disagrees with its own findings (the JSON's summary is for machines)
    severities = [_dict(f).get("severity") for f in _list(report.get("findings"))]
    counts = {s: severities.count(s) for s in SEVERITY_ORDER}
    details_runs = _dict(_dict(report.get("details")).get("runs"))
    run_inputs = [_dict(r) for r in _list(_dict(report.get("inputs")).get("runs"))]
    known = {str(r.get("name", "")) for r in run_inputs}
    run_inputs += [{"name": name} for name in details_runs if name not in known]
    overlay = baseline_overlay(report.get("baseline"))
    views = [_finding_view(f, i, limits, overlay) for i, f in enumerate(shown)]
    # "judged" is recomputed from `evaluated` like the counts from the findings (a report without that
    # key was not written by a report_gen that knew about judging: its runs count as judged)
    judged = judged_runs(report.get("evaluated")) if "evaluated" in report else None
    runs = [_run_view(i, r, _dict(details_runs.get(str(r.get("name", "")))), all_sorted, limits, overlay,
                      judged=judged is None or str(r.get("name", "")) in judged)
            for i, r in enumerate(run_inputs)]
    verdict = verdict_for(counts, judged=all(run["judged"] for run in runs))
    baseline = _baseline_view(report.get("baseline"), views, runs, limits)
    generator = _dict(report.get("generator"))
    context = {
        "generator": clean_text(f"{generator.get('name', 'report_gen')} {generator.get('version', '')}".strip(), 100),
        "created": clean_text(report.get("created", ""), 40),
        "verdict": verdict,
        "verdict_label": VERDICT_LABELS[verdict],
        "unjudged": [run["name"] for run in runs if not run["judged"]][:50],
        "counts": [(s, counts.get(s, 0) if isinstance(counts.get(s, 0), int) else 0) for s in SEVERITY_ORDER],
        "runs": runs,
        "probe": format_value(_dict(report.get("inputs")).get("probe")) if _dict(report.get("inputs")).get("probe") else "",
        "trust_pickles": _dict(report.get("inputs")).get("trust_pickles") is True,
        "findings": views,
        "groups": _group_by_severity(views),
        "findings_total": len(all_sorted),
        "findings_cut": len(all_sorted) - len(views),
        "baseline": baseline,
        "evaluated": _capped([{"code": clean_text(e.get("code", ""), 20), "name": clean_text(e.get("name", ""), 80),
                               "category": clean_text(e.get("category", ""), 80),
                               "runs": ", ".join(clean_text(r, 200) for r in _list(e.get("runs")))}
                              for e in map(_dict, _list(report.get("evaluated")))], limits),
        "not_evaluated": _capped([{"code": clean_text(e.get("code", ""), 20), "name": clean_text(e.get("name", ""), 80),
                                   "reason": clean_text(e.get("reason", ""), limits.max_text),
                                   "enable": clean_text(e.get("enable", ""), 500)}
                                  for e in map(_dict, _list(report.get("not_evaluated")))], limits),
        "suppressed": _capped([_finding_view(f, i, limits) for i, f in
                               enumerate(sort_findings(_list(report.get("suppressed"))))], limits),
        "unused_suppressions": [clean_text(s, 100) for s in _list(report.get("unused_suppressions"))][:100],
    }
    for i, view in enumerate(context["suppressed"]["rows"]):
        view["id"] = f"suppressed-{i}"
    context["plot_order"] = _plot_order(context)
    context["sections"] = _sections(context)
    context["role_hint"] = ROLE_HINT
    context["html_sections"] = html_sections(context["sections"])
    return context


def _plot_order(context: dict) -> list[Plot]:
    """Every plot the report can show, most important first (the figure cap keeps a prefix)."""
    refs = [v["plot"] for v in context["findings"] if v["plot"]]
    for run in context["runs"]:
        refs += ([run["grad_depth"]] if run["grad_depth"] else []) + run["curves"] + run["distributions"] + \
            run["activations"] + run["images"]
    unique: dict[str, Plot] = {}
    for ref in refs:
        unique.setdefault(ref["key"], ref["spec"])
    return list(unique.values())


def html_sections(sections: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The HTML page's order: the verdict (banner), then the findings, then the baseline comparison, then
    per-run detail starting with the run cards ("Runs")."""
    first = [s for s in sections if s[0] == "findings"] + [s for s in sections if s[0] == "baseline"]
    runs = [("summary", "Runs") for s in sections if s[0] == "summary"]
    return first + runs + [s for s in sections if s not in first and s[0] != "summary"]


def _sections(context: dict) -> list[tuple[str, str]]:
    """Table of contents: (anchor, title) of the sections that have something to show."""
    runs = context["runs"]
    present = [
        ("summary", "Summary", True),
        ("baseline", "Compared with baseline", context["baseline"] is not None),
        ("findings", "Findings", True),
        ("layers", "Layer health", any(r["layers"]["rows"] for r in runs)),
        ("curves", "Training curves", any(r["curves"] for r in runs)),
        ("distributions", "Distributions", any(r["distributions"] for r in runs)),
        ("gradients", "Gradients by depth", any(r["grad_depth"] for r in runs)),
        ("activations", "Activations over training", any(r["activations"] for r in runs)),
        ("images", "Kernels and images", any(r["images"] for r in runs)),
        ("coverage", "Rule coverage", bool(context["evaluated"]["rows"] or context["not_evaluated"]["rows"])),
        ("suppressed", "Suppressed", bool(context["suppressed"]["rows"] or context["unused_suppressions"])),
        ("problems", "Input problems", any(r["problems"]["rows"] for r in runs)),
    ]
    return [(anchor, title) for anchor, title, shown in present if shown]
