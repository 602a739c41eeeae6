"""The run card's "What was read" (issue 12): every series read with its source, points and role in user
words, every series ignored with the reason, numerous histograms in one row, the same in HTML and Markdown."""
from __future__ import annotations

from report_gen.render.context import ROLE_HINT, build_context
from report_gen.render.markdown import render_markdown
from builders.sample_report import make_report_dict, rendered_sample


def test_rows_in_user_words_with_histogram_families_grouped():
    run = build_context(make_report_dict())["runs"][0]
    rows = [(r["tag"], r["what"], r["role"], r["note"]) for r in run["read"]["rows"]]
    assert rows[0] == ("train/loss", "TensorBoard, 600 points", "training loss", "")
    assert rows[1] == ("custom/metric", "TensorBoard, 60 points", "another loss (checked for NaN/Inf)",
                       "mapped by the configuration (custom/metric)")
    # four weight histograms (more than three of one role and source): one row
    assert rows[2] == ("weight_hist/conv1.weight … weight_hist/fc.weight", "4 histograms, TensorBoard, 30 steps each",
                       "weight histogram", "")
    assert [(r["tag"], r["note"]) for r in run["ignored"]["rows"]] == [("custom/metric/ignored", "no rule reads it")]
    assert run["weights_at"] == "key model_state"


def test_old_reports_without_the_keys_render_without_the_part():
    report = make_report_dict()
    for r in report["inputs"]["runs"]:
        for key in ("series", "ignored", "weights_at"):
            r.pop(key)
    run = build_context(report)["runs"][0]
    assert run["read"]["rows"] == [] and run["ignored"]["rows"] == [] and run["weights_at"] == ""
    assert "What was read" not in render_markdown(report, None)


def test_markdown_and_html_show_the_same_rows():
    md = render_markdown(make_report_dict(), None)
    assert "<summary>What was read in healthy\\_cnn: 3 series read, 1 ignored</summary>" in md
    assert "- <code>train/loss</code> (TensorBoard, 600 points) → training loss\n" in md
    assert "- <code>custom/metric/ignored</code> (TensorBoard, 3 points): no rule reads it\n" in md
    assert "Weights found at: key model\\_state" in md
    html = (rendered_sample(n_findings=2) / "report.html").read_text(encoding="utf-8")
    assert "<li><code>train/loss</code> (TensorBoard, 600 points) → training loss</li>" in html
    assert "What was read: 3 series read, 1 ignored" in html
    assert ROLE_HINT.split(":")[0] in html
