"""MLflow file store and SQLite store, read with the standard library, on stores mlflow 3.17 wrote
(tests/fixtures/real/mlflow), plus hostile edge cases."""
from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from report_gen.core import InputError
from report_gen.readers.discovery import discover
from report_gen.readers.mlflow_store import read_file_store, read_sqlite, sqlite_runs
from report_gen.readers.registry import is_log_file, reader_for
from report_gen.readers.run import read_run

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "mlflow"
CASES = json.loads((REAL / "MANIFEST.json").read_text())["cases"]
RUN_ID = CASES["file_store_healthy"]["verification"]["run_id"]
(FILE_RUN,) = (REAL / "file_store_healthy" / "mlruns").glob(f"*/{RUN_ID}")


def _series(log, tag):
    rows = log.scalars[log.scalars.tag == tag]
    return rows.step.tolist(), rows.value.tolist()


def _lines(path):
    return [line.split() for line in Path(path).read_text().splitlines() if line.strip()]


def test_file_store_run_is_one_run_with_metrics_params_and_meta():
    (run,) = discover([str(REAL / "file_store_healthy")])
    assert run.name == f"mlruns/{FILE_RUN.parent.name}/{RUN_ID}"
    assert run.event_files == [(str(FILE_RUN / "meta.yaml"), "")]
    assert not is_log_file(str(REAL / "file_store_healthy" / "mlruns" / "0" / "meta.yaml"))  # experiment meta
    log = read_file_store(run.event_files)
    assert log.problems == []
    raw = _lines(FILE_RUN / "metrics" / "train_loss")
    assert len(raw) == CASES["file_store_healthy"]["verification"]["train_loss_points"]
    assert _series(log, "train_loss") == ([int(r[2]) for r in raw], [float(r[1]) for r in raw])
    val = _lines(FILE_RUN / "metrics" / "val_loss")
    assert _series(log, "val_loss")[1][-1] == float(val[-1][1]) == pytest.approx(
        CASES["file_store_healthy"]["verification"]["val_loss_last"], abs=1e-6)
    assert log.scalars[log.scalars.tag == "train_loss"].wall_time.tolist() == [int(r[0]) / 1000 for r in raw]
    assert log.hparams["lr"] == float((FILE_RUN / "params" / "lr").read_text())
    assert log.hparams["optimizer"] == (FILE_RUN / "params" / "optimizer").read_text()
    assert log.hparams["batch_size"] == int((FILE_RUN / "params" / "batch_size").read_text())
    assert log.hparams["mlflow.run_name"] == "mlp" and log.hparams["mlflow.status"] == "FINISHED"
    assert "mlflow.user" not in log.hparams and "tag.mlflow.user" not in log.hparams


def test_nested_keys_bad_lines_and_symlinks_out_of_the_run(tmp_path):
    run = tmp_path / "mlruns" / "1" / "abc"
    (run / "metrics" / "train").mkdir(parents=True)
    (run / "params" / "model").mkdir(parents=True)
    (run / "tags").mkdir()
    (run / "meta.yaml").write_text("run_id: abc\nstatus: 4\nrun_name: broken\n")
    (run / "metrics" / "train" / "loss").write_text("1000 0.5 0\n2000 nan 1\nnot a line\n3000 inf 2\n4000 0.")
    (run / "metrics" / "old").write_text("1000 0.25\n")  # very old files: no step
    (run / "params" / "model" / "lr").write_text("0.001")
    (run / "tags" / "team").write_text("vision\n")
    secret = tmp_path / "secret"
    secret.write_text("1 42 0\n")
    (run / "metrics" / "leak").symlink_to(secret)
    (run_spec,) = discover([str(tmp_path)])
    log = read_file_store(run_spec.event_files)
    steps, values = _series(log, "train/loss")
    assert steps == [0, 1, 2] and values[0] == 0.5 and math.isnan(values[1]) and values[2] == math.inf
    assert _series(log, "old") == ([0], [0.25])
    assert "leak" not in set(log.scalars.tag)
    kinds = sorted((p.kind, p.offset) for p in log.problems)
    assert kinds == [("bad-row", 3), ("truncated-record", 5), ("unsafe-path", None)]
    assert log.hparams["model/lr"] == 0.001 and log.hparams["tag.team"] == "vision"
    assert log.hparams["mlflow.status"] == "FAILED" and log.hparams["mlflow.run_name"] == "broken"


def test_a_damaged_meta_yaml_still_reads_the_metrics(tmp_path):
    run = tmp_path / "r"
    (run / "metrics").mkdir(parents=True)
    (run / "meta.yaml").write_text("run_id: r\nstatus: [3\n")
    (run / "metrics" / "loss").write_text("1 1.0 0\n2 0.5 1\n")
    log = read_file_store([(str(run / "meta.yaml"), "")])
    assert [p.kind for p in log.problems] == ["bad-yaml"]
    assert _series(log, "loss") == ([0, 1], [1.0, 0.5])


def _db_rows(db, sql, *args):
    con = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def test_sqlite_store_each_run_is_a_run_and_the_file_is_never_written(tmp_path):
    db = tmp_path / "mlflow.db"
    shutil.copy(REAL / "sqlite_healthy" / "mlflow.db", db)
    os.chmod(db, 0o444)
    before = db.read_bytes()
    (run,) = discover([str(tmp_path)])
    uuid = CASES["sqlite_healthy"]["verification"]["run_id"]
    assert run.member == uuid and run.name == f"{tmp_path.name}/mlflow/mlp" and run.checkpoints == []
    inputs = read_run(run)
    log = inputs.log
    raw = _db_rows(db, "SELECT step, value FROM metrics WHERE run_uuid=? AND key='train_loss' ORDER BY rowid", uuid)
    assert len(raw) == CASES["sqlite_healthy"]["verification"]["train_loss_points"]
    assert _series(log, "train_loss") == ([r[0] for r in raw], [r[1] for r in raw])
    assert _series(log, "val_acc")[1][-1] == pytest.approx(CASES["sqlite_healthy"]["verification"]["final_val_acc"],
                                                           abs=1e-6)
    (lr,) = _db_rows(db, "SELECT value FROM params WHERE run_uuid=? AND key='lr'", uuid)
    assert log.hparams["lr"] == float(lr[0]) and log.hparams["mlflow.status"] == "FINISHED"
    assert inputs.problems == []
    assert db.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["mlflow.db"]  # no journal, no -wal / -shm


def _mlflow_db(path, runs):
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE runs (run_uuid TEXT PRIMARY KEY, name TEXT, status TEXT, start_time INT, experiment_id INT,
                           lifecycle_stage TEXT);
        CREATE TABLE metrics (key TEXT, value FLOAT, timestamp INT, run_uuid TEXT, step INT, is_nan BOOLEAN);
        CREATE TABLE latest_metrics (key TEXT, value FLOAT, timestamp INT, step INT, is_nan BOOLEAN, run_uuid TEXT);
        CREATE TABLE params (key TEXT, value TEXT, run_uuid TEXT);
        CREATE TABLE tags (key TEXT, value TEXT, run_uuid TEXT);
    """)
    for i, (uuid, name, metrics) in enumerate(runs):
        con.execute("INSERT INTO runs VALUES (?, ?, 'FAILED', ?, 0, 'active')", (uuid, name, i))
        con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)",
                        [(k, v, 1000 * s, uuid, s, n) for k, v, s, n in metrics])
    con.commit()
    con.close()


def test_sqlite_nan_inf_two_runs_and_a_store_with_zero_runs(tmp_path):
    db = tmp_path / "store.sqlite"
    _mlflow_db(db, [("u1", "first", [("loss", 1.0, 0, 0), ("loss", 0.0, 1, 1), ("loss", 1.7976931348623157e308, 2, 0)]),
                    ("u2", "second", [("loss", 2.0, 0, 0)])])
    _mlflow_db(tmp_path / "empty.db", [])
    assert sqlite_runs(str(tmp_path / "empty.db")) == []
    runs = discover([str(tmp_path)])
    assert [(r.name, r.member) for r in runs] == [(f"{tmp_path.name}/store/first", "u1"),
                                                  (f"{tmp_path.name}/store/second", "u2")]
    steps, values = _series(read_sqlite(runs[0].event_files, member="u1"), "loss")
    assert steps == [0, 1, 2] and values[0] == 1.0 and math.isnan(values[1]) and values[2] == math.inf
    assert _series(read_sqlite(runs[1].event_files, member="u2"), "loss") == ([0], [2.0])
    with pytest.raises(InputError, match="empty.db: an MLflow SQLite store with no runs"):
        discover([str(tmp_path / "empty.db")])


@pytest.mark.parametrize("content", [b"SQLite format 3\x00" + b"\x00" * 200, b"SQLite format 3\x00" + os.urandom(5000)])
def test_a_corrupt_sqlite_store_is_a_problem(tmp_path, content):
    db = tmp_path / "mlflow.db"
    db.write_bytes(content)
    assert reader_for(str(db)).name == "mlflow-sqlite"
    (run,) = discover([str(tmp_path)])
    log = read_sqlite(run.event_files, member=run.member)
    assert [p.kind for p in log.problems] == ["bad-database"] and log.scalars.empty


def test_other_sqlite_databases_are_not_runs(tmp_path):
    con = sqlite3.connect(tmp_path / "app.db")
    con.execute("CREATE TABLE users (id INT)")
    con.commit()
    con.close()
    (tmp_path / "notes.db").write_text("not sqlite")
    assert not is_log_file(str(tmp_path / "notes.db"))
    with pytest.raises(InputError):
        discover([str(tmp_path)])
    log = read_sqlite([(str(tmp_path / "app.db"), "")])
    assert [p.kind for p in log.problems] == ["bad-database"]
