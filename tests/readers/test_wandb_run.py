"""W&B run folders: the .wandb transaction log (framed here, decoded with wandb's own protobuf classes: the
report_gen[wandb] extra, installed for the tests) on offline runs wandb 0.31 wrote (tests/fixtures/real/wandb),
and the files/ side files of older SDKs."""
from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import pytest

from report_gen.readers import wandb_run
from report_gen.readers.discovery import discover
from report_gen.readers.registry import reader_for
from report_gen.readers.wandb_run import read_wandb_runs, records

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "wandb"
HEALTHY = next((REAL / "offline_healthy" / "wandb").glob("offline-run-*"))
LOG = next(HEALTHY.glob("run-*.wandb"))


def _series(log, tag):
    rows = log.scalars[log.scalars.tag == tag]
    return rows.step.tolist(), rows.value.tolist()


def _frames(data):
    """Independent LevelDB-log framing of a whole file: (offset, type, payload) of every record."""
    out, pos = [], 7
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        out.append((pos, kind, data[pos + 7:pos + 7 + length]))
        pos += 7 + length
    return out


def test_the_transaction_log_is_framed_record_by_record():
    data = LOG.read_bytes()
    frames = _frames(data)
    problems = []
    payloads = list(records(str(LOG), problems))
    assert problems == []
    assert len(payloads) == sum(1 for _, kind, _ in frames if kind in (1, 4))  # FULL, and FIRST..LAST joined
    assert b"".join(payloads) == b"".join(p for _, _, p in frames)


def test_offline_run_history_config_and_summary():
    pytest.importorskip("wandb", reason="report_gen[wandb] (listed in the test extra)")
    (run,) = discover([str(REAL / "offline_healthy")])
    assert run.name == f"wandb/{HEALTHY.name}" and run.event_files == [(str(LOG), "")]
    assert reader_for(str(LOG)).name == "wandb"
    log = read_wandb_runs(run.event_files)
    assert log.problems == []
    manifest = json.loads((REAL / "MANIFEST.json").read_text())["cases"]["offline_healthy"]["verification"]
    steps, values = _series(log, "train/loss")
    # make_wandb.py logs every 2nd step and every step with a validation value (steps 9, 19, ...)
    val_steps = _series(log, "val/loss")[0]
    assert val_steps == list(range(9, 200, 10))
    assert steps == sorted(set(range(0, 200, 2)) | set(val_steps)) and len(steps) == 120
    assert _series(log, "val/acc")[1][-1] == manifest["final_val_acc"]
    assert values[-1] == log.hparams["summary.train/loss"]
    assert _series(log, "val/acc")[1][-1] == log.hparams["summary.val/acc"]
    assert log.hparams["lr"] == 0.01 and log.hparams["optimizer"] == "Adam"
    assert log.hparams["wandb.run_name"] == "mlp-healthy"
    assert not any(k.startswith("summary.parameters/") for k in log.hparams)  # histograms are not final values
    assert log.scalars.wall_time.gt(1e9).all()


def test_without_the_extra_the_log_is_named_not_guessed(monkeypatch):
    monkeypatch.setattr(wandb_run, "_record_class", lambda: None)
    log = read_wandb_runs([(str(LOG), "")])
    assert log.scalars.empty
    (problem,) = log.problems
    assert problem.kind == "unreadable" and problem.severity == "info" and "report_gen[wandb]" in problem.message


def _write_log(path, payloads, corrupt_at=None, cut=0):
    out = bytearray(struct.pack("<4sHB", b":W&B", 0xBEE1, 0))
    for i, payload in enumerate(payloads):
        crc = zlib.crc32(payload, zlib.crc32(bytes([1]))) & 0xFFFFFFFF
        out += struct.pack("<IHB", crc ^ (1 if i == corrupt_at else 0), len(payload), 1) + payload
    path.write_bytes(bytes(out[:len(out) - cut]))


@pytest.mark.parametrize("corrupt_at, cut, kind", [(1, 0, "bad-data-crc"), (None, 3, "truncated-record")])
def test_damage_ends_the_framing_with_a_problem(tmp_path, corrupt_at, cut, kind):
    path = tmp_path / "run-abc.wandb"
    _write_log(path, [b"one", b"two", b"three"], corrupt_at=corrupt_at, cut=cut)
    problems = []
    got = list(records(str(path), problems))
    assert got == [b"one"] if corrupt_at == 1 else got == [b"one", b"two"]
    assert [p.kind for p in problems] == [kind] and problems[0].offset is not None


def test_garbage_logs_never_raise(tmp_path):
    pytest.importorskip("wandb", reason="report_gen[wandb] (listed in the test extra)")
    path = tmp_path / "run-abc.wandb"
    _write_log(path, [b"\xff\xff\xff not a protobuf", b""])
    log = read_wandb_runs([(str(path), "")])
    assert log.scalars.empty
    path.write_bytes(b"hello")
    log = read_wandb_runs([(str(path), "")])
    assert [p.kind for p in log.problems] == ["bad-proto"]


def test_old_sdk_side_files(tmp_path, monkeypatch):
    monkeypatch.setattr(wandb_run, "_record_class", lambda: None)
    run = tmp_path / "wandb" / "run-20200101_000000-abc"
    (run / "files").mkdir(parents=True)
    (run / "run-abc.wandb").write_bytes(b"")
    (run / "files" / "wandb-history.jsonl").write_text(
        '{"_step": 0, "_timestamp": 1.6e9, "loss": 1.0, "img": {"_type": "image-file"}}\n'
        '{"_step": 1, "_timestamp": 1.6e9, "loss": NaN}\nnot json\n')
    (run / "files" / "config.yaml").write_text("wandb_version: 1\n_wandb:\n  value: {cli_version: 0.9}\n"
                                               "lr:\n  desc: null\n  value: 0.1\n")
    (run / "files" / "wandb-summary.json").write_text('{"loss": 0.5, "_runtime": 3, "hist": {"_type": "histogram"}}')
    (spec,) = discover([str(tmp_path)])
    log = read_wandb_runs(spec.event_files)
    steps, values = _series(log, "loss")
    assert steps == [0, 1] and values[0] == 1.0 and math.isnan(values[1])
    assert log.hparams == {"lr": 0.1, "summary.loss": 0.5}
    assert sorted((p.kind, p.offset) for p in log.problems) == [("bad-json", 3), ("unreadable", None)]
