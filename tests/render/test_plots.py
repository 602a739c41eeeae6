"""Plot drawing: PNGs, figure cap, shared store, bad data."""
from __future__ import annotations

import base64
import struct

from report_gen.render.context import build_context, plot_key
from report_gen.render.plots import PAINTERS, PlotStore, decode_png
from report_gen.vocab import PLOT_KINDS, ActivationSeriesPlot, CurvePlot, KernelsPlot, Plot, parse_plot
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
