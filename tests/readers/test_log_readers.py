"""The log-reader registry: which files are logs, one RunLog per run, and merging several readers' logs."""
from __future__ import annotations

import pandas as pd
import pytest

from builders.event_builders import make_hist_event, make_hparams_event, make_scalar_event, make_version_event, write_records
from report_gen.readers import registry
from report_gen.readers.discovery import discover
from report_gen.readers.events import read_events
from report_gen.readers.registry import LogReader, is_log_file, merge_logs, read_logs, reader_for
from report_gen.readers.types import SCALAR_COLUMNS, RunLog


def _tb(path, *records):
    return write_records(path, [make_version_event(), *records])


def _series(log, tag, run=""):
    rows = log.scalars[(log.scalars.tag == tag) & (log.scalars.run == run)]
    return rows.step.tolist(), rows.value.tolist()


def test_tensorboard_is_the_registered_reader_of_event_files():
    assert registry.LOG_READERS[0].name == "tensorboard"  # first: it keeps a series several logs hold
    assert len({r.name for r in registry.LOG_READERS}) == len(registry.LOG_READERS)
    assert reader_for("/runs/a/events.out.tfevents.1700000000.host.1.0").name == "tensorboard"
    assert reader_for("/runs/a/events.out.tfevents").name == "tensorboard"  # CatBoost: no suffix
    assert not is_log_file("/runs/tfevents/notes.txt")  # only the file name counts
    assert not is_log_file("/runs/a/model.pt")


def test_read_logs_of_tensorboard_files_is_read_events(tmp_path):
    a = _tb(tmp_path / "events.out.tfevents.1", make_scalar_event("loss", 0, 1.0), make_hist_event("w", 0, [1.0]))
    b = _tb(tmp_path / "val" / "events.out.tfevents.2", make_scalar_event("loss", 0, 2.0))
    files = [(str(a), ""), (str(b), "val")]
    got, want = read_logs(files, where=str(tmp_path)), read_events(files)
    pd.testing.assert_frame_equal(got.scalars, want.scalars)
    assert list(got.histograms) == list(want.histograms) == ["w"]
    assert got.files == want.files and got.problems == want.problems
    assert read_logs([], where=str(tmp_path)).scalars.empty
    with pytest.raises(ValueError, match="no log reader"):
        read_logs([(str(tmp_path / "notes.txt"), "")], where=str(tmp_path))


def test_merging_two_tensorboard_logs(tmp_path):
    first = read_events([(str(_tb(tmp_path / "a" / "events.out.tfevents.1",
                                  make_hparams_event({"lr": 0.1}),
                                  *[make_scalar_event("loss", s, 2.0 ** -s) for s in range(5)],
                                  make_scalar_event("z_last", 0, 9.0),
                                  make_hist_event("w", 0, [1.0, 2.0]))), "")])
    second_file = _tb(tmp_path / "b" / "events.out.tfevents.2",
                      make_hparams_event({"lr": 0.2, "batch": 8}),
                      *[make_scalar_event("loss", s, 50.0) for s in range(3)],  # the same series again
                      make_scalar_event("acc", 0, 0.5), make_scalar_event("acc", 1, 0.75),
                      make_hist_event("w", 0, [7.0]), make_hist_event("v", 0, [3.0]))
    val_file = _tb(tmp_path / "b" / "validation" / "events.out.tfevents.3", make_scalar_event("epoch_loss", 0, 4.0))
    second = read_events([(str(second_file), ""), (str(val_file), "validation")])

    merged = merge_logs([first, second])

    # each series whole from the first log holding it; the rest joins
    assert _series(merged, "loss") == ([0, 1, 2, 3, 4], [1.0, 0.5, 0.25, 0.125, 0.0625])
    assert _series(merged, "acc") == ([0, 1], [0.5, 0.75])
    assert _series(merged, "epoch_loss", run="validation") == ([0], [4.0])
    # rows stay in RunLog order: run, then tag, then each series' own order
    assert list(merged.scalars.columns) == SCALAR_COLUMNS
    assert list(zip(merged.scalars.run, merged.scalars.tag)) == (
        [("", "acc")] * 2 + [("", "loss")] * 5 + [("", "z_last"), ("validation", "epoch_loss")])
    assert merged.scalars.step.dtype == "int64" and merged.scalars.value.dtype == "float64"
    # histogram keys in write order (the first log's, then the new ones), the first log's copy kept
    assert list(merged.histograms) == ["w", "v"]
    assert merged.histograms["w"].max[0] == first.histograms["w"].max[0] != second.histograms["w"].max[0]
    assert merged.hparams == {"lr": 0.1, "batch": 8}
    assert merged.files == first.files + second.files
    (dup,) = [p for p in merged.problems if p.kind == "duplicate-series"]
    assert (dup.severity, dup.count, dup.file) == ("info", 2, str(second_file))
    assert "loss, w" in dup.message
    # one log merges into itself, none into an empty log
    assert merge_logs([first]) is first
    assert merge_logs([]).scalars.empty and list(merge_logs([]).scalars.columns) == SCALAR_COLUMNS


def _read_toy(files):
    """A toy reader for the tests: lines of `tag,step,value` after a `TOY` header."""
    rows = []
    for path, sub in files:
        with open(path, encoding="utf-8") as f:
            for line in f.read().splitlines()[1:]:
                tag, step, value = line.split(",")
                rows.append({"run": sub, "tag": tag, "step": int(step), "wall_time": 0.0, "value": float(value)})
    log = RunLog.empty()
    if rows:
        log.scalars = pd.DataFrame(rows, columns=SCALAR_COLUMNS)
    log.files = [path for path, _ in files]
    return log


def _sniff_toy(path):
    with open(path, "rb") as f:
        return f.read(4) == b"TOY\n"


TOY = LogReader("toy", "toy logs", lambda name: name == "metrics.toy", _read_toy, sniff=_sniff_toy)


def test_a_second_registered_reader_joins_discovery_and_the_run_log(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "LOG_READERS", (*registry.LOG_READERS, TOY))
    run = tmp_path / "run"
    _tb(run / "tb" / "events.out.tfevents.1", make_scalar_event("train/loss", 0, 1.0))
    (run / "metrics.toy").write_text("TOY\nval/loss,0,2.5\nval/loss,1,2.0\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "metrics.toy").write_text("tag,step,value\n")  # right name, wrong content

    (spec,) = discover([str(tmp_path)])
    assert spec.name == "run"
    assert sorted((f.rsplit("/", 1)[-1], sub) for f, sub in spec.event_files) == [
        ("events.out.tfevents.1", "tb"), ("metrics.toy", "")]
    log = read_logs(spec.event_files, where=spec.path)
    assert _series(log, "val/loss") == ([0, 1], [2.5, 2.0])
    assert _series(log, "train/loss", run="tb") == ([0], [1.0])
    assert log.files[0].endswith("events.out.tfevents.1")  # registry order: tensorboard first


def test_a_reader_that_fails_loses_only_its_own_files(tmp_path, monkeypatch):
    def boom(files):
        raise RuntimeError("parser bug")

    monkeypatch.setattr(registry, "LOG_READERS",
                        (*registry.LOG_READERS, LogReader("boom", "boom logs", lambda n: n.endswith(".boom"), boom)))
    event_file = _tb(tmp_path / "events.out.tfevents.1", make_scalar_event("loss", 0, 1.0))
    (tmp_path / "x.boom").write_text("?")
    log = read_logs([(str(event_file), ""), (str(tmp_path / "x.boom"), "")], where=str(tmp_path))
    assert _series(log, "loss") == ([0], [1.0])
    (problem,) = log.problems
    assert (problem.kind, problem.severity, problem.file) == ("unreadable", "error", str(tmp_path))
    assert problem.message == "the boom logs could not be read: RuntimeError: parser bug"


# A file name each registered reader recognises. A new reader adds its own here: the test below then
# checks it against a FIFO and a link to /dev/zero under that name (see the registry's docstring).
NAMES_PER_READER = {
    "tensorboard": "events.out.tfevents.1700000000.host.1.0",
    "hf-trainer": "trainer_state.json",
    "lightning-csv": "metrics.csv",
    "ultralytics-csv": "results.csv",
    "mlflow-files": "meta.yaml",
    "mlflow-sqlite": "mlflow.db",
    "wandb": "run-abc123.wandb",
}

_EVERY_READER_ON_IRREGULAR_FILES = """
import json, os, sys
from report_gen.readers import registry
folder = sys.argv[1]
out = []
for reader in registry.LOG_READERS:
    name = json.loads(sys.argv[2])[reader.name]
    for kind in ("fifo", "zero"):
        path = os.path.join(folder, reader.name + "-" + kind, name)
        recognised = reader.recognises(path)
        try:
            log = reader.read([(path, "")], member=None) if reader.members else reader.read([(path, "")])
            outcome = sorted({p.kind for p in log.problems})
        except Exception as exc:
            outcome = "raised " + type(exc).__name__
        via = sorted({p.kind for p in registry.read_logs([(path, "")], where=folder).problems})
        out.append([reader.name, kind, recognised, outcome, via])
print(json.dumps(out))
"""


def test_every_registered_reader_is_safe_on_a_fifo_and_on_dev_zero(tmp_path):
    """Each reader, handed a FIFO or a symlink to /dev/zero under its own file name, returns (or
    raises) at once instead of blocking or reading forever; through read_logs the file is one
    not-a-regular-file problem. In a child process with a timeout: a reader that blocks fails the test."""
    import json
    import os

    from builders.hostile_tools import run_python

    missing = [r.name for r in registry.LOG_READERS if r.name not in NAMES_PER_READER]
    assert not missing, f"add a recognised file name for {missing} to NAMES_PER_READER"
    for reader in registry.LOG_READERS:
        name = NAMES_PER_READER[reader.name]
        assert reader.name_matches(name), (reader.name, name)
        (tmp_path / f"{reader.name}-fifo").mkdir()
        os.mkfifo(tmp_path / f"{reader.name}-fifo" / name)
        (tmp_path / f"{reader.name}-zero").mkdir()
        (tmp_path / f"{reader.name}-zero" / name).symlink_to("/dev/zero")
    code = _EVERY_READER_ON_IRREGULAR_FILES.replace("sys.argv[1]", repr(str(tmp_path))).replace(
        "sys.argv[2]", repr(json.dumps(NAMES_PER_READER)))
    done = run_python(code, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    for reader, kind, recognised, outcome, via in json.loads(done.stdout):
        assert outcome != [], (reader, kind, "read nothing and reported nothing")
        assert via == ["not-a-regular-file"], (reader, kind, via)
