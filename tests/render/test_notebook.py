"""The notebook view (Report._repr_html_): a fragment a sanitizer keeps whole, with every text escaped."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import report_gen
from report_gen.render.notebook import render_notebook

SAMPLES = Path(__file__).resolve().parents[2] / "sample_runs"


class _Audit(HTMLParser):
    """Collects what a notebook sanitizer would strip or what could run code or fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.styles: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            self.attributes.add(name)
            if name == "style":
                self.styles.add(value)

    def handle_data(self, data):
        self.text.append(data)


def test_notebook_html_is_inline_safe_and_escaped():
    report = report_gen.diagnose(SAMPLES / "dead_relu").data
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)><style>body{display:none}</style>"
    report["findings"][0]["message"] = "dead " + hostile
    report["findings"][0]["subject"] = '"><iframe src="https://example.com">'
    report["inputs"]["runs"][0]["name"] = "run <b onmouseover=alert(3)>"
    fragment = render_notebook(report)
    audit = _Audit()
    audit.feed(fragment)
    assert audit.tags <= {"div", "span", "table", "thead", "tbody", "tr", "th", "td", "code", "details",
                          "summary", "ul", "li", "b"}, audit.tags
    assert audit.attributes == {"style"}  # no src, href, on* handlers, ids or classes
    assert not any(word in s for s in audit.styles for word in ("url(", "expression", "@import", "position"))
    text = "".join(audit.text)
    assert hostile in text and '"><iframe src="https://example.com">' in text and "onmouseover=alert(3)" in text
    assert "A101" in text and "FAIL" in text
    assert fragment.count("<div") == fragment.count("</div>") and fragment.count("<table") == fragment.count("</table>")


def test_notebook_html_of_a_clean_run():
    fragment = report_gen.diagnose(SAMPLES / "healthy_cnn")._repr_html_()
    assert "PASS" in fragment and "No findings." in fragment
