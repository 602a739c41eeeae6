"""Runs as users lay them out (issue 12), on the fixtures the real libraries wrote (tests/fixtures/real/):
one experiment folder is one correctly named run, with the series and checkpoints of all its parts."""
from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path

import pytest

from report_gen.cli import main
from report_gen.engine import Options, diagnose
from report_gen.readers.discovery import discover

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"


def case(lib: str, name: str) -> Path:
    path = REAL / lib / name
    assert path.is_dir(), f"missing real fixture {lib}/{name}"
    return path


def files_of(lib: str, name: str) -> list[str]:
    return json.loads((REAL / lib / "MANIFEST.json").read_text())["cases"][name]["files"]


@lru_cache(maxsize=None)
def report(lib: str, name: str, sub: str = "") -> dict:
    return diagnose([str(case(lib, name) / sub if sub else case(lib, name))], Options())


def loud(rep: dict) -> list[tuple[str, str, str]]:
    return [(f["code"], f["subject"], f["message"]) for f in rep["findings"] if f["severity"] in ("error", "warning")]


def runs(rep: dict) -> dict[str, dict]:
    return {r["name"]: r for r in rep["inputs"]["runs"]}


def read_roles(run: dict) -> dict[str, str]:
    return {s["tag"]: s["role"] for s in run["series"]}


def names(paths) -> list[str]:
    return sorted(Path(p).name for p in paths)


# ------------------------------------------------------------------------------ one experiment, one run


@pytest.mark.parametrize("lib, name, logs, ckpts", [
    ("torch_tb", "logs_checkpoints_healthy", "logs", "checkpoints"),  # logs/ + checkpoints/
    ("torch_tb", "tb_ckpt_model_state_healthy", "tb", "ckpt"),  # tb/ + ckpt/
    ("tensorboardx", "init_too_wide", "runs/exp", "checkpoints"),  # runs/exp/ + checkpoints/
])
def test_logs_and_checkpoints_under_one_experiment_folder_are_one_run_named_after_it(lib, name, logs, ckpts):
    (spec,) = discover([str(case(lib, name))])
    assert spec.name == name and Path(spec.path) == case(lib, name)
    want_logs = sorted(Path(f).name for f in files_of(lib, name) if f.startswith(f"{name}/{logs}/"))
    want_ckpts = sorted(Path(f).name for f in files_of(lib, name) if f.startswith(f"{name}/{ckpts}/"))
    assert names(f for f, _ in spec.event_files) == want_logs and want_logs
    assert names(spec.checkpoints) == want_ckpts and want_ckpts
    # the series keep the names their logs gave them: the sub folder of the logs is not a prefix
    assert {sub for _, sub in spec.event_files} == {""}


@pytest.mark.parametrize("lib, name, run_name, has_ckpts", [
    ("torch_tb", "logs_checkpoints_healthy", "logs_checkpoints_healthy", True),  # logs/ + checkpoints/
    ("torch_tb", "tb_ckpt_model_state_healthy", "tb_ckpt_model_state_healthy", True),  # tb/ + ckpt/
    ("tensorboardx", "init_too_wide", "init_too_wide", True),  # runs/exp/ + checkpoints/
    ("lightning", "tb_defaults_healthy", "lightning_logs/version_0", True),  # version_N/ + checkpoints/
    ("lightning", "csv_resumed_healthy", "lightning_logs/version_0", True),  # CSVLogger version_N/
    ("hf", "bert-healthy-tensorboard", "bert-healthy-tensorboard", True),  # output_dir: runs/<date>/ + checkpoint-N/
    ("hf", "bert-healthy-none", "bert-healthy-none", True),  # report_to="none": checkpoint-N/ only
    ("ultralytics", "yolo-detect-healthy", "runs/detect/train", True),  # runs/detect/train/ + weights/
])
def test_each_layout_diagnoses_as_one_correctly_named_run_with_its_signals_listed(lib, name, run_name, has_ckpts):
    """The report (not only discovery): one run, named as the user laid it out, every series it read listed
    with its source, points and role, the training loss among them, and the checkpoints counted in it."""
    rep = report(lib, name)
    (run,) = rep["inputs"]["runs"]
    assert run["name"] == run_name
    assert (run["checkpoints"] > 0) == has_ckpts and run["event_files"] > 0
    assert run["series"] and all(s["source"] and s["points"] > 0 and s["role"] for s in run["series"])
    roles = {s["role"] for s in run["series"]}
    assert "train_loss" in roles and ("val_loss" in roles or "val_acc" in roles)
    assert rep["summary"]["verdict"] != "unknown"


def test_a_single_checkpoint_beside_the_runs_folder_joins_it():
    (spec,) = discover([str(case("torch_tb", "bn_relu_healthy"))])
    assert spec.name == "bn_relu_healthy" and names(spec.checkpoints) == ["model.pt"]
    assert len(spec.event_files) == 1


def test_lightning_version_folder_keeps_its_metrics_csv_and_checkpoints():
    (spec,) = discover([str(case("lightning", "csv_resumed_healthy"))])
    assert spec.name == "lightning_logs/version_0"
    assert names(f for f, _ in spec.event_files) == ["metrics.csv"]
    assert names(spec.checkpoints) == sorted(Path(f).name for f in files_of("lightning", "csv_resumed_healthy")
                                             if f.endswith(".ckpt"))


def test_ultralytics_run_keeps_its_weights():
    (spec,) = discover([str(case("ultralytics", "yolo-detect-healthy"))])
    assert spec.name == "runs/detect/train"
    assert names(f for f, _ in spec.event_files) == ["results.csv"]
    assert names(spec.checkpoints) == ["best.pt", "last.pt"]


def test_hf_output_dir_is_one_run_with_its_trainer_state_checkpoints_and_event_files():
    (spec,) = discover([str(case("hf", "bert-healthy-tensorboard"))])
    assert spec.name == "bert-healthy-tensorboard"
    subs = sorted({sub.split("/")[0] for _, sub in spec.event_files})
    assert subs == ["", "checkpoint-120", "runs"]
    assert names(spec.checkpoints) == ["bert-healthy-tensorboard", "checkpoint-120"]  # final model + checkpoint


def test_hf_duplicate_series_from_trainer_state_and_events_is_one_series():
    """train/loss sits in trainer_state.json and again in runs/<date>/ event files: ONE training loss,
    read from the run folder's own log (a stable name), the copy listed as ignored."""
    run = runs(report("hf", "bert-healthy-tensorboard"))["bert-healthy-tensorboard"]
    losses = [s for s in run["series"] if s["tag"].endswith("train/loss")]
    assert [(s["tag"], s["source"], s["role"]) for s in losses] == [("train/loss", "trainer_state.json", "train_loss")]
    state = json.loads((case("hf", "bert-healthy-tensorboard") / "trainer_state.json").read_text())
    assert losses[0]["points"] == sum("loss" in e for e in state["log_history"])
    copies = [s for s in run["ignored"] if s["tag"].endswith("train/loss")]
    assert len(copies) == 1 and copies[0]["source"] == "TensorBoard" and copies[0]["tag"].startswith("runs/")
    assert "same series as train/loss (trainer_state.json)" in copies[0]["reason"]
    assert not any(s["role"] == "other_loss" and s["tag"].endswith("/train/loss") for s in run["series"])


def test_hparams_trials_stay_separate_runs_each_with_its_hparams_folder():
    specs = {s.name: s for s in discover([str(case("torch_tb", "hparams_trials"))])}
    assert sorted(specs) == ["runs/lr_0.002", "runs/lr_0.005", "runs/lr_0.01"]
    for spec in specs.values():
        subs = sorted(sub for _, sub in spec.event_files)
        assert len(subs) == 2 and subs[0] == "" and subs[1].replace(".", "").isdigit()


def test_add_hparams_called_in_a_loop_on_one_writer_makes_one_run_per_trial(tmp_path):
    """torch's documented pattern: one writer, add_hparams per trial -> one timestamp sub-folder per trial."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "runs" / "sweep")) as w:
        for i in range(3):
            w.add_hparams({"lr": 0.1 * (i + 1)}, {"hparam/accuracy": 0.5 + i / 10, "hparam/loss": 1.0 - i / 10})
    trial_dirs = sorted(p.name for p in (tmp_path / "runs" / "sweep").iterdir() if p.is_dir())
    assert len(trial_dirs) == 3  # what the library wrote
    specs = discover([str(tmp_path / "runs")])
    assert sorted(s.name for s in specs if s.name != "sweep") == [f"sweep/{d}" for d in trial_dirs]
    assert all(len(s.event_files) == 1 for s in specs if s.name != "sweep")


def test_two_models_in_one_folder_are_never_one_checkpoint_series():
    rep = report("torch_tb", "two_models_one_folder")
    by = runs(rep)
    assert sorted(by) == ["two_models_one_folder", "two_models_one_folder/autoencoder",
                          "two_models_one_folder/classifier"]
    assert by["two_models_one_folder"]["checkpoints"] == 0 and by["two_models_one_folder"]["event_files"] == 1
    for model in ("autoencoder", "classifier"):
        split = by[f"two_models_one_folder/{model}"]
        assert split["checkpoints"] == sum(f"/{model}_epoch_" in f for f in files_of("torch_tb", "two_models_one_folder"))
        assert split["event_files"] == 0
    notes = [p for p in by["two_models_one_folder"]["problems"] if p["kind"] == "mixed-models"]
    assert len(notes) == 1 and notes[0]["severity"] == "info" and "2 different models" in notes[0]["message"]
    # the update ratios and the layer table of each series are those of one model only
    layers = {r: {row["param"] for row in rep["details"]["runs"][r]["layers"]} for r in by}
    assert layers["two_models_one_folder/autoencoder"] == {f"{p}.{w}" for p in ("encoder.0", "encoder.2", "decoder.0",
                                                                               "decoder.2") for w in ("weight", "bias")}
    assert layers["two_models_one_folder/classifier"] == {f"{i}.{w}" for i in (0, 2, 4) for w in ("weight", "bias")}
    assert loud(rep) == []


# ---------------------------------------------------------------------------- phase folders given directly


@pytest.mark.parametrize("lib, name, sub", [
    ("keras", "defaults_healthy", "logs/train"),
    ("keras", "defaults_healthy", "logs/validation"),
    ("ultralytics", "yolo-detect-healthy", "runs/detect/train"),
])
def test_a_phase_folder_given_directly_is_a_run_of_its_own(lib, name, sub, tmp_path, capsys):
    path = case(lib, name) / sub
    (spec,) = discover([str(path)])
    assert spec.name == path.name and Path(spec.path) == path
    out = tmp_path / "out"
    assert main(["diagnose", str(path), "-o", str(out), "--format", "json", "-q", "--select", "L,I"]) == 0
    assert "internal error" not in capsys.readouterr().err
    rep = json.loads((out / "report.json").read_text())
    assert rep["inputs"]["runs"][0]["name"] == path.name and rep["inputs"]["runs"][0]["series"]


# -------------------------------------------------------------------- checkpoint weights under any key


def test_model_state_checkpoints_are_read_and_their_key_path_is_shown(tmp_path):
    """{"step", "model_state", "optimizer_state"}: the weights are found by structure, not by key name."""
    rep = report("torch_tb", "tb_ckpt_model_state_healthy")
    (run,) = rep["inputs"]["runs"]
    assert run["checkpoints"] == 3 and run["weights_at"] == ["model_state"]
    assert not [p for p in run["problems"] if p["kind"] in ("optimizer-only", "nothing-readable")]
    assert loud(rep) == []
    assert rep["details"]["runs"][run["name"]]["summary"]["optimizer"]  # the optimizer state is still read
    out = tmp_path / "out"
    assert main(["diagnose", str(case("torch_tb", "tb_ckpt_model_state_healthy")), "-o", str(out),
                 "--format", "html,md", "-q", "--select", "I,U"]) == 0
    assert "Weights found at: key model\\_state" in (out / "report.md").read_text()  # Markdown-escaped
    assert "weights found at" in (out / "report.html").read_text()


# ------------------------------------------------------------------------------ unused event files


def test_an_event_file_that_was_opened_and_never_used_is_info_and_the_run_unknown(tmp_path):
    """The unused_event_file fixture's second writer wrote only its version record."""
    unused = min(case("torch_tb", "unused_event_file").glob("runs/exp/*"), key=lambda p: p.stat().st_size)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(unused, run_dir / unused.name)
    out = tmp_path / "out"
    assert main(["diagnose", str(run_dir), "-o", str(out), "--format", "json", "-q"]) == 0  # not a CI failure
    rep = json.loads((out / "report.json").read_text())
    assert rep["summary"]["verdict"] == "unknown" and rep["findings"] == []
    kinds = {(p["kind"], p["severity"]) for p in rep["inputs"]["runs"][0]["problems"]}
    assert kinds == {("version-only", "info"), ("nothing-readable", "info")}
    # beside a used file it is only a note, and the run is judged
    both = report("torch_tb", "unused_event_file")
    assert both["summary"]["verdict"] == "pass" and loud(both) == []


# --------------------------------------------------------------------------------- baselines pair


def test_a_baseline_from_another_folder_pairs_one_run_each_side(tmp_path):
    other = tmp_path / "main_branch_run"
    shutil.copytree(case("torch_tb", "logs_checkpoints_healthy"), other)
    out = tmp_path / "out"
    assert main(["diagnose", str(case("torch_tb", "logs_checkpoints_healthy")), "--baseline", str(other), "-o", str(out),
                 "--format", "json", "-q", "--select", "L,I"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["baseline"]["runs"] == {"logs_checkpoints_healthy": "main_branch_run"}


def test_a_baseline_of_several_runs_pairs_by_path_below_the_folder_given(tmp_path):
    other = tmp_path / "baseline_trials"
    shutil.copytree(case("torch_tb", "hparams_trials"), other)
    shutil.rmtree(other / "runs" / "lr_0.01")  # a trial the candidate added
    out = tmp_path / "out"
    assert main(["diagnose", str(case("torch_tb", "hparams_trials")), "--baseline", str(other), "-o", str(out),
                 "--format", "json", "-q", "--select", "L"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["baseline"]["runs"] == {"runs/lr_0.002": "runs/lr_0.002", "runs/lr_0.005": "runs/lr_0.005"}


def test_sb3_and_lightning_numbered_folders_are_runs_even_beside_a_bare_event_file(tmp_path):
    """SB3's tensorboard_log folder: <ALGO>_N/ per learn() call, and a bare event file when tb_log_name is empty."""
    (events,) = (case("sb3", "a2c_cartpole_healthy") / "A2C_1").iterdir()
    logs = tmp_path / "logs"
    for folder in ("", "A2C_1", "A2C_2", "lightning_logs/version_0"):
        (logs / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(events, logs / folder / events.name)
    assert sorted(s.name for s in discover([str(logs)])) == ["A2C_1", "A2C_2", "lightning_logs/version_0", "logs"]
