"""Markdown report: GFM structure, image links, size limit, baseline order."""
from __future__ import annotations

from pathlib import Path

from markdown_it import MarkdownIt

from report_gen.render.markdown import MARKER, MAX_CHARS, render_markdown
from builders.sample_report import make_report_dict, rendered_sample


def _tables(text: str) -> list[list[int]]:
    """Cells per row for each table markdown-it finds (header row first)."""
    tables, row_cells = [], None
    for token in MarkdownIt("commonmark").enable("table").parse(text):
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            row_cells = 0
        elif token.type in ("th_open", "td_open"):
            row_cells += 1
        elif token.type == "tr_close":
            tables[-1].append(row_cells)
    return tables


def _image_sources(text: str) -> list[str]:
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    return [child.attrs["src"] for token in tokens if token.type == "inline"
            for child in token.children or [] if child.type == "image"]


def test_markdown_tables_parse_and_every_image_link_resolves():
    out = rendered_sample()
    text = (out / "report.md").read_text(encoding="utf-8")
    assert text.splitlines()[0] == MARKER
    tables = _tables(text)
    assert len(tables) >= 6  # summary, findings, 2 layer tables, coverage x2, suppressed, problems
    for rows in tables:
        assert len(rows) >= 2 and len(set(rows)) == 1, rows  # every row has the header's column count
    sources = _image_sources(text)
    assert len(sources) >= 10
    for source in sources:
        assert not source.startswith(("data:", "/", "http"))
        assert (out / source).read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in (out / "report_files").iterdir()) == sorted({Path(s).name for s in sources})


def test_summary_table_comes_first_with_counts_per_run():
    text = render_markdown(make_report_dict(n_findings=6), None)
    first_table = text[text.index("| run |"):].split("\n\n")[0].splitlines()
    assert first_table[2].startswith("| **all** | **FAIL** | 2 | 3 | 1 |")
    assert first_table[3].startswith("| healthy\\_cnn | FAIL | 2 | 0 | 1 |")
    assert first_table[4].startswith("| sick\\_cnn | WARN | 0 | 3 | 0 |")
    assert "](" not in text  # image_dir=None: no image links at all


def test_thousands_of_findings_stay_under_the_comment_limit_and_cut_least_severe_first():
    report = make_report_dict(n_findings=2000)
    text = render_markdown(report, None)
    assert len(text) < MAX_CHARS
    start = text.index("### Findings")
    table = text[start:text.index("<details>", start)]
    rows = [line for line in table.splitlines() if line.startswith("| 🔴") or line.startswith("| 🟠")
            or line.startswith("| 🔵")]
    errors = sum(1 for f in report["findings"] if f["severity"] == "error")
    assert 100 < len(rows) < 2000
    assert all(row.startswith("| 🔴") for row in rows[: min(errors, len(rows))])
    assert f"{2000 - len(rows)} less severe findings about the training" in text
    assert "**This comment was cut**" in text


def test_huge_layer_tables_are_capped_before_the_limit():
    report = make_report_dict(n_findings=3)
    for details in report["details"]["runs"].values():
        details["layers"] = [{"param": f"blocks.{i}.mlp.weight", "shape": [512, 512],
                              "facts": {"grad_rms": 1e-3, "weight_std": 0.02, "update_ratio": 1e-3}, "flags": {}}
                             for i in range(3000)]
        details["layers"][2500]["flags"] = {"grad_rms": "warning"}
    text = render_markdown(report, None)
    assert len(text) < MAX_CHARS
    assert "<code>blocks.2500.mlp.weight</code>" in text  # flagged rows are kept when rows are cut
    assert "more parameters not shown" in text
    assert "less severe findings cut" not in text  # the findings themselves all fit


def test_baseline_leads_with_what_got_worse_then_better_then_the_rest():
    text = render_markdown(make_report_dict(n_findings=9, baseline=True), None)
    worse, better = text.index("What got worse"), text.index("What got better")
    metrics, rest = text.index("#### Metrics"), text.index("### Persisting findings")
    assert worse < better < metrics < rest
    assert "❌ worse" in text[metrics:rest]


def test_empty_report_renders():
    text = render_markdown({"schema_version": 1}, None)
    assert text.startswith(MARKER) and "No findings" in text and "PASS" in text
