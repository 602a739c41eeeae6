"""The report inline in a notebook (`Report._repr_html_`): an HTML fragment that survives sanitizers.

Notebook front ends sanitize untrusted output (JupyterLab, VS Code, GitHub's and nbviewer's renderers
drop `<script>`, `<style>`, `<iframe>`, event handlers and remote URLs), and a fragment shares the page
with the notebook, so report.html cannot simply be inlined: its stylesheet would restyle the notebook
or be stripped. This fragment uses only plain elements (div, span, table, details) with constant inline
`style` attributes, fetches nothing, runs nothing, and escapes every text it did not write. It shows the
verdict, the findings and the runs; plots stay in the full report (`Report.write()`, `Report.to_html()`).
Like every renderer, it reads only the view model (context.py) and decides no threshold.
"""
from __future__ import annotations

from html import escape

from report_gen.render.context import Limits, build_context

LIMITS = Limits(max_findings=50, max_rows=30, max_text=600)
_COLOURS = {"fail": "#b42318", "warn": "#b54708", "pass": "#067647", "unknown": "#475467",
            "error": "#b42318", "warning": "#b54708", "info": "#175cd3"}
_CELL = "padding:2px 8px;text-align:left;vertical-align:top;border-bottom:1px solid #d0d5dd"


def _text(value: object) -> str:
    return escape(str(value), quote=True)


def _badge(label: str, key: str) -> str:
    return (f'<span style="background:{_COLOURS.get(key, "#475467")};color:#fff;border-radius:3px;'
            f'padding:1px 6px;font-weight:600">{_text(label)}</span>')


def _table(header: list[str], rows: list[list[str]]) -> str:
    """rows hold cells that are already HTML (escaped text or a badge)."""
    head = "".join(f'<th style="{_CELL}">{_text(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(f'<td style="{_CELL}">{cell}</td>' for cell in row) + "</tr>" for row in rows)
    return f'<table style="border-collapse:collapse;margin:4px 0"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_notebook(report: dict) -> str:
    """The summary, findings and runs of `report` as one sanitizer-safe HTML fragment."""
    ctx = build_context(report, LIMITS)
    counts = ", ".join(f"{n} {s}" for s, n in ctx["counts"])
    runs = ctx["runs"]
    parts = [f'<div style="font-family:system-ui,sans-serif;font-size:13px;line-height:1.4">',
             f'<div style="margin-bottom:6px">{_badge(ctx["verdict_label"], ctx["verdict"])} '
             f'{_text(counts)} in {len(runs)} run{"s" if len(runs) != 1 else ""} '
             f'<span style="color:#667085">({_text(ctx["generator"])})</span></div>']
    if ctx["findings"]:
        rows = [[_badge(f["severity"], f["severity"]), _text(f["code"]), _text(f["run"]),
                 f'<code>{_text(f["subject"])}</code>',
                 _text(f["message"]) + (f'<div style="color:#667085">{_text(f["suggestion"])}</div>'
                                        if f["suggestion"] else "")]
                for f in ctx["findings"]]
        parts.append(_table(["severity", "code", "run", "subject", "finding"], rows))
        if ctx["findings_cut"]:
            parts.append(f'<div style="color:#667085">… and {ctx["findings_cut"]} more findings: see the full '
                         f'report (Report.write(out_dir))</div>')
    else:
        parts.append('<div>No findings.</div>')
    parts.append(_table(["run", "verdict", "steps", "event files", "checkpoints"],
                        [[_text(r["name"]), _badge(r["verdict"].upper(), r["verdict"]), _text(r["steps"]),
                          _text(r["event_files"]), _text(r["checkpoints"])] for r in runs]))
    not_evaluated = ctx["not_evaluated"]["rows"]
    if not_evaluated:
        items = "".join(f'<li><b>{_text(e["code"])}</b> {_text(e["name"])}: {_text(e["reason"])}</li>'
                        for e in not_evaluated)
        parts.append(f'<details><summary>{len(not_evaluated)} rule(s) not evaluated</summary>'
                     f'<ul style="margin:2px 0">{items}</ul></details>')
    parts.append('<div style="color:#667085">Plots and per-layer detail: <code>report.write(out_dir)</code> '
                 '(report.html) or <code>report.to_html()</code>.</div></div>')
    return "".join(parts)
