"""An honest verdict: a run on which nothing about the training could be judged is UNKNOWN, never PASS."""
import json

from builders.event_builders import make_scalar_event, make_version_event, write_records
from report_gen.cli import main
from report_gen.render import render
from report_gen.render.context import build_context


def _hp_metric_only(path):
    # Lightning logs `hp_metric` (-1 until the user sets it) by default: no loss, nothing to judge
    write_records(path / "events.out.tfevents.1.host", [make_version_event(), make_scalar_event("hp_metric", 0, -1.0)])
    return path


def _healthy(path):
    losses = [2.0 * 0.93 ** i + 0.05 for i in range(60)]
    write_records(path / "events.out.tfevents.1.host",
                  [make_version_event()] + [make_scalar_event("train/loss", i, v) for i, v in enumerate(losses)])
    return path


def test_a_run_whose_only_tag_is_hp_metric_is_unknown_not_pass(tmp_path, capsys):
    run = _hp_metric_only(tmp_path / "lightning_run")
    out = tmp_path / "out"
    assert main(["diagnose", str(run), "-o", str(out)]) == 0  # unknown is not a failure unless asked
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["verdict"] == "unknown"
    assert report["inputs"]["runs"][0]["judged"] is False
    assert report["inputs"]["runs"][0]["verdict"] == "unknown"
    assert "UNKNOWN" in capsys.readouterr().out
    assert "Nothing about the training could be judged in 1 of 1 run" in (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert 'class="banner verdict-unknown"' in html and "lightning_run" in html


def test_fail_on_unknown_turns_it_into_a_failing_gate(tmp_path):
    run = _hp_metric_only(tmp_path / "run")
    assert main(["diagnose", str(run), "-o", str(tmp_path / "o"), "--fail-on-unknown", "-q"]) == 1
    cfg = tmp_path / "rg.toml"
    cfg.write_text("fail-on-unknown = true\n")
    assert main(["diagnose", str(run), "-o", str(tmp_path / "o2"), "--config", str(cfg), "-q"]) == 1


def test_one_unjudged_run_among_healthy_ones_keeps_the_whole_report_unknown(tmp_path):
    _healthy(tmp_path / "sweep" / "good")
    _hp_metric_only(tmp_path / "sweep" / "empty")
    out = tmp_path / "out"
    assert main(["diagnose", str(tmp_path / "sweep"), "-o", str(out), "--fail-on-unknown", "-q"]) == 1
    report = json.loads((out / "report.json").read_text())
    by_name = {r["name"]: r for r in report["inputs"]["runs"]}
    assert by_name["good"]["verdict"] == "pass" and by_name["good"]["judged"] is True
    assert by_name["empty"]["verdict"] == "unknown"
    assert report["summary"]["verdict"] == "unknown"
    context = build_context(report)
    assert context["unjudged"] == ["empty"]


def test_a_healthy_judged_run_still_passes_and_an_error_still_fails(tmp_path):
    out = tmp_path / "out"
    assert main(["diagnose", str(_healthy(tmp_path / "run")), "-o", str(out), "--fail-on-unknown", "-q"]) == 0
    assert json.loads((out / "report.json").read_text())["summary"]["verdict"] == "pass"


def test_the_view_recomputes_unknown_from_evaluated_and_trusts_reports_without_that_key(tmp_path):
    base = {"schema_version": 1, "inputs": {"runs": [{"name": "a"}]}, "findings": [],
            "summary": {"verdict": "pass", "counts": {}}}
    # `evaluated` present but naming only an input-integrity rule: nothing was judged, whatever summary says
    judged_nothing = {**base, "evaluated": [{"code": "I101", "category": "input-integrity", "runs": ["a"]}]}
    assert build_context(judged_nothing)["verdict"] == "unknown"
    judged = {**base, "evaluated": [{"code": "L101", "category": "nonfinite-loss", "runs": ["a"]}]}
    assert build_context(judged)["verdict"] == "pass"
    assert build_context(base)["verdict"] == "pass"  # a report that predates judging
    written = render(judged_nothing, tmp_path / "r", ("html", "md"))
    assert "UNKNOWN" in written["md"].read_text()
