"""Plot drawing: PNGs, figure cap, shared store, bad data."""
from __future__ import annotations

import base64
import os
import struct
from pathlib import Path

from report_gen.render.context import build_context, plot_key
from report_gen.render.plots import PAINTERS, PlotStore, decode_png
from report_gen.vocab import PLOT_KINDS, ActivationSeriesPlot, CurvePlot, KernelsPlot, Plot, curve_label, parse_plot
from builders.sample_report import make_report_dict, tiny_png


def _size(png: bytes) -> tuple[int, int]:
    return struct.unpack(">II", png[16:24])


def test_plots_are_small_pngs_drawn_once_per_key():
    report = make_report_dict(n_findings=6)
    order = build_context(report)["plot_order"]
    store = PlotStore(report)
    store.prepare(order)
    drawn = store.figures_drawn
    store.prepare(order)  # a second renderer asking again draws nothing new
    assert store.figures_drawn == drawn
    curve = plot_key(CurvePlot("healthy_cnn", ["train_loss", "val_loss"]))
    png = store.png(curve)
    assert png.startswith(b"\x89PNG") and _size(png) == (600, 260)


def test_figure_cap_keeps_the_most_important_plots():
    report = make_report_dict(n_findings=6)
    order = build_context(report)["plot_order"]
    store = PlotStore(report, max_figures=2)
    store.prepare(order)
    assert store.figures_drawn == 2
    drawn = [s for s in order if store.png(plot_key(s)) and not s.is_image]
    assert drawn == [s for s in order if not s.is_image][:2]
    kernels = KernelsPlot("healthy_cnn", "kernels:conv1.weight")
    assert store.png(plot_key(kernels)) == tiny_png(64, 64, 1)  # logged images are not figures: never capped


def test_bad_data_gives_no_plot_instead_of_an_error():
    report = {"details": {"runs": {"r": {"curves": {"a": {"steps": [1, 2], "values": ["x", "y"]}},
                                         "grad_depth": [{"grad_rms": 0}, {"grad_rms": -1}],
                                         "distributions": {"w": {"steps": [1], "percentiles": {"0": [1]}}}}}}}
    specs = [parse_plot(s) for s in ({"kind": "grad_depth", "run": "r"}, {"kind": "distribution", "run": "r", "key": "w"},
                                     {"kind": "curve", "run": "missing", "series": ["a"]})]
    store = PlotStore(report)
    store.prepare(specs)
    assert [store.png(plot_key(s)) for s in specs] == [None] * 3
    assert store.figures_drawn == 0
    assert parse_plot({"kind": "unknown", "run": "r"}) is None  # an unknown kind is no plot at all
    assert parse_plot({"kind": "layer_series", "run": "r", "param": "p", "fact": "nonsense"}) is None


def test_decode_png_accepts_only_base64_png():
    assert decode_png(base64.b64encode(tiny_png()).decode()) == tiny_png()
    assert decode_png(base64.b64encode(b"GIF89a....").decode()) is None
    assert decode_png("not base64!") is None and decode_png(None) is None


def test_every_plot_kind_can_be_shown():
    """A plot a rule or a section emits must reach the page: a painter draws it, or it is a stored image.

    Hits only accept vocab.Plot instances (a dict is a TypeError), so the kinds below are all there are."""
    import pytest

    from report_gen.rules.base import Hit

    kinds = set(PLOT_KINDS.values())
    assert len(kinds) >= 8
    assert all(issubclass(k, Plot) for k in kinds)
    assert {k for k in kinds if not k.is_image} == set(PAINTERS)
    with pytest.raises(TypeError):
        Hit("x", "m", plot={"kind": "curve", "run": "r", "series": ["train_loss"]})


def test_activation_series_painter_draws_logged_stats():
    report = {"details": {"runs": {"r": {"activation_series": {"relu1": {
        "steps": [0, 1, 2, 3], "mean": [0.1, 0.2, 0.3, 0.4], "std": [0.1] * 4, "max": [1, 2, 3, 4], "min": [0] * 4}}}}}}
    store = PlotStore(report)
    spec = ActivationSeriesPlot("r", "relu1")
    store.prepare([spec])
    assert store.png(plot_key(spec)).startswith(b"\x89PNG")


def _drawable(report: dict) -> list:
    return [p for p in build_context(report)["plot_order"] if not p.is_image]


def _with_activation_series(report: dict) -> dict:
    run = next(iter(report["details"]["runs"].values()))
    run["activation_series"] = {"relu1": {"steps": [0, 10, 20, 30], "mean": [0.1, 0.2, 0.3, 0.4], "std": [0.1] * 4,
                                          "max": [1, 2, 3, 4], "min": [0] * 4}}
    return report


def test_a_reused_axes_draws_what_a_fresh_one_draws():
    """The store reuses one Axes: whatever was drawn before (a log scale, fixed tick labels, a title,
    a legend, other limits) must leave no trace, so each PNG equals the one drawn alone, in any order."""
    import random

    report = _with_activation_series(make_report_dict(n_findings=12, baseline=True))
    run = next(iter(report["details"]["runs"]))
    plots = _drawable(report) + [ActivationSeriesPlot(run, "relu1")]
    assert {type(p).__name__ for p in plots} >= {"CurvePlot", "DistributionPlot", "GradDepthPlot",
                                                  "LayerSeriesPlot", "ActivationSeriesPlot"}
    alone = {}
    for plot in plots:
        store = PlotStore(report)
        store.prepare([plot])
        alone[plot_key(plot)] = store.png(plot_key(plot))
    assert all(alone.values())
    for seed in range(3):
        order = list(plots)
        random.Random(seed).shuffle(order)
        store = PlotStore(report)
        store.prepare(order)
        assert store.figures_drawn == len(alone)  # each key once
        assert [store.png(plot_key(p)) == alone[plot_key(p)] for p in order] == [True] * len(order)


def test_a_reused_axes_holds_only_the_last_plots_artists():
    report = make_report_dict(n_findings=12, baseline=True)
    plots = _drawable(report)
    first, last = plots[0], CurvePlot("healthy_cnn", ["train_loss"])
    store = PlotStore(report)
    store.prepare([*plots, last])
    ax = store._canvas.figure.axes
    assert len(ax) == 1
    ax = ax[0]
    curve = report["details"]["runs"]["healthy_cnn"]["curves"]["train_loss"]
    assert len(ax.lines) == 2 and not ax.collections and not ax.patches  # raw + smoothed, nothing older
    assert list(ax.lines[0].get_xdata()) == curve["steps"] and list(ax.lines[0].get_ydata()) == curve["values"]
    assert ax.get_xlabel() == "step" and ax.get_yscale() == "linear" and ax.get_title(loc="left") == ""
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [curve_label("train_loss")]
    assert first != last


def test_pngs_have_the_pixels_matplotlib_savefig_gives():
    """Figures are encoded from Agg's buffer (RGB, a faster zlib level), not by savefig: same pixels."""
    import io

    import numpy as np
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    from report_gen.render import plots as P

    report = _with_activation_series(make_report_dict(n_findings=12))
    run = next(iter(report["details"]["runs"]))
    store = PlotStore(report)
    for plot in [*_drawable(report), ActivationSeriesPlot(run, "relu1")]:
        store.prepare([plot])
        ours = Image.open(io.BytesIO(store.png(plot_key(plot))))
        assert ours.mode == "RGB" and ours.size == (600, 260)
        with rc_context(P._style()):
            fig = Figure(figsize=P.FIGSIZE, dpi=P.DPI)
            FigureCanvasAgg(fig)
            fig.subplots_adjust(**P.MARGINS)
            assert P.PAINTERS[type(plot)](fig.add_subplot(), report["details"]["runs"][plot.run], plot)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=P.DPI)
        reference = np.asarray(Image.open(buffer).convert("RGB"))
        assert np.array_equal(np.asarray(ours), reference), plot_key(plot)


def test_a_report_without_figures_never_imports_matplotlib(tmp_path):
    """Logged images are decoded, not drawn: rendering them (or no plot at all) loads no matplotlib."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import sys
        from builders.sample_report import make_report_dict
        from report_gen.render import render
        report = make_report_dict(n_findings=1)  # dead kernels: a logged image
        for run in report["details"]["runs"].values():  # keep only the logged images
            for key in ("curves", "distributions", "grad_depth", "layer_series", "activation_series"):
                run.pop(key, None)
        paths = render(report, {str(tmp_path)!r})
        print("matplotlib" in sys.modules, sorted(paths))
    """)
    tests = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])})
    assert out.stdout.split()[0] == "False", out.stdout + out.stderr
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64,") >= 1  # the images are there


def _pngs(report: dict, plots: list, **store) -> tuple[dict, PlotStore]:
    s = PlotStore(report, **store)
    s.prepare(plots)
    return {plot_key(p): s.png(plot_key(p)) for p in plots}, s


def test_what_one_painter_sets_never_reaches_the_next_figure():
    """Every ordered pair of the painters' special cases (a one-checkpoint layer series sets its x
    limits, a blow-up curve a log scale, the gradient depth fixed tick labels and margins): the
    second figure is the bytes it has when drawn alone."""
    import itertools

    runs = {"r": {"curves": {"a": {"steps": [0, 5, 10], "values": [1, 2, 3]},
                             "b": {"steps": [0, 5, 10], "values": [1e-5, 1, 100]},
                             "nan": {"steps": [0, 5, 10], "values": [None, None, None]}},
                  "layer_series": {"p": {"steps": [7], "weight_norm": [2.0]}, "q": {"steps": [7], "weight_norm": [3.0]}},
                  "grad_depth": [{"param": "a.weight", "grad_rms": 1e-3}, {"param": "b.weight", "grad_rms": 1e-1}]}}
    report = {"details": {"runs": runs}}
    specs = [parse_plot(s) for s in (
        {"kind": "layer_series", "run": "r", "param": "p", "fact": "weight_norm"},
        {"kind": "curve", "run": "r", "series": ["b"]}, {"kind": "grad_depth", "run": "r"},
        {"kind": "curve", "run": "r", "series": ["a"], "mark_step": 5},
        {"kind": "curve", "run": "r", "series": ["nan"]})]  # no finite value: no data limits of its own
    alone = {}
    for spec in specs:  # each in a store of its own: drawn on a new Axes
        alone.update(_pngs(report, [spec])[0])
    assert len(alone) == len(specs) and all(alone.values())
    for first, second in itertools.permutations(specs, 2):
        pair, _ = _pngs(report, [first, second])
        assert pair[plot_key(second)] == alone[plot_key(second)], (first, second)


def test_a_painter_that_raises_costs_its_figure_and_leaves_the_next_ones_as_drawn_alone(monkeypatch):
    from report_gen.render import plots as P

    report = make_report_dict(n_findings=12)
    plots = _drawable(report)
    alone = {}
    for plot in plots:
        alone.update(_pngs(report, [plot])[0])

    def broken(ax, run, plot):
        ax.plot([0, 1], [5, 6])  # half-drawn, then a failure
        raise RuntimeError("matplotlib internals")

    monkeypatch.setitem(P.PAINTERS, CurvePlot, broken)
    pngs, store = _pngs(report, plots)
    curves = {plot_key(p) for p in plots if isinstance(p, CurvePlot)}
    assert curves and all(pngs[k] is None for k in curves)
    others = {k: v for k, v in pngs.items() if k not in curves}
    assert others and others == {k: alone[k] for k in others}
    assert store.figures_drawn == len(others)
