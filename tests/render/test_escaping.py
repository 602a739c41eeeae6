"""Hostile names and texts render inertly in HTML and Markdown."""
from __future__ import annotations

import re
from html.parser import HTMLParser

from markdown_it import MarkdownIt

from report_gen.render.markdown import escape_markdown, render_markdown
from builders.sample_report import make_report_dict, rendered_sample
from test_markdown import _tables


class _Elements(HTMLParser):
    """Collects (tag, attrs) of every start tag and all text."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Elements:
    parser = _Elements()
    parser.feed(html)
    return parser


def _assert_inert(parser: _Elements, allowed_img_src: str) -> None:
    tags = [tag for tag, _ in parser.elements]
    assert "script" not in tags
    assert not [attrs for _, attrs in parser.elements if any(name.startswith("on") for name in attrs)]
    assert not [attrs for tag, attrs in parser.elements if tag == "a" and "http://x" in attrs.get("href", "")]
    for tag, attrs in parser.elements:
        if tag == "img":
            assert attrs["src"].startswith(allowed_img_src), attrs["src"][:80]


def test_hostile_text_is_inert_in_html():
    html = (rendered_sample(n_findings=6, hostile=True) / "report.html").read_text(encoding="utf-8")
    parser = _parse(html)
    _assert_inert(parser, "data:image/png;base64,")
    text = "".join(parser.text)
    assert "<script>alert(1)</script>" in text  # shown to the reader as text, not run
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_hostile_text_is_inert_in_markdown():
    md = (rendered_sample(n_findings=6, hostile=True) / "report.md").read_text(encoding="utf-8")
    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    parser = _parse(rendered)
    _assert_inert(parser, "report_files/")
    ours = {"details", "summary", "code", "sub", "p", "h2", "h3", "h4", "table", "thead", "tbody", "tr", "th", "td",
            "strong", "em", "img", "blockquote", "ul", "li"}
    assert {tag for tag, _ in parser.elements} <= ours
    text = "".join(parser.text)
    assert "<script>alert(1)</script>" in text
    assert not re.search(r"@\w", text)  # no @mention GitHub could resolve
    assert "@\u200boctocat" in text
    assert "`tick`" in text and "*b*" in text  # markup characters shown literally


def test_hostile_table_cells_keep_their_columns():
    md = render_markdown(make_report_dict(n_findings=6, hostile=True, baseline=True), None)
    tables = _tables(md)
    assert len(tables) >= 8
    for rows in tables:
        assert len(set(rows)) == 1, rows


def test_escape_markdown_rules():
    assert escape_markdown("a|b") == "a\\|b"
    assert escape_markdown("x\ny\r") == "x y "
    assert escape_markdown("@team") == "@\u200bteam"
    assert escape_markdown("<b>&") == "&lt;b&gt;&amp;"
    assert escape_markdown("`*_[]~#\\") == "\\`\\*\\_\\[\\]\\~\\#\u200b\\\\"
