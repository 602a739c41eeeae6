"""Lightning metrics.csv + hparams.yaml and Ultralytics results.csv + args.yaml, on files the libraries wrote
(tests/fixtures/real/lightning, tests/fixtures/real/ultralytics) and on hostile hand-made edge cases."""
from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
import yaml

from report_gen.readers import textlogs
from report_gen.readers.csvlogs import read_lightning_csv, read_ultralytics_csv
from report_gen.readers.discovery import discover
from report_gen.readers.registry import is_log_file, reader_for

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"
RESUMED = REAL / "lightning" / "csv_resumed_healthy" / "lightning_logs" / "version_0"
YOLO = REAL / "ultralytics" / "yolo-detect-healthy" / "runs" / "detect" / "train"


def _series(log, tag, run=""):
    rows = log.scalars[(log.scalars.tag == tag) & (log.scalars.run == run)]
    return rows.step.tolist(), rows.value.tolist()


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_lightning_resumed_csv_the_later_rows_win():
    rows = _rows(RESUMED / "metrics.csv")
    verification = json.loads((REAL / "lightning" / "MANIFEST.json").read_text())["cases"]["csv_resumed_healthy"][
        "verification"]
    assert len(rows) == verification["csv_rows"]
    log = read_lightning_csv([(str(RESUMED / "metrics.csv"), "")])
    # independent expectation: the resumed fit starts where `step` first goes down; per column, values of
    # the first fit at steps >= that step are replaced by the second fit's
    steps = [int(r["step"]) for r in rows]
    cut = next(i for i in range(1, len(steps)) if steps[i] < steps[i - 1])
    restart = steps[cut]
    assert restart == int(re.search(r"step=(\d+)", verification["resumed_from"]).group(1))
    dropped = 0
    for column in ("train_loss_step", "train_loss_epoch", "train_acc", "val_loss", "val_acc", "epoch"):
        first = [(int(r["step"]), float(r[column])) for r in rows[:cut] if r[column]]
        second = [(int(r["step"]), float(r[column])) for r in rows[cut:] if r[column]]
        kept = [p for p in first if p[0] < restart] + second
        dropped += len(first) - len([p for p in first if p[0] < restart])
        want = sorted(kept, key=lambda p: p[0])
        assert list(zip(*_series(log, column))) == want, column
    (problem,) = log.problems
    assert problem.kind == "step-restart" and problem.severity == "info" and problem.count == dropped > 0
    assert "step" not in set(log.scalars.tag)
    assert _series(log, "val_loss")[1][-1] == pytest.approx(verification["final_val_loss"], abs=1e-6)
    # the header was rewritten when train_acc appeared: earlier rows have it empty, not shifted
    assert _series(log, "train_acc")[0][0] >= restart
    assert log.hparams == yaml.safe_load((RESUMED / "hparams.yaml").read_text())  # flat already


def test_lightning_version_folder_is_one_run_with_its_checkpoints():
    (run,) = discover([str(REAL / "lightning" / "csv_resumed_healthy")])
    assert run.name == "lightning_logs/version_0"
    assert run.event_files == [(str(RESUMED / "metrics.csv"), "")]
    assert len(run.checkpoints) == len(list((RESUMED / "checkpoints").glob("*.ckpt"))) > 1


def test_ultralytics_results_csv_epoch_as_step_and_args_as_hparams():
    rows = _rows(YOLO / "results.csv")
    log = read_ultralytics_csv([(str(YOLO / "results.csv"), "")])
    assert log.problems == []
    steps, values = _series(log, "val/box_loss")
    assert steps == [int(r["epoch"]) for r in rows] and len(steps) == 20
    assert values == [float(r["val/box_loss"]) for r in rows]
    assert _series(log, "metrics/mAP50-95(B)")[1][-1] == float(rows[-1]["metrics/mAP50-95(B)"])
    assert {"time", "epoch"}.isdisjoint(set(log.scalars.tag))
    walls = log.scalars[log.scalars.tag == "train/box_loss"].wall_time.tolist()
    assert walls == [float(r["time"]) for r in rows]
    assert log.hparams["epochs"] == 20 and log.hparams["optimizer"] == "AdamW" and log.hparams["task"] == "detect"
    (run,) = discover([str(REAL / "ultralytics" / "yolo-detect-healthy")])
    assert run.name == "runs/detect/train" and len(run.checkpoints) == 2  # weights/best.pt, weights/last.pt


def test_ultralytics_train_folder_given_directly_is_its_own_run():
    (run,) = discover([str(YOLO)])
    assert run.name == "train" and run.event_files == [(str(YOLO / "results.csv"), "")]


def test_padded_ultralytics_names_are_stripped_and_nan_kept(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("               epoch,      train/box_loss,        val/box_loss,  metrics/mAP50(B)\n"
                    "                   0,              1.5,                 nan,           0.1\n"
                    "                   1,              1.2,                 nan,           0.2\n")
    assert reader_for(str(path)).name == "ultralytics-csv"
    log = read_ultralytics_csv([(str(path), "")])
    assert _series(log, "train/box_loss") == ([0, 1], [1.5, 1.2])
    assert all(math.isnan(v) for v in _series(log, "val/box_loss")[1])
    assert log.scalars.wall_time.isna().all()


def test_generic_csv_names_are_sniffed(tmp_path):
    (tmp_path / "metrics.csv").write_text("name,score\na,1\n")
    (tmp_path / "results.csv").write_text("epoch,accuracy\n1,0.5\n")
    assert not is_log_file(str(tmp_path / "metrics.csv"))
    assert not is_log_file(str(tmp_path / "results.csv"))
    (tmp_path / "metrics.csv").write_text("epoch,step,loss\n0,1,0.5\n")
    assert reader_for(str(tmp_path / "metrics.csv")).name == "lightning-csv"


def _lightning(tmp_path, text, yaml_text=None):
    path = tmp_path / "metrics.csv"
    path.write_text(text)
    if yaml_text is not None:
        (tmp_path / "hparams.yaml").write_text(yaml_text)
    return read_lightning_csv([(str(path), "")])


def test_short_rows_are_padded_and_a_second_header_switches_columns(tmp_path):
    log = _lightning(tmp_path, "epoch,step,loss\n0,0,1.0\n0,1\nepoch,step,loss,val_loss\n0,2,0.9,2.0\n1,3,0.8\n")
    assert _series(log, "loss") == ([0, 2, 3], [1.0, 0.9, 0.8])
    assert _series(log, "val_loss") == ([2], [2.0])
    assert _series(log, "epoch") == ([0, 1, 2, 3], [0.0, 0.0, 0.0, 1.0])
    assert log.problems == []


def test_damaged_rows_are_problems_with_line_numbers(tmp_path):
    log = _lightning(tmp_path, "epoch,step,loss\n0,0,1.0\n0,1,0.9,7,7\n0,x,0.8\n0,3,tensor(0.5)\n0,4,0.7\n0,5,0.")
    assert _series(log, "loss") == ([0, 4], [1.0, 0.7])
    by_kind = {(p.kind, p.offset): p for p in log.problems}
    assert set(by_kind) == {("bad-row", 3), ("bad-row", 5), ("truncated-record", 7)}
    rows = [p for p in log.problems if p.kind == "bad-row"]
    assert [(p.count, p.offset) for p in rows] == [(2, 3), (1, 5)]
    assert "line 5" in rows[1].message and "tensor(0.5)" in rows[1].message
    assert by_kind[("truncated-record", 7)].severity == "info"


@pytest.mark.parametrize("text", ["", "\n\n", "\x00\x01\x02", "loss,acc\n1,2\n", '"unterminated\n0,1'])
def test_garbage_never_raises(tmp_path, text):
    log = _lightning(tmp_path, text)
    assert log.scalars.empty


def test_python_yaml_tags_are_never_constructed(tmp_path):
    marker = tmp_path / "pwned"
    log = _lightning(tmp_path, "epoch,step,loss\n0,0,1.0\n",
                     "loss_fn: !!python/object:torch.nn.modules.loss.BCEWithLogitsLoss\n  reduction: mean\n"
                     f"cmd: !!python/object/apply:os.system [\"touch {marker}\"]\n"
                     "opt: !!python/name:torch.optim.adamw.AdamW ''\n"
                     "sizes: !!python/tuple [3, 4]\nlr: 0.001\ncustom: !mytag 5\n")
    assert not marker.exists()
    hp = log.hparams
    assert hp["lr"] == 0.001 and hp["sizes"] == "[3, 4]"
    assert hp["loss_fn"] == "<python/object:torch.nn.modules.loss.BCEWithLogitsLoss>"
    assert hp["cmd"] == "<python/object/apply:os.system>" and hp["opt"].startswith("<python/name:")
    assert hp["custom"] == "<!mytag>"
    (problem,) = [p for p in log.problems if p.kind == "unsafe-yaml-tag"]
    assert problem.count == 4 and problem.severity == "info"


def test_bad_and_hostile_yaml(tmp_path, monkeypatch):
    log = _lightning(tmp_path, "epoch,step,loss\n0,0,1.0\n", "a: [1, 2\nb: 3\n")
    (problem,) = log.problems
    assert problem.kind == "bad-yaml" and "line" in problem.message
    assert _series(log, "loss") == ([0], [1.0])
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(12))
    log = _lightning(tmp_path, "epoch,step,loss\n0,0,1.0\n", laughs)
    assert len(log.hparams) <= textlogs.MAX_HPARAMS
    monkeypatch.setattr(textlogs, "MAX_YAML_BYTES", 10)
    log = _lightning(tmp_path, "epoch,step,loss\n0,0,1.0\n", "lr: 0.1\nbatch: 32\n")
    assert [p.kind for p in log.problems] == ["too-large"] and log.hparams == {}
