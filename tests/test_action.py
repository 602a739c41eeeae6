"""The composite action (action.yml): its shell steps run with bash, as GitHub runs them, on sample runs.

No network: `gh` is a stand-in script on PATH that serves a baseline report.json and records its calls;
the `uses:` steps (setup-python, upload-artifact, github-script) are GitHub's and are only checked for
the inputs they are given. Inputs and step outputs reach the scripts the way the runner passes them:
each step's `env:` with `${{ ... }}` expressions resolved, `$GITHUB_OUTPUT` read back per step.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from report_gen.cli import main

REPO = Path(__file__).resolve().parents[1]
ACTION = yaml.safe_load((REPO / "action.yml").read_text())
SAMPLES = REPO / "sample_runs"
_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")

FAKE_GH = """#!/bin/bash
echo "$*" >> "$GH_LOG"
case "$1 $2" in
  "run list") [ -n "$GH_RUN_ID" ] && echo "$GH_RUN_ID" ;;
  "run download")
    while [ $# -gt 0 ]; do [ "$1" = --dir ] && dest="$2"; shift; done
    mkdir -p "$dest" && cp "$GH_BASELINE" "$dest/report.json" ;;
esac
"""


class Runner:
    """Just enough of the Actions runner to run the composite action's bash steps in order."""

    def __init__(self, tmp: Path, inputs: dict[str, str], event: str, **github: str) -> None:
        self.tmp, self.event = tmp, event
        declared = ACTION["inputs"]
        assert set(inputs) <= set(declared), set(inputs) - set(declared)
        self.inputs = {name: str(spec.get("default", "")) for name, spec in declared.items()}
        self.inputs.update(inputs)
        self.inputs["github-token"] = "fake-token"
        self.github = {"action_path": str(REPO), "event_name": event, **github}
        self.outputs: dict[str, dict[str, str]] = {}
        self.ran: dict[str, int] = {}
        self.summary = tmp / "summary.md"
        self.gh_log = tmp / "gh.log"
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        (bin_dir / "gh").write_text(FAKE_GH)
        (bin_dir / "gh").chmod(0o755)
        (bin_dir / "python").symlink_to(sys.executable)  # `python` = the interpreter running the tests
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                    "GITHUB_EVENT_NAME": event, "GITHUB_REPOSITORY": "acme/trainer",
                    "GITHUB_WORKFLOW_REF": "acme/trainer/.github/workflows/diag.yml@refs/heads/main",
                    "GITHUB_REF_NAME": github.get("ref_name", "main"), "RUNNER_TEMP": str(tmp / "runner_temp"),
                    "GITHUB_STEP_SUMMARY": str(self.summary), "GH_LOG": str(self.gh_log)}
        (tmp / "runner_temp").mkdir()

    def value(self, expression: str) -> str:
        if expression.startswith("inputs."):
            return self.inputs[expression[len("inputs."):]]
        if expression.startswith("steps."):
            step, _, name = expression[len("steps."):].partition(".outputs.")
            return self.outputs.get(step, {}).get(name, "")
        if expression == "github.event.pull_request.number":
            return self.github.get("pr", "")
        return self.github[expression[len("github."):]]

    def resolve(self, text: str) -> str:
        return _EXPR.sub(lambda m: self.value(m.group(1)), str(text))

    def condition(self, text: str | None) -> bool:
        """The `if:` forms the bash steps use: `X == 'v'` / `X != 'v'`."""
        if text is None:
            return True
        m = re.fullmatch(r"(\S+) (==|!=) '(.*)'", text.strip())
        assert m, f"unsupported condition in a bash step: {text!r}"
        equal = self.value(m.group(1)) == m.group(3)
        return equal if m.group(2) == "==" else not equal

    def run(self, extra_env: dict[str, str] | None = None) -> None:
        for step in ACTION["runs"]["steps"]:
            if "run" not in step or not self.condition(step.get("if")):
                continue
            output = self.tmp / f"output-{step['id']}"
            output.touch()
            env = {**self.env, **(extra_env or {}), "GITHUB_OUTPUT": str(output),
                   **{k: self.resolve(v) for k, v in step.get("env", {}).items()}}
            # GitHub's `shell: bash` is `bash --noprofile --norc -eo pipefail {0}`
            script = self.tmp / f"step-{step['id']}.sh"
            script.write_text(step["run"])
            done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                                  cwd=self.tmp, env=env, capture_output=True, text=True, timeout=300)
            self.ran[step["id"]] = done.returncode
            self.outputs[step["id"]] = dict(line.split("=", 1) for line in output.read_text().splitlines() if line)
            self.log = getattr(self, "log", "") + done.stdout + done.stderr
            if done.returncode != 0:
                return

    def action_outputs(self) -> dict[str, str]:
        return {name: self.resolve(spec["value"]) for name, spec in ACTION["outputs"].items()}


@pytest.fixture(scope="module")
def baseline_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("main")
    assert main(["diagnose", str(SAMPLES / "healthy_cnn"), "-o", str(out), "--format", "json", "-q",
                 "--fail-on", "never"]) == 0
    return out / "report.json"


def test_action_declares_inputs_outputs_and_keeps_expressions_out_of_scripts():
    assert ACTION["runs"]["using"] == "composite"
    assert {"paths", "baseline", "baseline-artifact", "fail-on", "formats", "python-version"} <= set(ACTION["inputs"])
    assert ACTION["inputs"]["paths"]["required"] is True
    steps = {s.get("id"): s for s in ACTION["runs"]["steps"]}
    for name, spec in ACTION["outputs"].items():
        [(step, key)] = re.findall(r"\$\{\{ steps\.([\w-]+)\.outputs\.([\w-]+) \}\}", spec["value"])
        assert step in steps and re.search(rf"\b{re.escape(key)}=", steps[step]["run"]), name
    for step in ACTION["runs"]["steps"]:
        if "run" in step:
            assert step["shell"] == "bash" and "${{" not in step["run"], step.get("name")  # no injection
            for expression in _EXPR.findall(" ".join(map(str, step.get("env", {}).values()))):
                assert expression.startswith(("inputs.", "steps.", "github.")), expression
    uses = [s["uses"] for s in ACTION["runs"]["steps"] if "uses" in s]
    assert uses == ["actions/setup-python@v5", "actions/upload-artifact@v4", "actions/github-script@v7"]


def test_pull_request_with_a_new_error_fails_after_writing_everything(tmp_path, baseline_report):
    runner = Runner(tmp_path, {"paths": str(SAMPLES / "dead_relu"), "baseline-artifact": "report-main",
                               "install": "false"}, "pull_request", pr="7")
    runner.run({"GH_RUN_ID": "4242", "GH_BASELINE": str(baseline_report)})
    assert runner.ran == {"baseline": 0, "diagnose": 0, "gate": 1}, (runner.ran, runner.log[-2000:])
    calls = runner.gh_log.read_text().splitlines()
    assert calls[0].startswith("run list --repo acme/trainer --workflow diag.yml --branch main --event push")
    assert calls[1].startswith("run download 4242 --repo acme/trainer --name report-main --dir ")
    out = runner.action_outputs()
    assert out["verdict"] == "fail" and out["exit-code"] == "1" and int(out["errors"]) >= 1
    assert out["artifact-name"] == "report-pr-7"
    report = json.loads((tmp_path / out["report-json"]).read_text())
    assert report["baseline"] is not None and report["baseline"]["new"] >= 1  # compared with main's report
    assert (tmp_path / out["report-html"]).is_file() and (tmp_path / out["report-md"]).is_file()
    assert "report_gen:report" in runner.summary.read_text()  # --github-summary
    assert "new findings at or above 'error'" in runner.log


def test_push_reports_without_gating_and_without_a_baseline(tmp_path):
    paths = f"{SAMPLES / 'dead_relu'}\n{SAMPLES / 'healthy_cnn'}\n"  # one per line
    runner = Runner(tmp_path, {"paths": paths, "baseline-artifact": "report-main", "formats": "md",
                               "install": "false", "github-summary": "false", "output-dir": "out"}, "push")
    runner.run()
    assert runner.ran == {"baseline": 0, "diagnose": 0}, runner.log[-2000:]
    assert not runner.gh_log.exists()  # no baseline download outside pull requests
    out = runner.action_outputs()
    assert out["exit-code"] == "0" and out["verdict"] == "fail"  # main publishes its report, never fails
    assert out["report-dir"] == "out" and out["report-html"] == "" and out["report-md"] == "out/report.md"
    assert out["artifact-name"] == "report-main"
    report = json.loads((tmp_path / "out" / "report.json").read_text())  # json is always written
    assert [r["name"] for r in report["inputs"]["runs"]] == ["dead_relu", "healthy_cnn"]
    assert report["baseline"] is None and not runner.summary.exists()


def test_pull_request_without_a_main_run_and_explicit_gate(tmp_path):
    runner = Runner(tmp_path, {"paths": str(SAMPLES / "healthy_cnn"), "baseline-artifact": "report-main",
                               "fail-on": "warning", "install": "false", "artifact-name": "none",
                               "args": "--select L,K"}, "pull_request", pr="8")
    runner.run({"GH_RUN_ID": ""})
    assert runner.ran == {"baseline": 0, "diagnose": 0}, runner.log[-2000:]
    assert "no successful run of diag.yml on main" in runner.log
    out = runner.action_outputs()
    assert out["verdict"] == "pass" and out["exit-code"] == "0" and out["artifact-name"] == ""
    report = json.loads((tmp_path / out["report-json"]).read_text())
    assert {e["code"][0] for e in report["evaluated"]} <= {"L", "K"}  # `args` reached the command


def test_input_error_stops_the_diagnose_step(tmp_path):
    runner = Runner(tmp_path, {"paths": str(tmp_path / "missing"), "install": "false"}, "pull_request", pr="9")
    runner.run()
    assert runner.ran["diagnose"] == 2 and "no such file or directory" in runner.log
    assert runner.action_outputs()["report-json"] == ""  # nothing to upload or comment


def test_example_workflow_uses_the_action_with_declared_inputs():
    workflow = yaml.safe_load((REPO / "examples" / "github-workflow.yml").read_text())
    steps = workflow["jobs"]["diagnose"]["steps"]
    [step] = [s for s in steps if s.get("uses") == "./"]
    assert set(step["with"]) <= set(ACTION["inputs"]) and "paths" in step["with"]
