"""The Python API (report_gen.diagnose -> Report) gives what the CLI gives, and imports cheaply."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import report_gen
from report_gen.cli import main
from report_gen.core import InputError

SAMPLES = Path(__file__).resolve().parents[1] / "sample_runs"


def test_import_report_gen_does_not_import_torch():
    code = ("import sys, report_gen, report_gen.integrations.lightning, report_gen.integrations.hf\n"
            "heavy = [m for m in ('torch', 'matplotlib', 'pandas', 'jinja2', 'lightning', 'pytorch_lightning',"
            " 'transformers', 'report_gen.engine') if m in sys.modules]\n"
            "print(','.join(heavy))\n"
            "report_gen.diagnose, report_gen.Report\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "", f"`import report_gen` imported {out[0]}"
    assert out[1] == "False", "looking up report_gen.diagnose imported torch"


def test_diagnose_matches_the_cli(tmp_path):
    run = SAMPLES / "dead_relu"
    code = main(["diagnose", str(run), "-o", str(tmp_path / "cli"), "--format", "json", "-q"])
    cli = json.loads((tmp_path / "cli" / "report.json").read_text())
    report = report_gen.diagnose(run)
    assert isinstance(report, report_gen.Report)
    assert report.verdict == cli["summary"]["verdict"] == "fail"
    assert report.counts == cli["summary"]["counts"]
    assert report.findings == cli["findings"]
    assert [e["code"] for e in report.data["evaluated"]] == [e["code"] for e in cli["evaluated"]]
    assert report.exit_code() == code == 1
    assert report.exit_code(fail_on="never") == 0
    assert "FAIL" in repr(report)


def test_options_mirror_the_cli(tmp_path):
    run = SAMPLES / "dead_relu"
    only_curves = report_gen.diagnose(run, select=["L"])
    assert {e["code"][0] for e in only_curves.data["evaluated"]} == {"L"}
    assert only_curves.exit_code() == 0  # the dead-activation error is A101's
    ignored = report_gen.diagnose([str(run)], ignore="A101,I")  # a CLI-style comma list works too
    assert "A101" not in {f["code"] for f in ignored.findings}
    assert any(e["code"] == "A101" and "disabled" in e["reason"] for e in ignored.not_evaluated)
    config = tmp_path / "rg.toml"
    config.write_text('[tool.report_gen]\nfail-on = "warning"\nignore = ["A101"]\n')
    configured = report_gen.diagnose(run, config=config)
    assert configured.fail_on == "warning" and "A101" not in {f["code"] for f in configured.findings}
    assert report_gen.diagnose(SAMPLES / "healthy_cnn", fail_on="warning").exit_code() == 0


def test_baseline_and_errors(tmp_path):
    main_report = report_gen.diagnose(SAMPLES / "healthy_cnn")
    main_report.write(tmp_path / "main", formats=["json"])
    pr = report_gen.diagnose(SAMPLES / "dead_relu", baseline=tmp_path / "main" / "report.json")
    assert pr.data["baseline"] is not None and {f["status"] for f in pr.findings} == {"new"}
    assert pr.exit_code() == 1
    for bad, message in (({"select": ["Z9"]}, "matches no rule"),
                         ({"probe_shape": "1,3"}, "need --model"),
                         ({"model": "x:y"}, "needs --probe"),
                         ({"model": "x:y", "probe_shape": "1,3", "model_kwargs": "{bad"}, "invalid JSON"),
                         ({"fail_on": "sometimes"}, "fail_on must be")):
        with pytest.raises(InputError, match=message):
            report_gen.diagnose(SAMPLES / "dead_relu", **bad)
    with pytest.raises(InputError, match="no such file"):
        report_gen.diagnose(tmp_path / "missing")


def test_renderings_and_write(tmp_path):
    report = report_gen.diagnose(SAMPLES / "dead_relu")
    assert json.loads(report.to_json())["findings"] == report.findings
    html = report.to_html()
    assert html.lstrip().lower().startswith("<!doctype html") and "A101" in html
    markdown = report.to_markdown()
    assert markdown.startswith("<!-- report_gen:report -->") and "A101" in markdown
    written = report.write(tmp_path / "out", formats=("json", "markdown"))
    assert sorted(written) == ["json", "md"] and (tmp_path / "out" / "report_files").is_dir()
    again = report_gen.Report.load(written["json"])
    assert again.findings == report.findings and again.verdict == "fail"
    assert again._repr_html_() == report._repr_html_()  # the notebook view (tests/render/test_notebook.py)


def test_progress_callback_is_called():
    seen = []
    report_gen.diagnose(SAMPLES / "healthy_cnn", progress=lambda msg, done, total: seen.append(msg))
    assert any("healthy_cnn" in m for m in seen)


@pytest.mark.parametrize("module", ["report_gen.integrations.lightning", "report_gen.integrations.hf"])
def test_integration_modules_name_their_missing_framework(module, tmp_path):
    # a Python where the framework cannot be imported: a clear ImportError naming what to install
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\nclass _Block:\n    def find_spec(self, name, *a):\n"
                       "        if name.split('.')[0] in ('lightning', 'pytorch_lightning', 'transformers'):\n"
                       "            raise ModuleNotFoundError('No module named ' + repr(name))\n"
                       "sys.meta_path.insert(0, _Block())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", f"import {module} as m\nm.ReportGenCallback"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "ImportError" in r.stderr and "pip install" in r.stderr, r.stderr[-500:]
