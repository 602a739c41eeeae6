"""HF Trainer trainer_state.json reader, on runs the transformers Trainer wrote (tests/fixtures/real/hf)."""
from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest

from report_gen.readers import textlogs
from report_gen.readers.discovery import discover
from report_gen.readers.hf_trainer import hf_tag, read_trainer_states
from report_gen.readers.registry import reader_for

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "hf"


def _series(log, tag):
    rows = log.scalars[log.scalars.tag == tag]
    return rows.step.tolist(), rows.value.tolist()


def _raw(path):
    return json.loads(Path(path).read_text())


def _read_case(case):
    (run,) = discover([str(REAL / case)])
    return run, read_trainer_states(run.event_files)


def test_tags_follow_the_trainers_own_tensorboard_rewrite():
    assert hf_tag("loss") == "train/loss"
    assert hf_tag("learning_rate") == "train/learning_rate"
    assert hf_tag("grad_norm") == "train/grad_norm"
    assert hf_tag("eval_loss") == "eval/loss"
    assert hf_tag("eval_accuracy") == "eval/accuracy"
    assert hf_tag("test_f1") == "test/f1"
    assert hf_tag("eval_") == "train/eval_"
    assert reader_for(str(REAL / "bert-healthy-none" / "checkpoint-60" / "trainer_state.json")).name == "hf-trainer"
    assert reader_for("/x/trainer_state.json.bak") is None


def test_bare_nan_tokens_are_kept_and_every_number_of_log_history_is_read():
    run, log = _read_case("bert-nan-unfiltered")
    raw = _raw(REAL / "bert-nan-unfiltered" / "checkpoint-60" / "trainer_state.json")
    history = raw["log_history"]
    assert len(history) == 18
    numbers = sum(1 for e in history for k, v in e.items() if k != "step" and isinstance(v, (int, float)))
    assert len(log.scalars) == numbers
    steps, values = _series(log, "train/loss")
    assert steps == [e["step"] for e in history if "loss" in e]
    first_nan = next(s for s, v in zip(steps, values) if math.isnan(v))
    assert first_nan == 40 == next(e["step"] for e in history if "loss" in e and e["loss"] != e["loss"])
    eval_steps, eval_values = _series(log, "eval/loss")
    assert eval_values[0] == 2.0646677017211914 and eval_steps[0] == 10
    assert [s for s, v in zip(eval_steps, eval_values) if math.isnan(v)] == [40, 50, 60]
    assert set(log.scalars.tag) >= {"train/grad_norm", "train/learning_rate", "train/epoch", "eval/runtime"}
    assert log.scalars.wall_time.isna().all()
    assert log.problems == []


def test_run_facts_and_training_args_go_to_hparams():
    _, log = _read_case("bert-nan-unfiltered")
    hp = log.hparams
    assert (hp["global_step"], hp["max_steps"], hp["num_train_epochs"], hp["train_batch_size"]) == (60, 60, 1, 32)
    assert hp["best_metric"] is None and hp["logging_steps"] == 5
    # training_args.bin is a pickle: read through the restricted unpickler, enums by their value
    assert hp["args.learning_rate"] == 0.002
    assert hp["args.lr_scheduler_type"] == "linear"
    assert hp["args.max_grad_norm"] == 1.0


def test_checkpoint_folders_of_one_output_dir_are_one_run_and_merge():
    run, log = _read_case("bert-healthy-none")
    assert run.name == "bert-healthy-none"
    assert sorted(os.path.basename(os.path.dirname(f)) for f, _ in run.event_files) == ["checkpoint-120", "checkpoint-60"]
    newest = _raw(REAL / "bert-healthy-none" / "checkpoint-120" / "trainer_state.json")["log_history"]
    steps, values = _series(log, "train/loss")
    assert steps == [e["step"] for e in newest if "loss" in e]
    assert values == [e["loss"] for e in newest if "loss" in e]
    assert log.hparams["global_step"] == 120
    assert log.files[-1].endswith(os.path.join("checkpoint-120", "trainer_state.json"))


def test_the_newest_state_wins_per_step_and_older_ones_add_only_missing_steps(tmp_path):
    out = tmp_path / "out"
    for n, history in ((60, [{"step": 5, "loss": 9.0}, {"step": 10, "loss": 8.0}]),
                       (120, [{"step": 10, "loss": 1.0}, {"step": 15, "loss": 0.5}])):
        (out / f"checkpoint-{n}").mkdir(parents=True)
        (out / f"checkpoint-{n}" / "trainer_state.json").write_text(
            json.dumps({"global_step": n, "log_history": history}))
    (run,) = discover([str(out)])
    log = read_trainer_states(run.event_files)
    assert _series(log, "train/loss") == ([5, 10, 15], [9.0, 1.0, 0.5])


def test_the_summary_entry_is_a_run_fact_not_a_series():
    run, log = _read_case("bert-healthy-tensorboard")
    root = _raw(REAL / "bert-healthy-tensorboard" / "trainer_state.json")["log_history"]
    summary = root[-1]
    assert "train_runtime" in summary
    assert log.hparams["train_runtime"] == summary["train_runtime"]
    assert log.hparams["train_loss"] == summary["train_loss"]
    assert "train/train_runtime" not in set(log.scalars.tag) and "train/train_loss" not in set(log.scalars.tag)
    # the root state (31 entries, with the summary) and checkpoint-120's (30) are both at step 120
    assert len(_series(log, "eval/loss")[0]) == sum(1 for e in root if "eval_loss" in e)


def test_a_cut_file_keeps_its_complete_entries_and_says_where(tmp_path):
    src = (REAL / "bert-nan-unfiltered" / "checkpoint-60" / "trainer_state.json").read_text()
    cut = src[: src.index('"step": 25') + 5]
    path = tmp_path / "trainer_state.json"
    path.write_text(cut)
    log = read_trainer_states([(str(path), "")])
    kinds = [p.kind for p in log.problems]
    assert kinds == ["bad-json", "truncated-record"]
    assert "line" in log.problems[0].message and log.problems[0].offset is not None
    complete = [e for e in _raw(REAL / "bert-nan-unfiltered" / "checkpoint-60" / "trainer_state.json")["log_history"]
                if e["step"] < 25]
    assert log.problems[1].count == len(complete)
    assert _series(log, "train/loss")[0] == [e["step"] for e in complete if "loss" in e]


@pytest.mark.parametrize("text, kind", [
    ("", "bad-json"), ("[1, 2]", "bad-json"), ('{"log_history": 3}', "bad-json"), ("\x00\xff garbage", "bad-json"),
    ('{"log_history": [{"loss": 1.0}, "x", {"step": "7", "loss": 2}, {"step": true, "loss": 1}]}', "bad-json"),
])
def test_damaged_states_are_problems_never_exceptions(tmp_path, text, kind):
    path = tmp_path / "trainer_state.json"
    path.write_text(text)
    log = read_trainer_states([(str(path), "")])
    assert log.scalars.empty
    assert [p.kind for p in log.problems] == [kind]
    assert all(p.file == str(path) for p in log.problems)


def test_size_cap_and_symlinks_out_of_the_run(tmp_path, monkeypatch):
    big = tmp_path / "run" / "trainer_state.json"
    big.parent.mkdir()
    big.write_text(json.dumps({"log_history": [{"step": 1, "loss": 1.0}] * 50}))
    monkeypatch.setattr(textlogs, "MAX_LOG_BYTES", 100)
    log = read_trainer_states([(str(big), "")])
    assert [p.kind for p in log.problems] == ["too-large"] and log.scalars.empty
    monkeypatch.undo()
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps({"log_history": [{"step": 1, "loss": 1.0}]}))
    link = tmp_path / "run2" / "checkpoint-5" / "trainer_state.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    log = read_trainer_states([(str(link), "checkpoint-5")])
    assert [p.kind for p in log.problems] == ["unsafe-path"] and log.scalars.empty


class _Boom:
    def __reduce__(self):
        return (os.mkdir, (os.environ["RG_BOOM_DIR"],))


def test_a_hostile_training_args_pickle_is_never_run(tmp_path, monkeypatch):
    run = tmp_path / "out" / "checkpoint-5"
    run.mkdir(parents=True)
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 5, "log_history": [{"step": 5, "loss": 1.0}]}))
    boom = tmp_path / "boom"
    monkeypatch.setenv("RG_BOOM_DIR", str(boom))
    with zipfile.ZipFile(run / "training_args.bin", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"learning_rate": 0.1, "hook": _Boom()}, protocol=2))
    log = read_trainer_states([(str(run / "trainer_state.json"), "checkpoint-5")])
    assert not boom.exists()
    assert log.hparams["args.learning_rate"] == 0.1 and "args.hook" not in log.hparams
    (run / "training_args.bin").write_bytes(b"PK\x03\x04 not a zip")
    log = read_trainer_states([(str(run / "trainer_state.json"), "checkpoint-5")])
    assert [p.kind for p in log.problems] == ["unreadable"] and log.problems[0].severity == "info"
    assert _series(log, "train/loss") == ([5], [1.0])


def test_a_log_only_hf_run_gets_every_curve_rule_evaluated(tmp_path):
    import subprocess
    import sys

    case = tmp_path / "bert-lr-1e-6"
    for folder in sorted((REAL / "bert-lr-1e-6").glob("checkpoint-*")):
        (case / folder.name).mkdir(parents=True)
        shutil.copy(folder / "trainer_state.json", case / folder.name)
    subprocess.run([sys.executable, "-m", "report_gen", "diagnose", str(case), "-o", str(tmp_path / "r"),
                    "--format", "json", "-q", "--fail-on", "never"], check=True, timeout=300)
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    evaluated = {e["code"] for e in report["evaluated"]}
    assert {"L101", "L102", "L103", "L104", "L105", "G102"} <= evaluated
    assert report["inputs"]["runs"][0]["name"] == "bert-lr-1e-6" and report["inputs"]["runs"][0]["judged"]
