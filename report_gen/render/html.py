"""The self-contained HTML report: one file, inline CSS, images as data: URIs, nothing fetched."""
from __future__ import annotations

import base64
import struct
from functools import lru_cache

import jinja2

from report_gen.render.context import build_context, template_environment
from report_gen.render.plots import PlotStore


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return template_environment("html", autoescape=True)


class _Figures:
    """Embeds each plot once as a data: URI; later uses of the same plot link back to the first one."""

    def __init__(self, plots: PlotStore) -> None:
        self._plots = plots
        self._ids: dict[str, str] = {}

    def __call__(self, key: str) -> dict | None:
        png = self._plots.png(key)
        if png is None:
            return None
        if key in self._ids:
            return {"id": self._ids[key], "repeat": True}
        self._ids[key] = f"plot-{len(self._ids)}"
        return {"id": self._ids[key], "repeat": False, "width": _display_width(png),
                "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}

    def missing(self, refs: list) -> int:
        """How many of the plots `refs` have no figure (left out by the cap, or nothing to draw)."""
        return sum(1 for ref in refs if ref and self._plots.png(ref["key"]) is None)

    def note(self, refs: list) -> str:
        """Why plots of `refs` are not shown: '' when every one is."""
        refs = [ref for ref in refs if ref]
        capped = sum(1 for ref in refs if ref["key"] in self._plots.left_out)
        empty = self.missing(refs) - capped
        parts = []
        if capped:
            parts.append(f"{capped} of {len(refs)} plot{'s' if len(refs) != 1 else ''} left out: this report draws at "
                         f"most {self._plots.max_figures} figures, the most important first (report.json keeps "
                         "the data; diagnose fewer runs at once to see them)")
        if empty:
            parts.append(f"{empty} plot{'s' if empty != 1 else ''} not drawn: no finite values to draw")
        return "; ".join(parts) + "." if parts else ""


MIN_IMAGE_SIDE = 96  # CSS px: a logged image smaller than this (a 3x3 kernel grid) is scaled up, pixelated
MAX_IMAGE_SIDE = 400  # ... but its longer side stays under this (a one-column grid is tall)


def _display_width(png: bytes) -> int | None:
    """Width in CSS px to show a small PNG at, so its shorter side is at least MIN_IMAGE_SIDE (an 8x1x3x3
    kernel grid is 42x7 pixels: shown as logged it is a thin dark strip); None for normal-sized images."""
    if len(png) < 24 or png[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", png[16:24])
    if not width or not height or min(width, height) >= MIN_IMAGE_SIDE:
        return None
    scale = max(1, min(MIN_IMAGE_SIDE // min(width, height), MAX_IMAGE_SIDE // max(width, height)))
    return min(width * scale, MAX_IMAGE_SIDE)


def render_html(report: dict, *, plots: PlotStore | None = None) -> str:
    """The report as one HTML document; `plots` lets HTML and Markdown share the same drawn figures."""
    context = build_context(report)
    if plots is None:
        plots = PlotStore(report)
    plots.prepare(context["plot_order"])
    return _environment().get_template("report.html.j2").render(ctx=context, plot_src=_Figures(plots))
