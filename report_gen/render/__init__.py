"""Renderers: HTML, Markdown, JSON and a terminal summary, all fed by one view model (context.py).

Renderers read only the report dict (report.json schema 1 plus `details`), never the run, so
`report-gen render report.json` can re-render any report from its JSON alone.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Collection

from report_gen.core import REPORT_FORMATS, InputError
from report_gen.render.context import clean_text
from report_gen.render.output import OutputFolder
from report_gen.render.html import render_html
from report_gen.render.jsonout import write_json
from report_gen.render.markdown import render_markdown
from report_gen.render.plots import PlotStore
from report_gen.render.terminal import print_summary
from report_gen.reportfile import load_report

FORMATS = REPORT_FORMATS
IMAGE_DIR = "report_files"
log = logging.getLogger("report_gen")

__all__ = ["FORMATS", "load_report", "print_summary", "render", "render_html", "render_markdown", "write_json"]


def render(report: dict, out_dir: str | Path, formats: Collection[str] = FORMATS) -> dict[str, Path]:
    """Write the requested formats into out_dir and return {format: path}.

    html -> report.html (self-contained), md -> report.md + report_files/*.png, json -> report.json.
    Plots are drawn once and shared by HTML and Markdown. Files are written without following a
    symlink planted in out_dir (`render.output`).

    Each format is rendered inside its own error boundary, plots included (the plot store is made
    by the first format that needs it, inside that format's boundary): if one fails (a bug, or data
    no renderer expected), the others are still written, then InputError names what failed, in one
    line. Outside a boundary there is only the output folder itself (OutputFolder: InputError).
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise InputError(f"unknown format {', '.join(unknown)} (choose from {', '.join(FORMATS)})")
    written: dict[str, Path] = {}
    failed: list[str] = []
    with OutputFolder(out_dir) as folder:
        out = folder.path
        store: list[PlotStore] = []

        def plots() -> PlotStore:  # shared by HTML and Markdown, made inside the first one's boundary
            if not store:
                store.append(PlotStore(report))
            return store[0]

        steps = {
            "json": lambda: write_json(report, out / "report.json", folder=folder),
            "html": lambda: folder.write_text("report.html", render_html(report, plots=plots())),
            "md": lambda: folder.write_text(
                "report.md", render_markdown(report, out / IMAGE_DIR, IMAGE_DIR, plots=plots())),
        }
        for fmt in ("json", "html", "md"):  # the contract first: it needs no template and no plot
            if fmt not in formats:
                continue
            try:
                written[fmt] = steps[fmt]()
            except InputError as error:
                failed.append(str(error))
            except Exception as error:  # noqa: BLE001 - the error boundary: keep the other formats
                log.debug("rendering %s failed", fmt, exc_info=True)
                failed.append(f"{out}: could not render {fmt} ({type(error).__name__}: "
                              f"{clean_text(error, 160)})")
    if failed:
        done = f"; written: {', '.join(str(p) for p in written.values())}" if written else ""
        raise InputError(failed[0] + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else "") + done)
    return written
