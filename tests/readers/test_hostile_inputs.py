"""Hostile and broken inputs (issue 14), one class per test: each builds its input here and asserts the
invariant (a clean result or one-line problem, bounded time and memory, nothing executed, the good
parts of the run still read)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest
import torch

from builders import ckpt_builders as cb
from builders.event_builders import (make_hist_event, make_scalar_event, make_session_log_event, make_version_event,
                            write_records)
from builders.hostile_tools import bounded_time
from builders.memtools import peak_memory
from report_gen.readers.checkpoint import CheckpointError, open_checkpoint, read_checkpoints
from report_gen.readers.checkpoint.storage import INFLATE_RATIO, INFLATE_SLACK
from report_gen.readers.discovery import MAX_DEPTH, RunSpec, discover, walk_folders
from report_gen.readers.events import read_events
from report_gen.readers.events.merge import apply_step_policy
from report_gen.readers.run import read_run


def _within(seconds: float, fn):
    """fn() in a thread joined with a timeout: a blocking open fails the test instead of hanging it."""
    result: list = []

    def target():
        try:
            result.append((True, fn()))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result.append((False, exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked"
    ok, value = result[0]
    if not ok:
        raise value
    return value


def _kinds(problems):
    return [(os.path.basename(p.file), p.kind, p.severity) for p in problems]


# ------------------------------------------------------------------- not regular files are never opened


@pytest.mark.parametrize("make", ["fifo", "dev-zero", "dev-urandom"])
def test_a_run_with_irregular_files_named_like_inputs_is_read_without_them(tmp_path, make):
    """A FIFO or a link to a device named like an event file and a checkpoint: one not-a-regular-file
    problem each, never opened, and the real event file and checkpoint beside them are read."""
    run = tmp_path / "run"
    write_records(run / "events.out.tfevents.1.good", [make_version_event(), make_scalar_event("loss", 0, 1.0)])
    cb.write_nested(run / "step_5.pt", cb.tiny_state(), "model", global_step=5)
    for name in ("events.out.tfevents.2.bad", "model.pt"):
        if make == "fifo":
            os.mkfifo(run / name)
        else:
            (run / name).symlink_to("/dev/zero" if make == "dev-zero" else "/dev/urandom")
    (spec,) = _within(30, lambda: discover([str(run)]))
    got = _within(60, lambda: read_run(spec))
    assert got.log.scalars.value.tolist() == [1.0] and [c.step for c in got.checkpoints] == [5]
    assert sorted(_kinds(got.problems)) == [("events.out.tfevents.2.bad", "not-a-regular-file", "warning"),
                                            ("model.pt", "not-a-regular-file", "warning")]
    assert all("\n" not in p.message for p in got.problems)


def test_irregular_files_inside_a_model_folder_and_a_shard_index(tmp_path):
    state = cb.tiny_state()
    folder = cb.write_hf_folder(tmp_path / "hf", state, global_step=7)
    (folder / "config.json").unlink()
    os.mkfifo(folder / "config.json")
    ckpt = _within(30, lambda: open_checkpoint(str(folder)))
    assert ckpt.tensors and _kinds(ckpt.problems) == [("config.json", "not-a-regular-file", "warning")]

    index = cb.write_sharded(tmp_path / "shards", state)
    shard = json.loads(index.read_text())["weight_map"].popitem()[1]
    (index.parent / shard).unlink()
    os.mkfifo(index.parent / shard)
    with pytest.raises(CheckpointError) as info:
        _within(30, lambda: open_checkpoint(str(index)))
    assert info.value.kind == "not-a-regular-file" and "FIFO" in str(info.value)
    (index.parent / shard).unlink()
    (index.parent / shard).symlink_to("/dev/zero")  # a link out of the index's folder: refused before
    with pytest.raises(CheckpointError) as info:
        _within(30, lambda: open_checkpoint(str(index)))
    assert info.value.kind == "unsafe-path"

    fifo_index = tmp_path / "other" / "model.safetensors.index.json"
    fifo_index.parent.mkdir()
    os.mkfifo(fifo_index)
    _, problems = _within(30, lambda: read_checkpoints([str(fifo_index)]))
    assert _kinds(problems) == [("model.safetensors.index.json", "not-a-regular-file", "warning")]


def test_an_irregular_file_given_directly_is_one_line(tmp_path):
    from report_gen.core import InputError

    os.mkfifo(tmp_path / "events.out.tfevents.1")
    with pytest.raises(InputError, match="FIFO") as info:
        _within(30, lambda: discover([str(tmp_path / "events.out.tfevents.1")]))
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- folder trees


def _remove_deep_tree(folder):
    """Remove a chain of `d` folders level by level (shutil.rmtree recurses once per level, and pytest's
    clean-up of old temporary folders would hit the RecursionError this test is about)."""
    while folder.is_dir():
        child, up = folder / "d", folder.with_name(folder.name + ".up")
        if child.is_dir():
            os.rename(child, up)
        shutil.rmtree(folder)
        if not up.exists():
            return
        os.rename(up, folder)


@pytest.fixture
def deep_tree(tmp_path):
    yield tmp_path / "runs" / "deep"
    _remove_deep_tree(tmp_path / "runs" / "deep")


def test_a_tree_1100_levels_deep_costs_a_warning_not_the_report(tmp_path, caplog, deep_tree):
    top = tmp_path / "runs"
    write_records(top / "shallow" / "events.out.tfevents.1", [make_version_event(), make_scalar_event("loss", 0, 1.0)])
    deep = top / "deep"
    deep.mkdir()
    for level in range(1100):  # os.walk recursed once per level: RecursionError near 1,000
        deep = deep / "d"
        deep.mkdir()  # (Path.mkdir(parents=True) recurses too)
        if level == 100:
            write_records(deep / "events.out.tfevents.2", [make_version_event(), make_scalar_event("loss", 0, 2.0)])
    write_records(deep / "events.out.tfevents.3", [make_version_event(), make_scalar_event("loss", 0, 3.0)])
    with bounded_time(10.0):
        runs = discover([str(top)])
    assert sorted(r.name.split("/")[0] for r in runs) == ["deep", "shallow"]  # depth 101 found, 1,100 not
    assert any(f"more than {MAX_DEPTH} levels deep" in r.message for r in caplog.records)
    from report_gen.cli import main

    assert main(["diagnose", str(top), "-o", str(tmp_path / "out"), "-q"]) in (0, 1)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(report["inputs"]["runs"]) == 2 and (tmp_path / "out" / "report.html").exists()


def test_walk_folders_is_os_walk_without_following_links(tmp_path):
    for rel in ("a/b/c", "a/d", "e"):
        (tmp_path / rel).mkdir(parents=True)
        (tmp_path / rel / "f.txt").write_text("x")
    (tmp_path / "a" / "link").symlink_to(tmp_path / "e")
    ours = [(d, sorted(ds), sorted(fs)) for d, ds, fs in walk_folders(tmp_path)]
    theirs = [(d, sorted(ds), sorted(fs)) for d, ds, fs in os.walk(tmp_path, followlinks=False)]
    assert sorted(ours) == sorted(theirs)
    assert len(ours) == 6  # the linked folder is listed, not walked


# ------------------------------------------------------------------------------ inflation budget


def test_a_small_archive_whose_storage_inflates_hugely_is_refused_before_inflating(tmp_path):
    """160 MiB of deflated zeros (~160 KB on disk) behind one tensor: the budget is 16x the bytes on
    disk + 64 MiB, so the tensor is refused, with no allocation of its size."""
    numel = 40 << 20  # float32: 160 MiB
    data = cb.pk_dump(cb.pk_state_dict(("w", cb.pk_tensor("0", numel, (numel // 1024, 1024), (1024, 1)))))
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", data)
        zf.writestr("archive/version", "3\n")
        with zf.open("archive/data/0", "w", force_zip64=True) as member:
            for _ in range(160):
                member.write(bytes(1 << 20))
    size = path.stat().st_size
    assert size < 1 << 20 and INFLATE_RATIO * size + INFLATE_SLACK < numel * 4
    ckpt = open_checkpoint(str(path))
    with bounded_time(3.0), peak_memory() as mem, pytest.raises(CheckpointError, match="16x the archive"):
        ckpt.load("w")
    assert mem["peak"] < 16 << 20


# ---------------------------------------------------------------- findings that must not be hidden


def test_a_checkpoint_holding_only_a_neutralised_payload_is_a_warning_naming_it(tmp_path):
    marker = tmp_path / "pwned"
    cb.write_malicious(tmp_path / "evil.pt", None, marker)
    _, problems = read_checkpoints([str(tmp_path / "evil.pt")])
    (problem,) = problems
    assert (problem.kind, problem.severity) == ("unsafe-pickle", "warning")
    assert "no model weights" in problem.message and "nothing was executed" in problem.message
    assert "system" in problem.message or "open" in problem.message  # what was neutralised is named
    assert not marker.exists()


@pytest.mark.parametrize("content", ["zeros", "random"])
def test_a_pt_of_zeroed_or_random_bytes_is_a_warning(tmp_path, content):
    rng = np.random.default_rng(1)
    raw = bytes(8192) if content == "zeros" else rng.integers(0, 256, 8192, dtype=np.uint8).tobytes()
    (tmp_path / "model.pt").write_bytes(raw)
    _, problems = read_checkpoints([str(tmp_path / "model.pt")])
    (problem,) = problems
    assert problem.severity == "warning" and problem.kind in ("not-a-checkpoint", "corrupt", "truncated")
    if content == "zeros":
        assert "all zero bytes" in problem.message


def test_a_pkl_beside_the_checkpoints_that_is_something_else_stays_info(tmp_path):
    (tmp_path / "labels.pkl").write_bytes(b"\x80\x04garbage")
    _, problems = read_checkpoints([str(tmp_path / "labels.pkl")])
    assert _kinds(problems) == [("labels.pkl", "not-a-checkpoint", "info")]


# --------------------------------------------------------------------------------- int64 steps


@pytest.mark.parametrize("step", [10**5000, -(10**5000), 1e308], ids=["1e5000", "-1e5000", "1e308"])
def test_a_step_beyond_int64_in_a_checkpoint_is_bounded(tmp_path, step):
    path = cb.write_nested(tmp_path / "ckpt.pt", cb.tiny_state(), "model", global_step=step)
    ckpt = open_checkpoint(str(path))
    if step < 0:  # a negative step means "unknown" (Ultralytics' stripped weights say epoch -1): not used
        assert ckpt.step is None and ckpt.step_source == "mtime"
    else:
        assert 0 <= ckpt.step <= 2**63 - 1 and ckpt.step_source == "content"


def test_a_step_of_10_to_the_5000_in_a_checkpoint_keeps_the_report(tmp_path):
    run = tmp_path / "run"
    write_records(run / "events.out.tfevents.1", [make_version_event()] +
                  [make_scalar_event("train/loss", i, 1.0 / (i + 1)) for i in range(20)])
    state = cb.tiny_state()
    cb.write_nested(run / "a.pt", state, "model", global_step=10)
    cb.write_nested(run / "b.pt", {k: v + 0.1 for k, v in state.items()}, "model", global_step=10**5000)
    done = subprocess.run([sys.executable, "-m", "report_gen", "diagnose", str(run), "-o", str(tmp_path / "out"),
                           "-q"], capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr[-500:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["inputs"]["runs"][0]["checkpoints"] == 2
    assert (tmp_path / "out" / "report.html").exists() and (tmp_path / "out" / "report.md").exists()


# --------------------------------------------------------------------------- linear restart pass


def _applied_one_by_one(steps: np.ndarray, sessions: np.ndarray) -> tuple[np.ndarray, list]:
    """The step policy as specified, restart after restart (O(n r)): the reference."""
    keep = np.ones(steps.size, dtype=bool)
    restarts = []
    for i in range(1, steps.size):
        if sessions[i] != sessions[i - 1] and steps[i] <= steps[:i].max():
            drop = keep[:i] & (steps[:i] >= steps[i])
            if drop.any():
                keep[:i] &= ~drop
                restarts.append((i, int(drop.sum())))
    kept = np.flatnonzero(keep)
    return kept[np.argsort(steps[kept], kind="stable")], restarts


def test_the_linear_restart_pass_matches_the_policy_applied_restart_by_restart():
    rng = np.random.default_rng(0)
    for _ in range(3000):
        n = int(rng.integers(1, 50))
        steps = rng.integers(-3, int(rng.integers(1, 25)), n).astype(np.int64)
        sessions = np.cumsum(rng.random(n) < rng.random()).astype(np.int64)
        kept, restarts = apply_step_policy(steps, sessions, None)
        want_kept, want_restarts = _applied_one_by_one(steps, sessions)
        assert np.array_equal(kept, want_kept) and restarts == want_restarts, (steps, sessions)


def test_10000_session_restarts_are_handled_in_linear_time(tmp_path):
    """Through the reader: 10,000 TF1 sessions (session_log START) each restarting a scalar and a
    histogram at step 0. The step policy of one such series takes 0.1 s (it took 1.8 s before: O(n r))."""
    records = [make_version_event()]
    for r in range(10_000):
        records += [make_session_log_event(0), make_scalar_event("loss", 0, float(r)),
                    make_scalar_event("loss", 1, float(r)), make_hist_event("w", 0, [float(r), 1.0])]
    path = write_records(tmp_path / "events.out.tfevents.1", records)
    log = read_events([(str(path), "")])
    assert log.scalars.value.tolist() == [9999.0, 9999.0] and log.histograms["w"].steps.tolist() == [0]
    (problem,) = log.problems
    assert problem.kind == "step-restart" and problem.count == 2 * 9999 + 9999
    steps = np.tile(np.arange(5, dtype=np.int64), 10_000)
    sessions = np.repeat(np.arange(10_000, dtype=np.int64), 5)
    with bounded_time(1.0):
        kept, restarts = apply_step_policy(steps, sessions, None)
    assert kept.size == 5 and len(restarts) == 9999


# ------------------------------------------------------------------------------- safetensors


def test_one_safetensors_handle_per_file_whatever_the_number_of_tensors(tmp_path, monkeypatch):
    import safetensors

    from safetensors.torch import save_file

    save_file({f"layers.{i}.weight": torch.full((2, 2), float(i)) for i in range(2000)},
              str(tmp_path / "many.safetensors"))
    opened = []
    real = safetensors.safe_open
    monkeypatch.setattr(safetensors, "safe_open", lambda *a, **k: (opened.append(a[0]), real(*a, **k))[1])
    with bounded_time(20.0):  # a handle per tensor: quadratic (10,000 tensors took 32 min, now 8 s)
        ckpt = open_checkpoint(str(tmp_path / "many.safetensors"))
        total = sum(float(ckpt.load(name).sum()) for name in ckpt.tensors)
    assert len(opened) == 1 and total == 4 * sum(range(2000))


def test_a_safetensors_header_claiming_more_than_the_file_is_one_problem(tmp_path):
    path = cb.write_safetensors(tmp_path / "model.safetensors", cb.tiny_state())
    raw = bytearray(path.read_bytes())
    raw[:8] = (len(raw) * 100).to_bytes(8, "little")
    path.write_bytes(raw)
    with bounded_time(2.0), pytest.raises(CheckpointError) as info:
        open_checkpoint(str(path))
    assert info.value.kind == "truncated" and "header claims" in str(info.value)


def test_a_run_spec_survives_every_class_at_once(tmp_path):
    """All of it in one run: the good log and checkpoint are read, each bad file is one problem."""
    run = tmp_path / "run"
    write_records(run / "events.out.tfevents.1", [make_version_event(), make_scalar_event("loss", 0, 1.0)])
    cb.write_nested(run / "good.pt", cb.tiny_state(), "model", global_step=3)
    (run / "zeros.pt").write_bytes(bytes(100))
    os.mkfifo(run / "fifo.pt")
    cb.write_malicious(run / "evil.pt", None, tmp_path / "pwned")
    spec = RunSpec("run", str(run), [(str(run / "events.out.tfevents.1"), "")],
                   [str(run / n) for n in ("good.pt", "zeros.pt", "fifo.pt", "evil.pt")])
    got = _within(60, lambda: read_run(spec))
    assert [c.step for c in got.checkpoints] == [3] and got.log.scalars.value.tolist() == [1.0]
    assert _kinds(got.problems) == [("zeros.pt", "not-a-checkpoint", "warning"),
                                    ("fifo.pt", "not-a-regular-file", "warning"),
                                    ("evil.pt", "unsafe-pickle", "warning")]
    assert not (tmp_path / "pwned").exists()


def test_steps_beyond_int64_in_text_logs_are_bounded_not_a_lost_log(tmp_path):
    """CSV, trainer_state.json and an MLflow metric file with steps of 1e308 and 10**4000: each log is
    still read (the step bounded to int64), never an unreadable reader."""
    from report_gen.readers.registry import read_logs

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,step,train_loss\n0,0,1.5\n0,1e308,1.0\n")
    huge = "1" + "0" * 4000
    (run / "trainer_state.json").write_text('{"global_step": 2, "log_history": [{"step": 1, "loss": 2.0}, '
                                            '{"step": ' + huge + ', "loss": 1.0}]}')
    log = read_logs([(str(run / "metrics.csv"), ""), (str(run / "trainer_state.json"), "")], where=str(run))
    assert not [p for p in log.problems if p.kind == "unreadable"], log.problems
    assert log.scalars.step.max() == 2**63 - 1 and len(log.scalars) >= 3
