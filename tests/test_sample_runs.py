"""The committed sample runs are real trainings: each pathological one must show its fault (naming the
layer where there is one) and the healthy ones must be clean. This is the calibration guard: a threshold
change that makes a healthy run cry wolf, or hides a real fault, fails here."""
import pytest

from report_gen.cli import sample_runs_dir
from report_gen.engine import Options, diagnose


@pytest.fixture(scope="module")
def report():
    return diagnose([str(sample_runs_dir())], Options())


def _findings(report, run):
    return [f for f in report["findings"] if f["run"] == run]


@pytest.mark.parametrize("run", ["healthy_cnn", "healthy_mlp"])
def test_healthy_runs_have_no_error_and_no_warning(report, run):
    assert run in {r["name"] for r in report["inputs"]["runs"]}
    found = _findings(report, run)
    assert [f for f in found if f["severity"] == "error"] == []
    assert [f for f in found if f["severity"] == "warning"] == []


@pytest.mark.parametrize("run, category, subject, severity", [
    ("frozen_layer", "frozen-layer", "conv2", "error"),
    ("dead_relu", "dead-activations", "act2", "error"),
    ("vanishing_sigmoid", "vanishing-gradients", "fc1.weight", "error"),
    ("diverging", "nonfinite-loss", "train/loss", "error"),
    ("diverging", "divergence", "train/loss", "error"),
    ("diverging", "nonfinite-weights", None, "error"),
    ("overfitting", "overfitting", "val/loss", "warning"),
    ("vanishing_sigmoid", "plateau", "train/loss", "warning"),
])
def test_pathological_runs_show_their_fault(report, run, category, subject, severity):
    hits = [f for f in _findings(report, run) if f["category"] == category]
    assert hits, f"{run}: no {category} finding; got {[(f['code'], f['subject']) for f in _findings(report, run)]}"
    if subject is not None:
        assert subject in {f["subject"] for f in hits}
    assert severity in {f["severity"] for f in hits}


def test_every_run_was_read_without_damage(report):
    """Not even a notice: the probe batch each sample run keeps beside its checkpoints (probe.pt, used by
    the probe test below) is data, not an input problem."""
    for r in report["inputs"]["runs"]:
        assert r["event_files"] >= 1 and r["checkpoints"] >= 1, r["name"]
        assert (sample_runs_dir() / r["name"] / "probe.pt").is_file()
        assert r["problems"] == [], r["name"]


@pytest.mark.parametrize("run, dead_layer", [("dead_relu", "act2"), ("healthy_cnn", None), ("healthy_mlp", None)])
def test_probe_through_the_cli_finds_what_the_run_contains(tmp_path, run, dead_layer):
    import json

    from report_gen.cli import main

    root = sample_runs_dir()
    code = main(["diagnose", str(root / run), "--model", f"{root / 'models.py'}:{run}", "--probe",
                 str(root / run / "probe.pt"), "-o", str(tmp_path), "-q", "--format", "json"])
    rep = json.loads((tmp_path / "report.json").read_text())
    probe = rep["inputs"]["runs"][0]["probe"]
    assert probe["checkpoints"] >= 2 and probe["load_report"]["missing"] == []
    dead = [f for f in rep["findings"] if f["code"] == "A101" and f["evidence"].get("source") == "probe"]
    if dead_layer is None:
        assert code == 0 and dead == [] and rep["summary"]["counts"]["warning"] == 0
    else:
        assert code == 1 and [f["subject"] for f in dead] == [dead_layer]
        assert dead[0]["evidence"]["dead_share"] == 1.0


def test_frozen_layer_report_shows_the_optimizer_window(report):
    [f] = [f for f in _findings(report, "frozen_layer") if f["category"] == "frozen-layer"]
    assert "7 optimizer entries for 8 model parameters" in f["evidence"]["optimizer_note"]
    assert "optimizer state says" in f["message"]
    details = report["details"]["runs"]["frozen_layer"]
    assert details["summary"]["optimizer"]["kind"] == "adam"
    rows = {r["param"]: r["facts"] for r in details["layers"]}
    assert rows["conv1.weight"]["grad_rms_optimizer"] > 0  # Adam's exp_avg_sq as a gradient estimate
    assert "grad_rms_optimizer" not in rows["conv2.weight"]  # never reached the optimizer
