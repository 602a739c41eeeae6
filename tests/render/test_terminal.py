"""The rich terminal summary."""
from __future__ import annotations

import io

from report_gen.render import print_summary
from builders.sample_report import make_report_dict


def _printed(report: dict, **kwargs) -> str:
    buffer = io.StringIO()
    print_summary(report, file=buffer, **kwargs)
    return buffer.getvalue()


def test_summary_shows_verdict_counts_and_top_findings():
    text = _printed(make_report_dict(n_findings=30))
    lines = text.splitlines()
    assert lines[0] == "FAIL  10 errors, 15 warnings, 5 info in 2 runs"
    assert "K101" in text and "dead-kernels" not in lines[0]
    assert "… and 20 more (see the report)" in text
    assert sum(1 for line in lines if line.startswith("error")) == 10


def test_quiet_prints_only_the_verdict_line():
    assert _printed(make_report_dict(n_findings=3), quiet=True).splitlines() == \
        ["FAIL  2 errors, 1 warning, 0 info in 2 runs"]
    assert _printed({"schema_version": 1}).splitlines() == ["PASS  0 errors, 0 warnings, 0 info in 0 runs"]


def test_data_is_not_taken_as_markup_or_terminal_codes():
    report = {"summary": {"verdict": "warn", "counts": {"warning": 1}},
              "findings": [{"severity": "warning", "code": "X1", "run": "[bold red]r[/]", "subject": "s",
                            "message": "evil \x1b[2J clear"}]}
    text = _printed(report)
    assert "[bold red]r[/]" in text and "\x1b" not in text


def test_the_plain_verdict_line_is_what_rich_prints(monkeypatch):
    """Without rich (an output that is no terminal) the verdict line is byte for byte rich's."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    cases = [(make_report_dict(n_findings=3), True), ({"schema_version": 1}, False),
             (make_report_dict(n_findings=9, baseline=True), True)]
    plain = [_printed(report, quiet=quiet) for report, quiet in cases]
    monkeypatch.setenv("TTY_COMPATIBLE", "0")  # rich prints (no terminal for it either)
    assert [_printed(report, quiet=quiet) for report, quiet in cases] == plain
    assert plain[2].endswith("; vs baseline: 3 new, 1 resolved, 6 persisting\n") and plain[1].startswith("PASS  ")


def test_on_a_terminal_the_verdict_style_covers_the_whole_line(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich, styled as on a terminal
    assert _printed(make_report_dict(n_findings=3), quiet=True) == \
        "\x1b[1;31mFAIL  2 errors, 1 warning, 0 info in 2 runs\x1b[0m\n"
