"""The self-contained HTML report: one file, inline CSS, images as data: URIs, nothing fetched."""
from __future__ import annotations

import base64
from functools import lru_cache

import jinja2

from report_gen.render.context import build_context, template_root
from report_gen.render.plots import PlotStore


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_root() / "html")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


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
        return {"id": self._ids[key], "repeat": False,
                "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}


def render_html(report: dict, *, plots: PlotStore | None = None) -> str:
    """The report as one HTML document; `plots` lets HTML and Markdown share the same drawn figures."""
    context = build_context(report)
    if plots is None:
        plots = PlotStore(report)
    plots.prepare(context["plot_order"])
    return _environment().get_template("report.html.j2").render(ctx=context, plot_src=_Figures(plots))
