"""Input notices in the PR comment and the terminal summary (issue 16): training findings first,
identical problems grouped, the size cap cutting input notices first. The damaged folders are real:
a bundled sample run whose files were replaced by Git LFS pointers (as a clone without `git lfs pull`
leaves them), diagnosed by the engine."""
from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from report_gen.engine import Options, diagnose
from report_gen.render import print_summary
from report_gen.render.markdown import MAX_CHARS, render_markdown
from builders.sample_report import make_report_dict
from test_markdown import _image_sources, _tables
from test_render_hostile import _live_references

SAMPLES = Path(__file__).resolve().parents[2] / "sample_runs"
LFS = "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n"


def _damage(run: Path) -> list[Path]:
    """Replace every event file and checkpoint of a run folder by an LFS pointer; return them."""
    files = sorted(p for p in run.rglob("*") if p.is_file() and ("tfevents" in p.name or p.suffix == ".pt"))
    for p in files:
        p.write_text(LFS.format("ab" * 32, 4567), encoding="utf-8")
    return files


def _findings_part(text: str) -> str:
    """The comment from the Findings heading to the collapsed sections."""
    start = text.index("### Findings")
    return text[start:text.index("<details>", start)]


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> tuple[Path, list[Path], dict]:
    run = tmp_path_factory.mktemp("one") / "healthy_cnn_clone"
    shutil.copytree(SAMPLES / "healthy_cnn", run)
    files = _damage(run)
    return run, files, diagnose([str(run)], Options())


@pytest.fixture(scope="module")
def fifty_one(tmp_path_factory) -> dict:
    """51 runs: 50 clones without their LFS files (an event file, three checkpoints) and one real
    diverging run, whose findings are the only ones about training."""
    root = tmp_path_factory.mktemp("many")
    for i in range(50):
        run = root / f"experiment_{i:02d}_lr_sweep_with_a_long_descriptive_name"
        (run / "checkpoints").mkdir(parents=True)
        (run / "events.out.tfevents.1795709020.vm.1.0").write_text("x")
        for epoch in (1, 2, 3):
            (run / "checkpoints" / f"epoch_{epoch}.pt").write_text("x")
        _damage(run)
    shutil.copytree(SAMPLES / "diverging", root / "diverging")
    return diagnose([str(root)], Options())


def test_one_damaged_folder_gives_one_line_per_distinct_problem(damaged):
    run, files, report = damaged
    notices = [f for f in report["findings"] if f["category"] == "input-integrity"]
    assert len(notices) >= len(files) >= 15  # the engine reports every file ...
    text = render_markdown(report, None)
    part = _findings_part(text)
    rows = [line for line in part.splitlines() if "I101" in line]
    kinds = {(f["severity"], f["evidence"].get("kind")) for f in notices}
    assert len(rows) == len(kinds) < 5  # ... the comment says each distinct problem once
    lfs = next(row for row in rows if "lfs-pointer" in row)
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", lfs)[1:-1]]
    assert cells[2] == str(sum(1 for f in notices if f["evidence"].get("kind") == "lfs-pointer"))
    for p in files:  # every file listed once, relative to its run, never with the full path
        relative = p.relative_to(run).as_posix().replace("_", "\\_")
        assert part.count(f"<code>{relative}</code>") == 1, relative
    assert str(run).replace("_", "\\_") not in part
    assert "git lfs pull" in lfs


def test_the_cap_cuts_input_notices_first_and_keeps_the_only_training_anomaly(fifty_one):
    report = fifty_one
    training = [f for f in report["findings"] if f["category"] != "input-integrity"]
    assert training and all(f["run"] == "diverging" for f in training)
    text = render_markdown(report, None)
    assert len(text) < MAX_CHARS
    part = _findings_part(text)
    for f in training:  # every finding about the training, in the first table, before any notice
        assert f"| {f['code']} | {f['name']} | diverging |" in part
    first_notice = part.index("I101")
    assert all(part.index(f"| {f['code']} |") < first_notice for f in training)
    note = part[part.index("Cut to fit GitHub's comment limit:"):]
    assert re.search(r"input problems tables|input-notice lists|input notices", note.splitlines()[0])
    assert "**This comment was cut**" in text


def test_when_notices_must_go_whole_the_comment_says_how_many():
    report = make_report_dict(n_findings=0)
    report["findings"] = [{"code": "L105", "name": "overfitting", "category": "overfitting", "severity": "warning",
                           "run": "sick_cnn", "subject": "val/loss", "message": "val/loss rose from its best",
                           "evidence": {}, "suggestion": "stop earlier"}]
    for i in range(3000):  # distinct problems: none can be grouped with another
        file = f"/runs/healthy_cnn/checkpoints/epoch_{i}.pt"
        report["findings"].append({"code": "I101", "name": "damaged-input", "category": "input-integrity",
                                   "severity": "error", "run": "healthy_cnn", "subject": file,
                                   "message": f"unsafe-pickle: {file}: global os.system{i} refused",
                                   "evidence": {"file": file, "kind": "unsafe-pickle"}, "suggestion": "x"})
    text = render_markdown(report, None)
    assert len(text) < MAX_CHARS
    assert "| L105 | overfitting | sick\\_cnn |" in _findings_part(text)  # a warning outlives 3000 errors
    shown = _findings_part(text).count("| I101 damaged-input |")
    assert 10 < shown < 3000
    assert f"{3000 - shown} input notices (damaged or unreadable files)" in text
    assert "less severe findings about the training" not in text


def test_grouped_notices_stay_inert_markdown():
    report = make_report_dict(n_findings=0)
    hostile = "ep|och_@octocat_#12_GH-7_$x$_![i](http://evil.example/p.png)<img src=x>.pt"
    report["findings"] = [{"code": "I101", "name": "damaged-input", "category": "input-integrity",
                           "severity": "warning", "run": "healthy_cnn", "subject": f"/runs/healthy_cnn/{hostile}{i}",
                           "message": f"lfs-pointer: /runs/healthy_cnn/{hostile}{i}: pointer @team #9",
                           "evidence": {}, "suggestion": "run `git lfs pull` @here"} for i in range(3)]
    text = render_markdown(report, None)
    assert _live_references(text) == []
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    assert "<img" not in html and _image_sources(text) == []
    for rows in _tables(text):
        assert len(set(rows)) == 1, rows
    assert sum(1 for line in _findings_part(text).splitlines() if "I101" in line) == 1  # one group of three


# ------------------------------------------------------------------------------------------ terminal


def _printed(report: dict, monkeypatch, columns: int = 80, **env: str) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    buffer = io.StringIO()
    print_summary(report, file=buffer)
    return buffer.getvalue()


def test_terminal_at_80_columns_never_breaks_names_or_cuts_the_suggestion(damaged, monkeypatch):
    run, files, report = damaged
    text = _printed(report, monkeypatch)
    lines = text.splitlines()
    for line in lines:  # a line is longer than 80 only when it is one unbreakable name
        assert len(line) <= 80 or " " not in line.strip().split(": ", 1)[-1], line
    lfs = [f for f in report["findings"] if f["evidence"].get("kind") == "lfs-pointer"]
    shown_files = [line.strip() for line in lines if line.strip().startswith(f"{run.name}: ")]
    assert shown_files and all(line.split(": ", 1)[1] in {p.relative_to(run).as_posix() for p in files}
                               for line in shown_files)
    flat = " ".join(line.strip() for line in lines)
    assert "fetch it with `git lfs pull`" in flat  # the actionable end of the message, whole
    for f in report["findings"]:
        assert " ".join(f["suggestion"].split()) in flat
    assert "…" not in flat.replace("… and", "")
    assert sum(1 for line in lines if line.startswith("warning  I101")) == 2  # junk bytes, LFS pointers
    assert f"{len(lfs)} files" in next(line for line in lines if line.startswith("warning") and
                                       lines[lines.index(line) + 1].strip().startswith("lfs-pointer"))


def test_terminal_wraps_at_columns_and_keeps_run_names_whole(monkeypatch):
    report = make_report_dict(n_findings=4)
    long_name = "resnet50_imagenet_lr0.1_warmup5_cosine_seed1234_bs256"
    for f in report["findings"]:
        f["run"] = long_name
        f["suggestion"] = "Lower the learning rate " * 6 + "and fetch it with `git lfs pull`"
    for columns in (70, 80, 120):  # the name line, 'run ' and the name, fits in 70
        lines = _printed(report, monkeypatch, columns).splitlines()
        assert sum(1 for line in lines if long_name in line) == 4, columns
        assert all(len(line) <= columns for line in lines), columns
        assert sum(1 for line in lines if "`git lfs pull`" in line) == 4


def test_terminal_no_color(monkeypatch):
    report = make_report_dict(n_findings=3)
    assert "\x1b[31m" in _printed(report, monkeypatch, FORCE_COLOR="1") or "\x1b[1;31m" in \
        _printed(report, monkeypatch, FORCE_COLOR="1")
    plain = _printed(report, monkeypatch, FORCE_COLOR="1", NO_COLOR="1")
    assert not re.search(r"\x1b\[[0-9;]*3[0-7](;[0-9]+)*m", plain)


def test_terminal_with_baseline_counts_new_and_resolved(monkeypatch):
    report = make_report_dict(n_findings=9, baseline=True)
    new = sum(1 for f in report["findings"] if f["status"] == "new")
    lines = _printed(report, monkeypatch).splitlines()
    assert lines[0].endswith(f"; vs baseline: {new} new, 1 resolved, {9 - new} persisting")
    headers = [line for line in lines if line.startswith(("error", "warning", "info"))]
    assert [line.endswith("new") for line in headers] == [True] * new + [False] * (len(headers) - new)


def test_terminal_lines_are_never_workflow_commands(monkeypatch):
    report = make_report_dict(n_findings=2)
    for f in report["findings"]:
        f["run"] = "::add-mask::x"
        f["subject"] = "::stop-commands::tok " * 5
        f["message"] = "a " * 30 + "::set-output name=v::1 " * 3
    lines = _printed(report, monkeypatch, 40).splitlines()
    assert not any(line.lstrip().startswith("::") for line in lines)
