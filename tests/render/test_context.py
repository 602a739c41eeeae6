"""The view model: rounding, sorting, grouping, truncation, tolerance of missing pieces."""
from __future__ import annotations

import math

import numpy as np

from report_gen.render.context import Limits, build_context, clean_text, format_duration, format_value, sort_findings
from report_gen.render.html import render_html
from report_gen.render.plots import ema_smooth, to_floats
from builders.sample_report import make_report_dict


def test_format_value_rounds_for_people():
    assert format_value(0.123456) == "0.1235"
    assert format_value(1.2e-7) == "1.2e-07"
    assert format_value(51234) == "51,234"
    assert format_value(12) == "12"
    assert format_value(float("nan")) == "nan" and format_value("inf") == "inf"
    assert format_value(float("-inf")) == "-inf"
    assert format_value(True) == "true" and format_value(None) == "—"
    assert format_value(list(range(10))) == "[0, 1, 2, 3, 4, 5, 6, 7, …]"
    assert format_duration(93.2) == "1 min 33 s" and format_duration(7322) == "2 h 2 min"
    assert format_duration("nan") == "—"


def test_clean_text_strips_control_characters_and_truncates():
    assert clean_text("a\x1b[31mb\x07") == "a [31mb "
    assert clean_text("x" * 50, 10) == "x" * 9 + "…"


def test_tensorboard_smoothing_matches_hand_computation():
    values = np.array([1.0, 3.0, math.nan, 2.0])
    w = 0.6
    e1 = (1 - w) * 1.0
    e2 = e1 * w + (1 - w) * 3.0
    e3 = e2 * w + (1 - w) * 2.0
    expected = [e1 / (1 - w), e2 / (1 - w**2), math.nan, e3 / (1 - w**3)]
    np.testing.assert_allclose(ema_smooth(values), expected)
    np.testing.assert_array_equal(ema_smooth(np.array([5.0, 5.0, 5.0])), [5.0, 5.0, 5.0])
    assert ema_smooth(np.array([])).size == 0


def test_to_floats_reads_json_non_finite_forms():
    out = to_floats([1, None, "nan", "inf", "-inf", "junk", True])
    assert out[0] == 1 and math.isnan(out[1]) and math.isnan(out[2]) and out[3] == math.inf
    assert out[4] == -math.inf and math.isnan(out[5]) and math.isnan(out[6])
    assert to_floats("not a list").size == 0


def test_findings_sorted_most_severe_first_and_grouped():
    findings = [{"severity": "info", "code": "A1"}, {"severity": "error", "code": "Z9"},
                {"severity": "warning", "code": "B2"}, {"severity": "error", "code": "C3"}, "junk"]
    assert [f["code"] for f in sort_findings(findings)] == ["C3", "Z9", "B2", "A1"]
    context = build_context({"findings": findings})
    assert [(g["severity"], len(g["findings"])) for g in context["groups"]] == [("error", 2), ("warning", 1),
                                                                                  ("info", 1)]


def test_limits_cut_findings_and_rows_and_say_how_many():
    report = make_report_dict(n_findings=12)
    context = build_context(report, Limits(max_findings=5, max_rows=2))
    assert len(context["findings"]) == 5 and context["findings_cut"] == 7 and context["findings_total"] == 12
    layers = context["runs"][0]["layers"]
    assert len(layers["rows"]) == 2 and layers["cut"] == 2
    assert layers["rows"][0]["flagged"] and layers["rows"][1]["flagged"]  # flagged rows kept first


def test_layer_cells_carry_the_flag_severity():
    layers = build_context(make_report_dict())["runs"][0]["layers"]
    assert layers["columns"][0] == "dead_kernel_ratio"
    first = layers["rows"][0]
    assert first["shape"] == "16×3×3×3"
    assert first["cells"][0] == {"value": "0.19", "severity": "error"}
    assert first["cells"][1]["severity"] is None


def test_plot_order_puts_finding_plots_first_without_duplicates():
    context = build_context(make_report_dict(n_findings=6))
    order = context["plot_order"]
    finding_kinds = [f["plot"]["spec"].kind for f in context["findings"] if f["plot"]]
    assert [s.kind for s in order[: len(finding_kinds)]] == finding_kinds
    assert len(set(order)) == len(order)


def test_baseline_deltas_and_partition():
    context = build_context(make_report_dict(n_findings=6, baseline=True))
    baseline = context["baseline"]
    assert [f["status"] for f in baseline["new"]] == ["new"] * 2
    assert len(baseline["persisting"]) == 4 and len(baseline["resolved"]) == 1
    assert baseline["deltas"][0]["change"] == "worse"


def test_missing_and_malformed_pieces_do_not_crash():
    broken = {"schema_version": 1, "summary": "junk", "findings": [{"severity": "bogus", "evidence": [1, 2]}],
              "inputs": {"runs": [{"name": "r", "problems": ["junk"]}]},
              "details": {"runs": {"r": {"curves": {"train_loss": {"steps": "x", "values": None}},
                                         "distributions": {"weight:w": {"percentiles": "x"}},
                                         "grad_depth": [{"grad_rms": "nan"}], "layers": ["junk"],
                                         "images": {"kernels:w": {"png_base64": "!!notbase64"}}},
                                   "only_in_details": {}}}}
    context = build_context(broken)
    assert [r["name"] for r in context["runs"]] == ["r", "only_in_details"]
    assert context["findings"][0]["severity"] == "info"
    html = render_html(broken)
    assert "<img" not in html  # nothing drawable, so no broken images either
    assert "only_in_details" in html


def test_html_order_and_run_cards_in_user_words():
    """Findings about the training come before input notices; the HTML puts findings before the run cards,
    and the cards list what was logged in words, not signal names (loss_any, checkpoint_series)."""
    from report_gen.render.context import build_context

    findings = [{"code": "I101", "severity": "error", "category": "input-integrity", "run": "a", "message": "bad file"},
                {"code": "L101", "severity": "warning", "category": "nonfinite-loss", "run": "a", "message": "nan"}]
    report = {"schema_version": 1, "findings": findings, "inputs": {"runs": [{"name": "a"}]},
              "details": {"runs": {"a": {"summary": {"signals": ["checkpoint_series", "loss_any", "train_loss", "lr"]}}}}}
    ctx = build_context(report)
    assert [f["code"] for f in ctx["findings"]] == ["L101", "I101"]
    assert [g["label"] for g in ctx["groups"]][-1] == "Input files"
    anchors = [a for a, _ in ctx["html_sections"]]
    assert anchors.index("findings") < anchors.index("summary")
    assert dict(ctx["html_sections"])["summary"] == "Runs"
    assert ctx["runs"][0]["logged"] == ["training loss", "learning rate"]


def test_small_logged_images_get_a_display_width():
    from report_gen.render.html import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE, _display_width
    from builders.sample_report import tiny_png

    assert _display_width(tiny_png(20, 10)) == 20 * (MIN_IMAGE_SIDE // 10)  # short side scaled up to 96 px
    assert _display_width(tiny_png(42, 7)) == 42 * (MAX_IMAGE_SIDE // 42)  # an 8x1x3x3 kernel grid: long side
    assert _display_width(tiny_png(7, 42)) == 7 * (MAX_IMAGE_SIDE // 42)  # stays under 400 px either way
    assert _display_width(tiny_png(200, 120)) is None
    assert _display_width(b"not a png") is None


def test_to_floats_reads_nested_lists_item_by_item_as_junk():
    """A hand-made report.json with [[1], [2]] where numbers belong: NaN per item (as before numpy
    converted plain lists), never a 2-D array a painter would draw as a series."""
    assert np.isnan(to_floats([[1], [2]])).all() and to_floats([[1], [2]]).shape == (2,)
    assert to_floats([1, None, 2.5]).tolist()[::2] == [1.0, 2.5]
