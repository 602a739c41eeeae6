"""Baseline comparison end to end (through report_gen.cli.main) and its pieces: matching, deltas, overlay."""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from report_gen.baseline import apply_baseline, classify, layer_deltas, match_key, pair_runs, scalar_deltas
from report_gen.cli import main
from report_gen.render.context import build_context
from report_gen.render.markdown import MARKER, render_markdown
from report_gen.render.plots import _paint_curves
from report_gen.vocab import CurvePlot

SHAPES = {"conv1.weight": (8, 3, 3, 3), "conv1.bias": (8,), "conv2.weight": (16, 8, 3, 3), "conv2.bias": (16,),
          "fc.weight": (10, 16), "fc.bias": (10,)}


def write_run(path: Path, *, dead: bool, steps: int = 40, checkpoints: int = 3, name: str = "epoch_{i}.pt",
              reverse_keys: bool = False, seed: int = 0) -> Path:
    """A tiny run: loss/accuracy scalars and `checkpoints` state_dicts; `dead` zeroes half of conv2's kernels."""
    path.mkdir(parents=True)
    writer = SummaryWriter(str(path))
    decay = np.exp(-np.arange(steps) / (steps / 5))
    for s in range(steps):
        writer.add_scalar("train/loss", float(0.1 + 2 * decay[s]), s)
    for s in range(9, steps, 10):
        writer.add_scalar("val/loss", float(0.15 + 2 * decay[s]), s)
        writer.add_scalar("val/acc", float(0.9 - 0.8 * decay[s]), s)
    writer.close()
    gen = torch.Generator().manual_seed(seed)
    init = {k: torch.randn(*shape, generator=gen) * 0.2 for k, shape in SHAPES.items()}
    folder = path / "checkpoints"
    folder.mkdir()
    for i in range(1, checkpoints + 1):
        state = {k: v + 0.02 * i * torch.randn(*v.shape, generator=gen) for k, v in init.items()}
        if dead:
            state["conv2.weight"][:8] = 0.0
        keys = list(state)[::-1] if reverse_keys else list(state)
        torch.save(OrderedDict((k, state[k]) for k in keys), folder / name.format(i=i, step=i * steps // checkpoints))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {"healthy": write_run(root / "healthy", dead=False), "broken": write_run(root / "broken", dead=True)}


def diagnose(tmp_path: Path, candidate: Path, baseline: Path, *extra: str, fmt: str = "json") -> tuple[int, dict]:
    out = tmp_path / "out"
    code = main(["diagnose", str(candidate), "--baseline", str(baseline), "-o", str(out), "--format", fmt, "-q",
                 *extra])
    report = json.loads((out / "report.json").read_text()) if "json" in fmt else {}
    return code, report


def statuses(report: dict) -> list[tuple[str, str, str]]:
    return [(f["code"], f["subject"], f["status"]) for f in report["findings"]]


# ------------------------------------------------------------------------------------- end to end


def test_new_fault_fails_and_is_listed_first(tmp_path, runs):
    code, report = diagnose(tmp_path, runs["broken"], runs["healthy"], fmt="json,md")
    assert code == 1
    first = report["findings"][0]
    assert (first["code"], first["subject"], first["status"], first["severity"]) == \
        ("K101", "conv2.weight", "new", "error")
    assert report["baseline"]["new"] == len(report["findings"]) and report["baseline"]["resolved"] == []
    md = (tmp_path / "out" / "report.md").read_text()
    worse, better = md.index("What got worse"), md.index("What got better")
    assert worse < md.index("K101") < better  # the new error leads the Markdown
    assert "| conv2.weight" not in md[:worse]


def test_fixed_fault_is_resolved_and_passes(tmp_path, runs):
    code, report = diagnose(tmp_path, runs["healthy"], runs["broken"])
    assert code == 0
    assert not any(f["code"] == "K101" for f in report["findings"])
    resolved = report["baseline"]["resolved"]
    assert ("K101", "conv2.weight", "resolved") in [(f["code"], f["subject"], f["status"]) for f in resolved]
    assert all("plot" not in f for f in resolved)


def test_identical_runs_have_nothing_new_and_persisting_errors_do_not_fail(tmp_path, runs):
    code, report = diagnose(tmp_path, runs["broken"], runs["broken"])
    assert code == 0
    assert report["summary"]["counts"]["error"] >= 1
    assert {s for _, _, s in statuses(report)} == {"persisting"}
    assert report["baseline"]["new"] == 0 and report["baseline"]["resolved"] == []
    assert all(d["baseline"] == d["candidate"] for d in report["baseline"]["deltas"])


def test_fail_on_persisting_counts_findings_already_in_the_baseline(tmp_path, runs):
    assert diagnose(tmp_path, runs["broken"], runs["broken"], "--fail-on-persisting")[0] == 1
    assert diagnose(tmp_path, runs["healthy"], runs["broken"], "--fail-on-persisting")[0] == 0  # resolved: never
    assert diagnose(tmp_path, runs["broken"], runs["broken"], "--fail-on-persisting", "--fail-on", "never")[0] == 0


def test_matching_ignores_file_names_step_counts_and_key_order(tmp_path, runs):
    other = write_run(tmp_path / "elsewhere" / "candidate", dead=True, steps=80, checkpoints=4,
                      name="ckpt-{step}.pth", reverse_keys=True, seed=1)
    code, report = diagnose(tmp_path, other, runs["broken"])
    assert code == 0
    assert ("K101", "conv2.weight", "persisting") in statuses(report)
    assert not any(f["code"] == "K101" for f in report["baseline"]["resolved"])
    assert report["baseline"]["runs"] == {"candidate": "broken"}
    steps = next(d for d in report["baseline"]["deltas"] if d["metric"] == "steps")
    assert (steps["baseline"], steps["candidate"]) == (39, 80)  # the last checkpoint is ckpt-80.pth


def test_baseline_folder_and_report_json_give_the_same_statuses(tmp_path, runs):
    base_out = tmp_path / "base"
    assert main(["diagnose", str(runs["healthy"]), "-o", str(base_out), "--format", "json", "-q"]) == 0
    _, from_folder = diagnose(tmp_path, runs["broken"], runs["healthy"])
    _, from_json = diagnose(tmp_path, runs["broken"], base_out / "report.json")
    assert statuses(from_folder) == statuses(from_json)
    assert from_folder["baseline"]["resolved"] == from_json["baseline"]["resolved"]
    assert from_folder["baseline"]["deltas"] == from_json["baseline"]["deltas"]
    assert from_json["baseline"]["curves"]["broken"]["train_loss"]["values"][0] == pytest.approx(2.1)


@pytest.mark.parametrize("name, content, message", [
    ("missing", None, "baseline not found"),
    ("bad.json", "{not json", "not valid JSON"),
    ("other.json", '{"schema_version": 99}', "unsupported schema_version"),
])
def test_bad_baseline_is_a_one_line_input_error(tmp_path, runs, capsys, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    assert main(["diagnose", str(runs["healthy"]), "--baseline", str(path), "-o", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("report-gen: error:") and name in err and message in err and "\n" not in err


def test_github_summary_appends_the_markdown(tmp_path, runs, monkeypatch):
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    for _ in range(2):
        code, _ = diagnose(tmp_path, runs["broken"], runs["healthy"], "--github-summary")
        assert code == 1
    text = summary.read_text()
    assert text.startswith("earlier step\n") and text.count(MARKER) == 2
    assert text.index("What got worse") < text.index("K101") < text.index("What got better")


def test_github_summary_without_the_variable_is_skipped(tmp_path, runs, monkeypatch, caplog):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    code, _ = diagnose(tmp_path, runs["broken"], runs["healthy"], "--github-summary")
    assert code == 1 and "GITHUB_STEP_SUMMARY is not set" in caplog.text


# -------------------------------------------------------------------------------------- matching


def finding(code: str, subject: str, run: str = "r", severity: str = "error", **extra) -> dict:
    return {"code": code, "subject": subject, "run": run, "severity": severity, "category": "x", **extra}


def integrity(file: str, kind: str = "bad-data-crc") -> dict:
    return finding("I101", file, category="input-integrity", evidence={"file": file, "kind": kind})


def test_integrity_findings_match_by_kind_and_file_pattern():
    assert match_key(integrity("/a/run/events.out.tfevents.1700000000.hostA.1.0")) == \
        match_key(integrity("/b/events.out.tfevents.1800000000.hostB.99.3"))
    assert match_key(integrity("/a/ckpt/epoch_12.pt")) == match_key(integrity("/b/epoch_7.pt"))
    assert match_key(integrity("/a/epoch_12.pt")) != match_key(integrity("/a/epoch_12.pt", "truncated-record"))
    assert match_key(finding("K101", "conv1.weight")) != match_key(finding("K101", "conv2.weight"))


def test_duplicate_keys_are_matched_one_to_one():
    base = [finding("K101", "a"), finding("K101", "b"), finding("W101", "a")]
    cand = [finding("K101", "a"), finding("K101", "a"), finding("W101", "a", run="other")]
    resolved = classify(cand, base, {"r": "r"})
    assert [f["status"] for f in cand] == ["persisting", "new", "new"]  # run "other" has no baseline
    assert sorted((f["code"], f["subject"]) for f in resolved) == [("K101", "b"), ("W101", "a")]


def test_runs_pair_by_name_unless_each_side_has_one():
    one = {"inputs": {"runs": [{"name": "main"}]}}
    assert pair_runs(one, {"inputs": {"runs": [{"name": "pr"}]}}) == {"pr": "main"}
    two = {"inputs": {"runs": [{"name": "a"}, {"name": "b"}]}}
    assert pair_runs(two, {"inputs": {"runs": [{"name": "b"}, {"name": "c"}]}}) == {"b": "b"}


def report_with(run: str, losses, acc, layers, last_step) -> dict:
    curves = {"train_loss": {"steps": list(range(len(losses))), "values": losses},
              "val_acc": {"steps": list(range(len(acc))), "values": acc}}
    return {"inputs": {"runs": [{"name": run, "last_step": last_step}]}, "findings": [],
            "details": {"runs": {run: {"curves": curves, "layers": layers}}}}


def test_scalar_and_layer_deltas_are_plain_numbers():
    base = report_with("m", [3.0, 1.0, 2.0], [0.5, 0.7], [
        {"param": "c.weight", "facts": {"dead_kernel_ratio": 0.0, "grad_rms": 1e-3, "update_ratio": None}}], 30)
    cand = report_with("p", [4.0, "nan", 0.5, 0.8], [0.6, 0.65], [
        {"param": "new.weight", "facts": {"grad_rms": 1.0}},
        {"param": "c.weight", "facts": {"dead_kernel_ratio": 0.25, "grad_rms": 1e-5, "update_ratio": 0.1}}], 60)
    deltas = {d["metric"]: (d["baseline"], d["candidate"], d["better"]) for d in scalar_deltas(base, cand, {"p": "m"})}
    assert deltas == {"best train loss": (1.0, 0.5, "lower"), "final train loss": (2.0, 0.8, "lower"),
                      "best val accuracy": (0.7, 0.65, "higher"), "final val accuracy": (0.7, 0.65, "higher"),
                      "steps": (30, 60, None)}
    assert layer_deltas(base, cand, {"p": "m"}) == [
        {"run": "p", "param": "c.weight", "fact": "dead_kernel_ratio", "baseline": 0.0, "candidate": 0.25,
         "better": "lower"},
        {"run": "p", "param": "c.weight", "fact": "grad_rms", "baseline": 1e-3, "candidate": 1e-5, "better": None}]


def test_apply_baseline_orders_new_first_and_the_view_leads_with_what_got_worse():
    base = report_with("m", [3.0, 1.0], [0.9, 0.9], [
        {"param": "a", "facts": {"grad_rms": 1.0, "dead_kernel_ratio": 0.0}},
        {"param": "b", "facts": {"grad_rms": 1.0}}], 10)
    base["findings"] = [finding("K101", "a", run="m")]
    cand = report_with("p", [3.0, 0.5], [0.9, 0.8], [
        {"param": "a", "facts": {"grad_rms": 1.1, "dead_kernel_ratio": 0.25}},
        {"param": "b", "facts": {"grad_rms": 100.0}}], 10)
    cand["findings"] = [finding("K101", "a", run="p"), finding("W101", "b", run="p", severity="warning")]
    apply_baseline(cand, base)
    assert [(f["code"], f["status"]) for f in cand["findings"]] == [("W101", "new"), ("K101", "persisting")]
    view = build_context(cand)["baseline"]
    assert [(d["metric"], d["change"]) for d in view["deltas"]] == [
        ("final val accuracy", "worse"), ("best train loss", "better"), ("final train loss", "better"),
        ("best val accuracy", "same"), ("steps", "")]
    assert [(r["param"], r["fact"], r["ratio"], r["change"]) for r in view["layer_deltas"]["rows"]] == [
        ("a", "dead_kernel_ratio", "—", "worse"), ("b", "grad_rms", "×100", ""), ("a", "grad_rms", "×1.1", "")]
    assert [ref["spec"].baseline for c in view["curves"] for ref in c["plots"]] == [True, True]


# ---------------------------------------------------------------------------------------- overlay


def test_curve_plot_draws_the_baseline_dashed_on_the_same_axes():
    ax = Figure().add_subplot()
    run = {"curves": {"train_loss": {"steps": [0, 1, 2, 3], "values": [2.0, 1.0, 0.5, 0.4]}}}
    baseline = {"train_loss": {"steps": [0, 1, 2], "values": [2.0, 1.5, 1.2]}}
    assert _paint_curves(ax, run, CurvePlot("p", ["train_loss"]), baseline=baseline)
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_label() for line in dashed] == ["train_loss (baseline)"]
    assert list(dashed[0].get_xdata()) == [0, 1, 2]
    assert not any(line.get_linestyle() == "--" for line in _lines_without_baseline(run))


def _lines_without_baseline(run: dict) -> list:
    ax = Figure().add_subplot()
    _paint_curves(ax, run, CurvePlot("p", ["train_loss"]))
    return ax.get_lines()


def test_markdown_shows_the_overlaid_curves_in_the_baseline_section(tmp_path):
    base = report_with("m", [3.0, 1.0, 0.9], [0.5, 0.9], [], 2)
    cand = report_with("p", [3.0, 2.0, 1.5], [0.5, 0.6], [], 2)
    cand.update(schema_version=1, summary={"verdict": "pass", "counts": {}})
    apply_baseline(cand, base)
    text = render_markdown(cand, tmp_path / "img", "img")
    section = text[text.index("### Compared with baseline"):text.index("### Persisting findings")]
    assert "candidate solid, baseline dashed" in section
    assert section.count("](img/") == 2  # loss and accuracy, each with its baseline
    assert len(list((tmp_path / "img").glob("*.png"))) == 2
