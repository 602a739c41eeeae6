"""Renderers: HTML, Markdown, JSON and a terminal summary, all fed by one view model (context.py).

Renderers read only the report dict (report.json schema 1 plus `details`), never the run, so
`report-gen render report.json` can re-render any report from its JSON alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection

from report_gen.core import REPORT_FORMATS, InputError
from report_gen.render.html import render_html
from report_gen.render.jsonout import write_json
from report_gen.render.markdown import render_markdown
from report_gen.render.plots import PlotStore
from report_gen.render.terminal import print_summary
from report_gen.reportfile import load_report

FORMATS = REPORT_FORMATS
IMAGE_DIR = "report_files"

__all__ = ["FORMATS", "load_report", "print_summary", "render", "render_html", "render_markdown", "write_json"]


def render(report: dict, out_dir: str | Path, formats: Collection[str] = FORMATS) -> dict[str, Path]:
    """Write the requested formats into out_dir and return {format: path}.

    html -> report.html (self-contained), md -> report.md + report_files/*.png, json -> report.json.
    Plots are drawn once and shared by HTML and Markdown.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise InputError(f"unknown format {', '.join(unknown)} (choose from {', '.join(FORMATS)})")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{out}: cannot create output directory ({error.strerror or error})") from None
    plots = PlotStore(report)
    written: dict[str, Path] = {}
    if "json" in formats:
        written["json"] = write_json(report, out / "report.json")
    if "html" in formats:
        written["html"] = _write(out / "report.html", render_html(report, plots=plots))
    if "md" in formats:
        written["md"] = _write(out / "report.md", render_markdown(report, out / IMAGE_DIR, IMAGE_DIR, plots=plots))
    return written


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
