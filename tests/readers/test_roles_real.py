"""Tag roles that hold on real loggers (issue 12, DESIGN §6), on the fixtures the real libraries wrote:
Lightning's _step/_epoch series, totals over components, RL loss terms, Keras kernel histograms, user roles,
and an honest account of every series read or ignored."""
from __future__ import annotations

import csv
import json
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from report_gen.cli import main
from report_gen.config import Config
from report_gen.engine import Options, diagnose
from report_gen.readers.discovery import discover
from report_gen.readers.run import read_run
from report_gen.readers.signals import build_signals

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"
CURVE_RULES = {"L101", "L102", "L103", "L104", "L105"}


def case(lib: str, name: str) -> Path:
    path = REAL / lib / name
    assert path.is_dir(), f"missing real fixture {lib}/{name}"
    return path


def signals_of(path: Path, roles=None):
    (spec,) = discover([str(path)])
    return build_signals(read_run(spec).log, roles=roles)


@lru_cache(maxsize=None)
def report(lib: str, name: str, select: tuple[str, ...] = ()) -> dict:
    return diagnose([str(case(lib, name))], Options(select=list(select) or None))


def loud(rep: dict) -> list[tuple[str, str, str]]:
    return [(f["code"], f["subject"], f["message"]) for f in rep["findings"] if f["severity"] in ("error", "warning")]


def evaluated(rep: dict) -> set[str]:
    return {e["code"] for e in rep["evaluated"]}


# --------------------------------------------------------------------------------- reinforcement learning


@pytest.mark.parametrize("name", ["a2c_cartpole_healthy", "ppo_cartpole_healthy"])
def test_sb3_loss_terms_are_never_the_training_loss_and_a_healthy_agent_gets_no_error(name):
    """A2C's entropy loss rises on a healthy run (the policy gets less random); it was the 'training loss' by an
    alphabetical tie-break and its rise an L102 divergence ERROR. PPO's total rises with the returns."""
    s = signals_of(case("sb3", name))
    assert s.train_loss is None and s.val_loss is None
    roles = {u.tag: u.role for u in s.read}
    assert roles["train/entropy_loss"] == roles["train/value_loss"] == "rl_loss"
    if name.startswith("ppo"):
        assert roles["train/loss"] == "rl_loss"
    rep = report("sb3", name)
    assert loud(rep) == []
    assert "L101" in evaluated(rep) and rep["summary"]["verdict"] == "pass"  # NaN/Inf still checked
    rewards = [u for u in s.ignored if u.tag == "rollout/ep_rew_mean"]
    assert rewards and "reward" in rewards[0].note


def test_a_user_role_judges_an_rl_loss_anyway(tmp_path):
    s = signals_of(case("sb3", "a2c_cartpole_healthy"), roles={"train_loss": ["train/value_loss"]})
    assert s.train_loss.tag == "train/value_loss"
    assert [u.note for u in s.read if u.tag == "train/value_loss"] == ["mapped by the configuration (train/value_loss)"]
    out = tmp_path / "out"
    assert main(["diagnose", str(case("sb3", "a2c_cartpole_healthy")), "-o", str(out), "--format", "json", "-q",
                 "--fail-on", "never", "--select", "L", "--role", "train_loss=train/value_loss"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert "L102" in evaluated(rep)
    assert {s["tag"]: s["role"] for s in rep["inputs"]["runs"][0]["series"]}["train/value_loss"] == "train_loss"


# ------------------------------------------------------------------------------------------- Lightning


def test_lightning_epoch_series_is_the_trend_and_the_step_series_is_kept_for_spikes():
    s = signals_of(case("lightning", "csv_resumed_healthy"))
    assert s.train_loss.tag == "train_loss_epoch" and s.val_loss.tag == "val_loss"
    assert s.train_acc.tag == "train_acc" and s.val_acc.tag == "val_acc"
    steps = s.other_losses["train_loss_step"]
    assert len(steps) > 10 * len(s.train_loss)
    assert {u.tag: u.role for u in s.read}["train_loss_step"] == "train_loss_steps"


@pytest.mark.parametrize("keep", [("metrics.csv", "hparams.yaml"), ("events.out.tfevents.*", "hparams.yaml")],
                         ids=["csv", "tensorboard"])
def test_a_log_only_lightning_run_gets_every_curve_rule_evaluated(keep, tmp_path):
    source = case("lightning", "csv_resumed_healthy" if keep[0] == "metrics.csv" else "tb_defaults_healthy")
    version = tmp_path / "lightning_logs" / "version_0"
    version.mkdir(parents=True)
    for pattern in keep:
        for f in (source / "lightning_logs" / "version_0").glob(pattern):
            shutil.copy(f, version / f.name)
    rep = diagnose([str(tmp_path)], Options())
    assert CURVE_RULES <= evaluated(rep), sorted(CURVE_RULES - evaluated(rep))
    assert rep["inputs"]["runs"][0]["checkpoints"] == 0 and rep["summary"]["verdict"] == "pass"
    assert loud(rep) == []


def test_a_run_whose_only_tag_is_hp_metric_is_unknown():
    rep = report("lightning", "hp_metric_only")
    assert rep["summary"]["verdict"] == "unknown" and rep["inputs"]["runs"][0]["judged"] is False
    (ignored,) = rep["inputs"]["runs"][0]["ignored"]
    assert ignored["tag"] == "hp_metric" and "hparams plugin" in ignored["reason"]
    assert rep["inputs"]["runs"][0]["series"] == []


# ---------------------------------------------------------------------------------- Hugging Face Trainer


def test_a_log_only_hf_trainer_run_gets_every_curve_rule_evaluated(tmp_path):
    out_dir = tmp_path / "output_dir" / "checkpoint-120"
    out_dir.mkdir(parents=True)
    shutil.copy(case("hf", "bert-healthy-none") / "checkpoint-120" / "trainer_state.json", out_dir)
    rep = diagnose([str(tmp_path / "output_dir")], Options())
    assert CURVE_RULES <= evaluated(rep)
    roles = {s["tag"]: s["role"] for s in rep["inputs"]["runs"][0]["series"]}
    assert roles == {"train/loss": "train_loss", "eval/loss": "val_loss", "eval/accuracy": "val_acc",
                     "train/learning_rate": "lr", "train/grad_norm": "grad_norm"}
    assert loud(rep) == []


# ----------------------------------------------------------------------------------------- Ultralytics


def test_ultralytics_training_loss_is_the_sum_of_its_logged_components():
    s = signals_of(case("ultralytics", "yolo-detect-healthy"))
    with open(case("ultralytics", "yolo-detect-healthy") / "runs/detect/train/results.csv", newline="") as f:
        rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(f)]
    for phase, signal in (("train", s.train_loss), ("val", s.val_loss)):
        want = [sum(float(r[f"{phase}/{c}_loss"]) for c in ("box", "cls", "dfl")) for r in rows]
        assert signal.tag == f"{phase}/box_loss+cls_loss+dfl_loss"
        np.testing.assert_allclose(signal.values, want, rtol=1e-9)
        assert {f"{phase}/{c}_loss" for c in ("box", "cls", "dfl")} <= set(s.other_losses)
    note = next(u.note for u in s.read if u.tag == s.train_loss.tag)
    assert note.startswith("the sum of 3 components")


# --------------------------------------------------------------------------------------------------- Keras


@pytest.mark.parametrize("name, params", [
    ("histograms_healthy", {"sequential.dense.kernel", "sequential.dense.bias", "sequential.dense_2.kernel"}),
    ("tf_keras_histograms_healthy", {"dense.kernel", "dense.bias", "dense_2.kernel"}),
])
def test_keras_kernel_histograms_are_weight_histograms(name, params):
    s = signals_of(case("keras", name))
    assert params <= set(s.weight_hist) and len(s.weight_hist) == 6
    rep = report("keras", name)
    assert {"W101", "W103"} <= evaluated(rep)
    assert loud(rep) == []
    assert not any(n["reason"] == "no weight histograms logged" for n in rep["not_evaluated"] if n["code"] == "W103")


# --------------------------------------------------------------------------------------------- user roles


def test_roles_from_the_config_and_the_command_line(tmp_path, capsys):
    cfg = tmp_path / "pyproject.toml"
    cfg.write_text('[tool.report_gen.roles]\nval_loss = "validation/epoch_loss"\nignore = ["train/epoch_accuracy"]\n')
    out = tmp_path / "out"
    path = str(case("keras", "defaults_healthy"))
    assert main(["diagnose", path, "-o", str(out), "--format", "json", "-q", "--config", str(cfg),
                 "--select", "L", "--role", "train_loss=train/epoch_loss"]) == 0
    (run,) = json.loads((out / "report.json").read_text())["inputs"]["runs"]
    roles = {s["tag"]: (s["role"], s.get("note", "")) for s in run["series"]}
    assert roles["train/epoch_loss"] == ("train_loss", "mapped by the configuration (train/epoch_loss)")
    assert roles["validation/epoch_loss"][0] == "val_loss"
    assert [i["reason"] for i in run["ignored"] if i["tag"] == "train/epoch_accuracy"] == \
        ["ignored by the configuration (train/epoch_accuracy)"]
    # unknown roles: one line, exit 2, from the command line and from the config
    assert main(["diagnose", path, "-o", str(out), "--role", "training_loss=x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["report-gen: error: --role: unknown role 'training_loss' (known: train_loss, val_loss, train_acc, "
                   "val_acc, lr, grad_norm, ignore)"]
    cfg.write_text('[tool.report_gen.roles]\nloss = "x"\n')
    assert main(["diagnose", path, "-o", str(out), "--config", str(cfg)]) == 2
    assert "unknown role 'loss'" in capsys.readouterr().err
    assert main(["diagnose", path, "-o", str(out), "--role", "train_loss"]) == 2
    assert "expected ROLE=TAG" in capsys.readouterr().err


def test_a_sweep_takes_roles_from_the_command_line_too(tmp_path):
    """--role is one of the rule-selection options diagnose and sweep share: each run of the sweep reads it."""
    out = tmp_path / "sweep"
    assert main(["sweep", str(case("sb3", "a2c_cartpole_healthy")), "-o", str(out), "--jobs", "1", "-q",
                 "--select", "L", "--role", "train_loss=train/value_loss"]) == 0
    (rep,) = [json.loads(p.read_text()) for p in out.rglob("report.json")]
    roles = {s["tag"]: s["role"] for s in rep["inputs"]["runs"][0]["series"]}
    assert roles["train/value_loss"] == "train_loss" and roles["train/entropy_loss"] == "rl_loss"


def test_a_glob_role_picks_the_longest_matching_series():
    s = signals_of(case("lightning", "csv_resumed_healthy"), roles={"train_loss": ["train_loss_*"]})
    assert s.train_loss.tag == "train_loss_step"  # 192 points beat the 6 of train_loss_epoch
    assert Config().with_roles(["val_loss=a", "val_loss=b"]).roles == {"val_loss": ["a", "b"]}


# ---------------------------------------------------------------------------------------- what was read


def test_the_report_lists_what_was_read_and_what_was_ignored(tmp_path):
    out = tmp_path / "out"
    assert main(["diagnose", str(case("ultralytics", "yolo-detect-healthy")), "-o", str(out), "-q",
                 "--select", "L,I"]) == 0
    (run,) = json.loads((out / "report.json").read_text())["inputs"]["runs"]
    assert {"tag": "lr/pg0", "kind": "scalar", "source": "Ultralytics results.csv", "points": 20,
            "role": "lr"} in run["series"]
    assert {i["tag"] for i in run["ignored"]} == {"metrics/mAP50(B)", "metrics/mAP50-95(B)", "metrics/precision(B)",
                                                   "metrics/recall(B)", "lr/pg1", "lr/pg2"}
    md = (out / "report.md").read_text()
    assert "What was read in runs/detect/train: 9 series read, 6 ignored" in md
    assert "<code>lr/pg0</code> (Ultralytics results.csv, 20 points) → learning rate" in md
    assert "To give an ignored series a role: --role ROLE=TAG" in md
    html = (out / "report.html").read_text()
    assert "<code>lr/pg0</code> (Ultralytics results.csv, 20 points) → learning rate" in html
    assert "9 series read, 6 ignored" in html
