"""Hostile output folders, names and numbers: no file outside -o touched, no raw control character on
the terminal, no live reference or math in Markdown, no crash on out-of-range steps or non-UTF-8 names."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from report_gen.vocab import CurvePlot
from markdown_it import MarkdownIt

from builders.event_builders import make_scalar_event, make_version_event, write_records
from report_gen.cli import main
from report_gen.core import InputError
from report_gen.render import render
from report_gen.render.markdown import escape_markdown, render_markdown
from report_gen.render.output import OutputFolder
from report_gen.render.plots import PlotStore, _label
from report_gen.render.terminal import TerminalSafeFormatter, print_summary, terminal_text
from builders.sample_report import make_report_dict

ESC_TITLE = "\x1b]0;pwned\x07"
LINK = "[link=http://evil.example]click[/link]"
BIDI = "\u202eexe.txt"


def _snapshot(folder: Path) -> dict:
    """Every file under `folder` with its bytes (what "untouched" is checked against)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def planted(tmp_path):
    """An output folder with a symlink planted under every name render() writes, all pointing outside."""
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    for name in ("html", "md", "json", "tmp"):
        (outside / f"victim.{name}").write_text(f"precious {name}\n")
    (outside / "dir" / "keep.txt").write_text("precious dir\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").symlink_to(outside / "victim.html")
    (out / "report.md").symlink_to(outside / "victim.md")
    (out / "report.json").symlink_to(outside / "victim.json")
    (out / "report.json.tmp").symlink_to(outside / "victim.tmp")
    (out / "report_files").symlink_to(outside / "dir", target_is_directory=True)
    return out, outside, _snapshot(outside)


def test_planted_symlinks_are_replaced_never_written_through(planted, caplog):
    out, outside, before = planted
    with caplog.at_level(logging.WARNING, logger="report_gen"):
        written = render(make_report_dict(n_findings=6), out)
    assert _snapshot(outside) == before
    for path in written.values():
        assert path.is_file() and not path.is_symlink()
    images = out / "report_files"
    assert images.is_dir() and not images.is_symlink() and any(images.glob("*.png"))
    assert "report_files was a symbolic link; replaced" in caplog.text
    assert json.loads((out / "report.json").read_text())["schema_version"] == 1
    assert not list(out.glob(".*.tmp"))  # no temporary left behind


def test_planted_image_names_are_replaced_too(tmp_path):
    report = make_report_dict(n_findings=6)
    out = tmp_path / "out"
    render(report, out, ["md"])
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    for png in (out / "report_files").glob("*.png"):
        png.unlink()
        png.symlink_to(victim)
    render(report, out, ["md"])
    assert victim.read_bytes() == b"precious"
    assert all(not p.is_symlink() for p in (out / "report_files").glob("*.png"))


def test_the_output_folder_is_pinned_while_writing(tmp_path):
    """The folder path swapped for a symlink after it was opened: writes still land in the folder opened."""
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    with OutputFolder(out) as folder:
        out.rename(tmp_path / "moved")
        out.symlink_to(outside, target_is_directory=True)
        folder.write_text("report.html", "x")
    assert (tmp_path / "moved" / "report.html").read_text() == "x"
    assert list(outside.iterdir()) == []


def test_one_failing_format_does_not_lose_the_others(tmp_path):
    out = tmp_path / "out"
    (out / "report.html").mkdir(parents=True)  # a directory where the HTML file goes
    with pytest.raises(InputError) as info:
        render(make_report_dict(n_findings=3), out)
    message = str(info.value)
    assert "report.html" in message and "\n" not in message and "written:" in message
    assert json.loads((out / "report.json").read_text())["schema_version"] == 1
    assert (out / "report.md").is_file()


def test_a_plot_that_raises_is_dropped_not_the_report(tmp_path, monkeypatch):
    import report_gen.render.plots as plots

    def broken(ax, run, spec):
        raise RuntimeError("matplotlib internals")

    from report_gen.vocab import CurvePlot

    monkeypatch.setitem(plots.PAINTERS, CurvePlot, broken)  # keyed by plot type (a "curve" key patched nothing)
    written = render(make_report_dict(n_findings=6), tmp_path / "out", ["html"])
    assert "<html" in written["html"].read_text(encoding="utf-8").lower()


def test_a_plot_store_that_cannot_be_made_costs_html_and_md_not_json(tmp_path, monkeypatch):
    import report_gen.render as render_module

    def broken(self, report, *args, **kwargs):
        raise RuntimeError("odd report")

    monkeypatch.setattr(render_module.PlotStore, "__init__", broken)
    with pytest.raises(InputError) as info:
        render(make_report_dict(n_findings=3), tmp_path / "out")
    assert "could not render html" in str(info.value) and "(and 1 more)" in str(info.value)
    assert "\n" not in str(info.value)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["schema_version"] == 1


def test_a_terminal_summary_that_fails_keeps_the_exit_code_and_the_files(tmp_path, monkeypatch, caplog):
    import report_gen.render.terminal as terminal

    def broken(report, quiet=False):
        raise RuntimeError("console gone")

    monkeypatch.setattr(terminal, "print_summary", broken)
    run = tmp_path / "run"
    write_records(run / "events.out.tfevents.1", [make_version_event()] +
                  [make_scalar_event("train/loss", i, float("nan") if i == 5 else 1.0) for i in range(10)])
    with caplog.at_level(logging.WARNING, logger="report_gen"):
        code = main(["diagnose", str(run), "-o", str(tmp_path / "out")])
    assert code == 1  # the NaN loss is an error finding, exit code as without the failure
    assert any("the terminal summary failed" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "out" / "report.html").exists()


def test_cli_warns_when_the_output_folder_is_inside_an_input(tmp_path, caplog):
    run = tmp_path / "run"
    write_records(run / "events.out.tfevents.1.host",
                  [make_version_event()] + [make_scalar_event("train/loss", i, 2.0 / (i + 1)) for i in range(30)])
    out = run / "reports"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / "report.html").symlink_to(victim)
    with caplog.at_level(logging.WARNING, logger="report_gen"):
        code = main(["diagnose", str(run), "-o", str(out), "-q"])
    assert code in (0, 1)
    assert victim.read_text() == "precious" and not (out / "report.html").is_symlink()
    assert "is inside the input" in caplog.text


def test_cli_stderr_and_stdout_carry_no_escape_sequence_from_names(tmp_path):
    """A real process (its logging goes to stderr through the terminal-safe formatter): a run folder
    named with ESC ]0;...BEL, the output folder inside it so that a warning names it."""
    from builders.hostile_tools import run_python

    run = tmp_path / f"run{ESC_TITLE}{BIDI}"
    write_records(run / "events.out.tfevents.1.host",
                  [make_version_event()] + [make_scalar_event("train/loss", i, float("nan") if i == 20 else 1.0)
                                            for i in range(30)])
    code = f"import sys\nfrom report_gen.cli import main\nsys.exit(main(['diagnose', {str(run)!r}, '-o', {str(run / 'out')!r}]))"
    done = run_python(code, timeout=240)
    assert done.returncode == 1, done.stderr[-500:]
    assert "is inside the input" in done.stderr and "pwned" in done.stderr + done.stdout
    for stream in (done.stderr, done.stdout):
        assert "\x1b" not in stream and "\x07" not in stream and "\u202e" not in stream


# ------------------------------------------------------------------------------ terminal text


def test_terminal_text_strips_escapes_and_bidi_and_keeps_markup_literal():
    text = terminal_text(f"run{ESC_TITLE}{LINK}{BIDI}\x9b31m")
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text and "\x9b" not in text
    assert LINK in text


def _hostile_finding_report() -> dict:
    report = make_report_dict(n_findings=3)
    finding = report["findings"][0]
    finding["run"] = f"run{ESC_TITLE}{LINK}"
    finding["subject"] = f"layer{BIDI}"
    finding["message"] = f"msg \x1b[2J{LINK}"
    return report


def test_the_summary_table_prints_no_control_character_and_no_markup():
    buffer = io.StringIO()
    print_summary(_hostile_finding_report(), file=buffer)
    printed = buffer.getvalue()
    assert "\x1b" not in printed and "\x07" not in printed and "\u202e" not in printed
    assert "\x1b]8;" not in printed and "[link=" in printed  # the markup is shown as text, no hyperlink


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_shows_names_as_plain_text(monkeypatch):
    from report_gen.cli import _progress

    fake = _Tty()
    monkeypatch.setattr(sys, "stderr", fake)
    prog, cb = _progress(False)
    with prog:
        cb(f"reading run{ESC_TITLE}{LINK}", 1, 2)
        prog.refresh()
    printed = fake.getvalue()
    assert "pwned" in printed  # the name is shown...
    assert "\x1b]0;" not in printed and "\x07" not in printed  # ...but it sets no window title
    assert "\x1b]8;" not in printed  # no OSC 8 hyperlink: the markup stayed text
    assert "[link=http://evil.example]" in printed


def test_log_lines_and_errors_are_terminal_safe(tmp_path, capsys):
    formatter = TerminalSafeFormatter("report-gen: %(message)s")
    record = logging.LogRecord("report_gen", logging.WARNING, __file__, 1, "file %s", (f"a{ESC_TITLE}b",), None)
    assert "\x1b" not in formatter.format(record) and "\x07" not in formatter.format(record)
    assert main(["render", str(tmp_path / f"missing{ESC_TITLE}.json"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and err.count("\n") == 1


# --------------------------------------------------------------------------------------- plots


def test_plot_labels_carry_no_control_characters():
    label = _label(f"train/loss{ESC_TITLE}\x00\u202e$x$")
    assert all(ch.isprintable() for ch in label) and r"\$x\$" in label


def test_a_tag_with_esc_reaches_neither_matplotlib_nor_stderr(capfd):
    report = make_report_dict(n_findings=3)
    run = next(iter(report["details"]["runs"].values()))
    run["curves"]["train_loss"]["tag"] = f"loss{ESC_TITLE}"
    run["curves"][f"other:x{ESC_TITLE}\x1b[31m"] = run["curves"].pop("lr")
    store = PlotStore(report)
    spec = CurvePlot(run=next(iter(report["details"]["runs"])),
                     series=("train_loss", f"other:x{ESC_TITLE}\x1b[31m"))
    store.prepare([spec])
    captured = capfd.readouterr()
    assert "\x1b" not in captured.err and "\x1b" not in captured.out


def test_steps_of_1e308_and_10_to_the_5000_do_not_crash(tmp_path):
    report = make_report_dict(n_findings=6)
    for run in report["details"]["runs"].values():
        for curve in run["curves"].values():
            curve["steps"] = [(-1) ** i * 1e308 for i in range(len(curve["steps"]))]
        for dist in run.get("distributions", {}).values():
            dist["steps"] = [1e308] * len(dist["steps"])
    report["inputs"]["runs"][0]["last_step"] = 10**5000
    report["findings"][0]["evidence"]["step"] = -(10**5000)
    written = render(report, tmp_path / "out")
    assert set(written) == {"html", "md", "json"}
    assert "(out of range)" in written["html"].read_text(encoding="utf-8")
    reread = json.loads(written["json"].read_text())
    assert reread["inputs"]["runs"][0]["last_step"] == 2**63 - 1


def test_render_and_baseline_accept_a_report_json_with_a_step_of_10_to_the_5000(tmp_path):
    path = tmp_path / "report.json"
    render(make_report_dict(n_findings=3), tmp_path / "good", ["json"])
    text = (tmp_path / "good" / "report.json").read_text()
    path.write_text(text.replace('"last_step": 590', '"last_step": 1' + "0" * 5000, 1))
    assert '"last_step": 1000' in path.read_text()
    assert main(["render", str(path), "-o", str(tmp_path / "rendered"), "--format", "html,md,json"]) == 0
    run = tmp_path / "run"
    write_records(run / "events.out.tfevents.1.host",
                  [make_version_event()] + [make_scalar_event("train/loss", i, 2.0 / (i + 1)) for i in range(30)])
    assert main(["diagnose", str(run), "-o", str(tmp_path / "cand"), "--baseline", str(path), "-q"]) in (0, 1)


def test_non_utf8_names_reach_no_writer_as_surrogates(tmp_path):
    name = os.fsdecode(b"run\xff\xfe")  # what os.listdir gives for a non-UTF-8 folder name
    report = make_report_dict(n_findings=3)
    report["inputs"]["runs"][0]["name"] = name
    report["findings"][0]["run"] = name
    report["details"]["runs"][name] = report["details"]["runs"].pop("healthy_cnn")
    written = render(report, tmp_path / "out")
    for path in written.values():
        path.read_bytes().decode("utf-8")  # strict: no surrogate was written
    assert json.loads(written["json"].read_text())["inputs"]["runs"][0]["name"] == "run\\xff\\xfe"
    assert "run\\xff\\xfe" in written["html"].read_text(encoding="utf-8")
    buffer = io.StringIO()
    print_summary(report, file=buffer)
    assert "run\\xff\\xfe" in buffer.getvalue()


def test_a_run_folder_with_a_non_utf8_name_is_reported(tmp_path):
    folder = os.path.join(os.fsencode(tmp_path), b"run\xff")
    os.mkdir(folder)
    write_records(os.fsdecode(os.path.join(folder, b"events.out.tfevents.1.host")),
                  [make_version_event()] + [make_scalar_event("train/loss", i, 2.0 / (i + 1)) for i in range(30)])
    out = tmp_path / "out"
    assert main(["diagnose", str(tmp_path), "-o", str(out), "-q", "--format", "json,md,html"]) in (0, 1)
    report = json.loads((out / "report.json").read_bytes().decode("utf-8"))
    assert any("run\\xff" in r["name"] for r in report["inputs"]["runs"])


# ------------------------------------------------------------------------------------ markdown


class _TextNodes(HTMLParser):
    """Text nodes outside pre/code/a: what GitHub's reference, mention and math filters look at."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.nodes: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.stack:
            del self.stack[len(self.stack) - 1 - self.stack[::-1].index(tag):]

    def handle_data(self, data):
        if not {"pre", "code", "a"} & set(self.stack):
            self.nodes.append(data)


_REFERENCE = re.compile(r"(?<![\w/])#\d|(?<![\w/])[\w.-]+/[\w.-]+#\d|\bGH-\d|@\w", re.IGNORECASE)
NAMES = "see #123, GH-77, gh-8, owner/repo#9 and $x^2$ costs $5 and $6 @octocat"


def _live_references(markdown: str) -> list[str]:
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)
    parser = _TextNodes()
    parser.feed(html)
    found = [m.group(0) for node in parser.nodes for m in _REFERENCE.finditer(node)]
    math = [node for node in parser.nodes if node.count("$") >= 2 or ("$" in node and node != "$")]
    return found + math


def test_references_and_math_are_neutralised_and_the_table_still_parses():
    escaped = escape_markdown(NAMES)
    assert _live_references(NAMES)  # the check does see live references in the raw text
    assert _live_references(escaped) == []
    table = f"| a | b |\n|---|---|\n| {escaped} | {escape_markdown('x|#1')} |\n"
    tokens = MarkdownIt("commonmark", {"html": True}).enable("table").parse(table)
    cells = [t for t in tokens if t.type == "td_open"]
    assert len(cells) == 2
    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(table)
    visible = re.sub(r"<[^>]+>", "", rendered).replace("\u200b", "")
    assert "see #123, GH-77, gh-8, owner/repo#9 and $x^2$ costs $5 and $6 @octocat" in visible


def test_a_report_with_reference_and_math_names_has_none_live(tmp_path):
    report = make_report_dict(n_findings=6)
    for finding in report["findings"]:
        finding["subject"] = f"{finding['subject']} {NAMES}"
        finding["message"] = NAMES
    report["inputs"]["runs"][0]["problems"][0]["message"] = NAMES
    markdown = render_markdown(report, None)
    assert _live_references(markdown) == []
    assert markdown.count("<span>$</span>") >= 5 * 6
