"""Evidence plots drawn from the numbers in a report's `details` (matplotlib, Agg, no pyplot).

One style for every figure, a colour-blind-safe palette (Okabe-Ito), small PNGs. A `PlotStore` draws
each plot key once and hands the same PNG bytes to the HTML and the Markdown renderer; it draws at
most `max_figures` figures, in the priority order the view model gives, reusing one Figure and Axes (`_Canvas`).
matplotlib is imported only when a figure is drawn (a report without plots never pays for it).
"""
from __future__ import annotations

import warnings
import io
import logging
import math
from functools import partial
from typing import Any, Callable, Iterable

import numpy as np

from report_gen.facts import curves
from report_gen.render.context import clean_text, plot_key
from report_gen.render.images import decode_png, encoded
from report_gen.vocab import (ActivationSeriesPlot, CurvePlot, DistributionPlot, GradDepthPlot, LayerSeriesPlot, Plot,
                              ProbeSeriesPlot, curve_label)

log = logging.getLogger("report_gen")
#: steps beyond int64 (a hand-made report.json, a damaged file) are not drawn: matplotlib cannot lay
#: out an axis that spans 1e308
MAX_ABS_STEP = float(2**63)

OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
STYLE = {  # plus "axes.prop_cycle": the Okabe-Ito colours (`_style`)
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "font.size": 8,
    "axes.titlesize": 9,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "figure.facecolor": "white",
}
FIGSIZE = (6.0, 2.6)
DPI = 100
MARGINS = {"left": 0.1, "right": 0.98, "top": 0.9, "bottom": 0.17}
DEFAULT_MAX_FIGURES = 40
TENSORBOARD_SMOOTHING = 0.6
BAND_PAIRS = (("0", "100", 0.15), ("7", "93", 0.25), ("16", "84", 0.35), ("31", "69", 0.5))


def _style() -> dict[str, Any]:
    from cycler import cycler

    return {**STYLE, "axes.prop_cycle": cycler(color=OKABE_ITO)}


def to_floats(values: Any) -> np.ndarray:
    """JSON numbers to float64; None and 'nan' become NaN, 'inf'/'-inf' become ±inf, junk becomes NaN."""
    if not isinstance(values, list):
        return np.asarray([], dtype=np.float64)
    if not any(isinstance(v, (bool, str)) for v in values):  # plain numbers and None: numpy converts them
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            arr = None
        if arr is not None and arr.ndim == 1:  # nested lists (a hand-made report.json) go item by item
            return arr
    out = []
    for v in values:
        try:
            out.append(float(v) if v is not None and not isinstance(v, bool) else math.nan)
        except (TypeError, ValueError, OverflowError):
            out.append(math.nan)
    return np.asarray(out, dtype=np.float64)


def ema_smooth(values: np.ndarray, weight: float = TENSORBOARD_SMOOTHING) -> np.ndarray:
    """TensorBoard's scalar smoothing (the same function the rules use); a constant series stays exact."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0 or np.all(values == values[0]):
        return values.copy()
    return curves.ema_smooth(values, weight)


class PlotStore:
    """Draws plots for one report on demand and remembers their PNG bytes by plot key."""

    def __init__(self, report: dict, max_figures: int = DEFAULT_MAX_FIGURES) -> None:
        report = encoded(report)
        runs = report.get("details", {}).get("runs", {}) if isinstance(report.get("details"), dict) else {}
        self._runs: dict = runs if isinstance(runs, dict) else {}
        baseline = report.get("baseline") if isinstance(report.get("baseline"), dict) else {}
        self._baseline_curves: dict = baseline.get("curves") if isinstance(baseline.get("curves"), dict) else {}
        self._max_figures = max_figures
        self._png: dict[str, bytes | None] = {}
        self._canvas: _Canvas | None = None
        self.figures_drawn = 0
        #: keys of plots the figure cap left out (not drawn because `max_figures` were drawn already)
        self.left_out: set[str] = set()
        self.max_figures = max_figures

    def prepare(self, plots: Iterable[Plot]) -> None:
        """Draw (or decode) every plot not seen yet, in order, until the figure cap is reached."""
        plots = list(plots)
        if not any(not p.is_image and plot_key(p) not in self._png for p in plots):
            for plot in plots:  # only logged images (or nothing new): no matplotlib
                if plot_key(plot) not in self._png:
                    self._png[plot_key(plot)] = self._logged_image(plot)
            return
        from matplotlib import rc_context

        with rc_context(_style()):
            for plot in plots:
                key = plot_key(plot)
                if key in self._png:
                    continue
                if plot.is_image:
                    self._png[key] = self._logged_image(plot)
                elif self.figures_drawn < self._max_figures:
                    self._png[key] = self._draw(plot)
                else:
                    self.left_out.add(key)

    def png(self, key: str) -> bytes | None:
        """PNG bytes of a prepared plot, or None (not prepared, over the cap, or nothing to draw)."""
        return self._png.get(key)

    # -------------------------------------------------------------------------------- drawing

    def _run(self, plot: Plot) -> dict:
        run = self._runs.get(plot.run)
        return run if isinstance(run, dict) else {}

    def _logged_image(self, plot: Any) -> bytes | None:
        images = self._run(plot).get("images")
        image = images.get(plot.image) if isinstance(images, dict) else None
        return decode_png(image.get("png_base64")) if isinstance(image, dict) else None

    def _draw(self, plot: Plot) -> bytes | None:
        painter: Callable[[Any, dict, Any], bool] | None = PAINTERS.get(type(plot))
        if painter is None:
            return None
        if isinstance(plot, CurvePlot) and plot.baseline:
            painter = partial(_paint_curves, baseline=self._baseline_curves.get(plot.run))
        if self._canvas is None:
            self._canvas = _Canvas()
        canvas = self._canvas
        try:  # the error boundary of one plot: drawing and laying out
            drawn = painter(canvas.axes(), self._run(plot), plot)
            if drawn:
                png = canvas.png()
        except Exception:  # noqa: BLE001 - malformed numbers in details: no plot rather than no report
            log.debug("plot %s not drawn", plot_key(plot)[:200], exc_info=True)
            self._canvas = None  # a figure that failed half-way is not reused
            return None
        finally:
            if type(plot) in LEAVES_STATE:
                canvas.reusable = False
        if not drawn:
            return None
        self.figures_drawn += 1
        return png


#: PNG zlib level: 1 encodes in half the time of PIL's default 6; with RGB instead of RGBA pixels (the
#: figure is opaque) the files stay about as small as matplotlib's RGBA savefig at level 6 (+1% for
#: the 11 figures of benchmarks/bench_events.py's training-loop file, -4% for the sample runs' 40)
PNG_COMPRESS_LEVEL = 1


class _Canvas:
    """One Figure and one Axes reused for every plot of a store.

    Making an Axes (figure.clear + add_subplot) costs as much as drawing it: it builds its spines, axis
    objects and, on the first draw, every tick (Line2D marks, grid line, Text labels). A reused Axes
    keeps those, so between plots only what a painter adds is taken away and what it may set is set
    back (`_reset`); the PNGs are identical to a fresh Axes' (tests/render/test_plots.py draws each
    plot alone and in a sequence and compares the bytes). A painter in LEAVES_STATE changes what
    `_reset` does not undo (fixed tick labels with their own font size, the figure's margins): the
    plot after it gets a fresh Axes."""

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=FIGSIZE, dpi=DPI)
        FigureCanvasAgg(self.figure)
        self._ax: Any = None
        self.reusable = False  # True when the Axes may be reused after a `_reset`

    def axes(self) -> Any:
        """The Axes for the next plot: the last one reset, or a new one."""
        if self._ax is not None and self.reusable:
            _reset(self._ax)
        else:
            self.figure.clear()
            self.figure.subplots_adjust(**MARGINS)  # fixed margins: tight_layout would double the drawing time
            self._ax = self.figure.add_subplot()
            self.reusable = True
        return self._ax

    def png(self) -> bytes:
        """The figure drawn by Agg, encoded by PIL: RGB when every pixel is opaque (always, with a white
        figure face), else RGBA. The same pixels as `savefig(format="png")`, encoded faster."""
        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # glyph and layout warnings would echo data to stderr
            self.figure.canvas.draw()
        rgba = np.asarray(self.figure.canvas.buffer_rgba())
        image = Image.frombuffer("RGBA", (rgba.shape[1], rgba.shape[0]), rgba, "raw", "RGBA", 0, 1)
        if image.getchannel("A").getextrema()[0] == 255:
            image = image.convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="png", compress_level=PNG_COMPRESS_LEVEL)
        return buffer.getvalue()


def _reset(ax: Any) -> None:
    """Take away what a painter added to `ax` and set back what it may have set (scales, labels,
    titles, limits, the colour cycle), so the next plot draws as on a new Axes."""
    from matplotlib.transforms import Bbox

    for artist in (*ax.lines, *ax.collections, *ax.patches, *ax.texts, *ax.images, *ax.artists):
        artist.remove()
    ax.containers.clear()
    if ax.legend_ is not None:
        ax.legend_.remove()
    ax.set_xscale("linear")
    ax.set_yscale("linear")
    ax.set_xlabel("")
    ax.set_ylabel("")
    for loc in ("left", "center", "right"):
        ax.set_title("", loc=loc)
    ax.set_prop_cycle(None)
    ax.dataLim.set(Bbox.null())
    ax.viewLim.set(Bbox.unit())  # what a new Axes starts from: a plot with no finite data keeps no old view
    ax.ignore_existing_data_limits = True
    ax.set_autoscale_on(True)
    ax.autoscale_view()


def to_steps(values: Any) -> np.ndarray:
    """`to_floats` for an x axis: steps that are not finite or beyond int64 become NaN (not drawn)."""
    x = to_floats(values)
    x[~(np.abs(x) < MAX_ABS_STEP)] = np.nan
    return x


def _xy(series: Any, values_key: str = "values") -> tuple[np.ndarray, np.ndarray]:
    series = series if isinstance(series, dict) else {}
    x, y = to_steps(series.get("steps")), to_floats(series.get(values_key))
    n = min(len(x), len(y))
    keep = np.isfinite(x[:n])
    return x[:n][keep], y[:n][keep]


def _label(text: str, limit: int = 60) -> str:
    """Data-provided text as a matplotlib label: single line, no control or bidi characters (a tag
    with ESC would reach matplotlib's glyph warnings on stderr raw), no mathtext ($), bounded length."""
    text = " ".join(clean_text(text, 4 * limit).split()).replace("$", r"\$")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tail(name: str, limit: int = 18) -> str:
    """The end of a long parameter name (where names differ): 'layer2.0.conv1.weight' -> '…0.conv1.weight'."""
    name = _label(name, 200)
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def _paint_curves(ax, run: dict, plot: CurvePlot, baseline: Any = None) -> bool:
    """The plot's series, raw (faint) and smoothed; a `baseline` run's same series dashed, smoothed."""
    curves = run.get("curves", {}) if isinstance(run.get("curves"), dict) else {}
    baseline = baseline if isinstance(baseline, dict) else {}
    drawn = False
    seen: list[np.ndarray] = []
    for index, name in enumerate(s for s in plot.series if s in curves or s in baseline):
        colour = OKABE_ITO[index % len(OKABE_ITO)]
        label = _label(curve_label(name))
        x, y = _xy(curves.get(name))
        if len(x):
            seen.append(y)
            ax.plot(x, y, color=colour, alpha=0.3, linewidth=0.8)
            ax.plot(x, ema_smooth(y), color=colour, linewidth=1.4, label=label)
            bad = ~np.isfinite(y)
            if bad.any():
                ax.plot(x[bad], np.full(int(bad.sum()), 0.96), "x", color=colour, markersize=5,
                        transform=ax.get_xaxis_transform(), label="non-finite")
            drawn = True
        bx, by = _xy(baseline.get(name))
        if len(bx):
            ax.plot(bx, ema_smooth(by), color=colour, linewidth=1.2, linestyle="--", label=f"{label} (baseline)")
            drawn = True
    if not drawn:
        return False
    if plot.mark_step is not None and abs(plot.mark_step) < MAX_ABS_STEP:
        ax.axvline(plot.mark_step, color="#555555", linestyle="--", linewidth=1)
    finite = np.concatenate(seen)[np.isfinite(np.concatenate(seen))] if seen else np.array([])
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 1e3:
        ax.set_yscale("log")  # a blow-up would flatten everything else to a line at 0
        ax.set_ylabel("log scale")
    ax.set_xlabel("step")
    ax.legend(loc="best")
    return True


def _paint_distribution(ax, run: dict, plot: DistributionPlot) -> bool:
    dists = run.get("distributions", {}) if isinstance(run.get("distributions"), dict) else {}
    dist = dists.get(plot.key)
    if not isinstance(dist, dict) or not isinstance(dist.get("percentiles"), dict):
        return False
    steps = to_steps(dist.get("steps"))
    pct = {k: to_floats(v)[: len(steps)] for k, v in dist["percentiles"].items()}
    if not len(steps) or "50" not in pct:
        return False
    colour = OKABE_ITO[0]
    for low, high, alpha in BAND_PAIRS:
        if low in pct and high in pct and len(pct[low]) == len(pct[high]) == len(steps):
            ax.fill_between(steps, pct[low], pct[high], color=colour, alpha=alpha, linewidth=0)
    ax.plot(steps[: len(pct["50"])], pct["50"], color=colour, linewidth=1.2, label="median")
    ax.set_xlabel("step")
    ax.set_title(_label(plot.key, 90), loc="left")
    return True


def _paint_grad_depth(ax, run: dict, plot: GradDepthPlot) -> bool:
    rows = [r for r in run.get("grad_depth", []) if isinstance(r, dict)]
    rms = to_floats([r.get("grad_rms") for r in rows])
    positive = np.where(np.isfinite(rms) & (rms > 0), rms, np.nan)
    if not np.isfinite(positive).any():
        return False
    depth = np.arange(len(rows))
    ax.bar(depth, positive, color=OKABE_ITO[0], width=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("grad RMS (log)")
    ax.set_xlabel("depth (input → output)")
    if len(rows) <= 24:
        ax.set_xticks(depth, [_tail(str(r.get("param", ""))) for r in rows], rotation=45, ha="right",
                      fontsize=6)
        ax.figure.subplots_adjust(bottom=0.36)
    return True


def _paint_activation_series(ax, run: dict, plot: ActivationSeriesPlot | ProbeSeriesPlot) -> bool:
    """mean ± std band and min/max lines of a layer's activations (logged, or probed per checkpoint)."""
    series = run.get("activation_series", {}) if isinstance(run.get("activation_series"), dict) else {}
    data = series.get(plot.series_key)
    if not isinstance(data, dict):
        return False
    x = to_steps(data.get("steps"))
    drawn = False
    for index, key in enumerate(("mean", "max", "min")):
        y = to_floats(data.get(key))[: len(x)]
        if len(y) and np.isfinite(y).any():
            ax.plot(x[: len(y)], y, color=OKABE_ITO[index], linewidth=1.2, marker="o" if len(y) < 12 else None,
                    markersize=3, label=key)
            drawn = True
    mean, std = to_floats(data.get("mean"))[: len(x)], to_floats(data.get("std"))[: len(x)]
    if drawn and len(mean) == len(std) == len(x) and len(x):
        ax.fill_between(x, mean - std, mean + std, color=OKABE_ITO[0], alpha=0.2, linewidth=0, label="mean ± std")
    if not drawn:
        return False
    ax.set_xlabel("step")
    ax.set_title(_label(plot.layer, 90), loc="left")
    ax.legend(loc="best")
    return True


MAX_CONTEXT_LAYERS = 12  # other parameters drawn faintly behind the subject of a layer-series plot


def _paint_layer_series(ax, run: dict, plot: LayerSeriesPlot) -> bool:
    """The subject parameter's fact over steps (markers: checkpoints can be far apart), with the other
    parameters' values faint behind it so a flat (frozen) line reads against the layers that moved."""
    series = run.get("layer_series", {}) if isinstance(run.get("layer_series"), dict) else {}
    x, y = _xy(series.get(plot.param), plot.fact.value)
    if not len(x):
        return False
    shown = [y]
    others = [name for name in series if name != plot.param][:MAX_CONTEXT_LAYERS]
    for i, name in enumerate(others):
        ox, oy = _xy(series.get(name), plot.fact.value)
        if len(ox):
            ax.plot(ox, oy, color="0.75", linewidth=0.8, marker=".", markersize=3,
                    label="other parameters" if i == 0 else None)
            shown.append(oy)
    ax.plot(x, y, color=OKABE_ITO[0], linewidth=1.5, marker="o", markersize=4, label=_label(plot.param, 60))
    ax.set_xlabel("step")
    ax.set_ylabel(_label(plot.fact.value).replace("_", " "))
    ax.set_title(f"{_label(plot.param, 90)}: {_label(plot.fact.value).replace('_', ' ')}", loc="left")
    values = np.concatenate(shown)
    finite = values[np.isfinite(values)]
    if len(finite) > 1 and np.all(finite > 0) and finite.max() > 10 * finite.min():
        ax.set_yscale("log")
    if len(x) == 1 or np.ptp(x) == 0:  # one checkpoint: give the point some room
        ax.set_xlim(x[0] - 1, x[0] + 1)
    ax.legend(loc="best")
    return True


# plot kind -> painter; image kinds (Plot.is_image) are decoded, not drawn
PAINTERS: dict[type[Plot], Callable[[Any, dict, Any], bool]] = {
    CurvePlot: _paint_curves, DistributionPlot: _paint_distribution, GradDepthPlot: _paint_grad_depth,
    LayerSeriesPlot: _paint_layer_series, ActivationSeriesPlot: _paint_activation_series,
    ProbeSeriesPlot: _paint_activation_series,
}
#: kinds whose painter changes what `_reset` does not set back (fixed tick labels, the figure margins)
LEAVES_STATE: frozenset[type[Plot]] = frozenset({GradDepthPlot})
