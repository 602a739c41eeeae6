"""--isolate: a checkpoint that crashes, hangs or exhausts a parser in the worker is one "unreadable"
problem; the other checkpoints and the rest of the report are kept, and the parent never parses it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from builders import ckpt_builders as cb
from builders import hostile_tools
from report_gen.readers import isolation
from report_gen.readers.checkpoint import read as read_module
from report_gen.readers.checkpoint import read_checkpoints
from report_gen.readers.isolation import Isolation


@pytest.fixture
def misbehaving(monkeypatch):
    """read_checkpoints(isolate=True) with workers that run hostile_tools.misbehaving_open, and a
    record of every path the parent itself opened."""
    monkeypatch.setattr(read_module, "_isolation", lambda: Isolation(opener=hostile_tools.misbehaving_open))
    opened: list[str] = []
    real_open = read_module._open
    monkeypatch.setattr(read_module, "_open",
                        lambda path, policy, *rest: (opened.append(path), real_open(path, policy, *rest))[1])
    return opened


def test_a_segfaulting_parser_costs_one_problem_and_keeps_the_rest(tmp_path, misbehaving):
    state = cb.tiny_state()
    good_before = cb.write_nested(tmp_path / "a.pt", state, "model", global_step=10)
    crash = cb.write_nested(tmp_path / "crash.pt", state, "model", global_step=20)
    good_after = cb.write_nested(tmp_path / "b.pt", state, "model", global_step=30)
    ckpts, problems = read_checkpoints([str(good_before), str(crash), str(good_after)], isolate=True)
    assert [c.step for c in ckpts] == [10, 30]  # the worker that crashed was replaced for b.pt
    assert [(p.file, p.kind, p.severity) for p in problems] == [(str(crash), "unreadable", "warning")]
    assert "SIGSEGV" in problems[0].message and "\n" not in problems[0].message
    assert str(crash) not in misbehaving  # the parent never parsed the file that crashed the worker


def test_a_hang_and_a_cpu_spin_are_stopped_by_the_limits(tmp_path, misbehaving, monkeypatch):
    monkeypatch.setattr(isolation, "WALL_SECONDS", 3)
    monkeypatch.setattr(isolation, "CPU_SECONDS", 1)
    state = cb.tiny_state()
    paths = [cb.write_plain(tmp_path / "hang.pt", state), cb.write_plain(tmp_path / "spin.pt", state),
             cb.write_plain(tmp_path / "ok.pt", state)]
    ckpts, problems = read_checkpoints([str(p) for p in paths], isolate=True)
    assert [c.path for c in ckpts] == [str(paths[2])]
    hang, spin = problems
    assert hang.kind == "unreadable" and "did not finish within 3 s" in hang.message
    # SIGXCPU at the CPU limit, or the wall-time kill when the machine is too busy to give it 1 s
    assert spin.kind == "unreadable" and ("SIGXCPU" in spin.message or "did not finish" in spin.message)


def test_a_memory_hog_hits_the_address_space_limit(tmp_path, misbehaving, monkeypatch):
    monkeypatch.setattr(isolation, "MEMORY_BYTES", 256 << 20)
    state = cb.tiny_state()
    paths = [cb.write_plain(tmp_path / "hog.pt", state), cb.write_plain(tmp_path / "ok.pt", state)]
    ckpts, problems = read_checkpoints([str(p) for p in paths], isolate=True)
    assert [c.path for c in ckpts] == [str(paths[1])]
    assert [(p.kind, "memory limit" in p.message) for p in problems] == [("unreadable", True)], problems


def test_a_file_the_worker_refuses_is_refused_the_same_way(tmp_path):
    """The worker's CheckpointError comes back as it is (kind, message, severity), unparsed by the parent."""
    (tmp_path / "zeros.pt").write_bytes(bytes(64))
    cb.write_lfs_pointer(tmp_path / "lfs.pt")
    paths = [str(tmp_path / "zeros.pt"), str(tmp_path / "lfs.pt")]
    direct = read_checkpoints(paths)[1]
    isolated = read_checkpoints(paths, isolate=True)[1]
    assert [(p.kind, p.severity, p.message) for p in isolated] == [(p.kind, p.severity, p.message) for p in direct]


def test_the_cli_isolates_on_request_and_keeps_the_report(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    state = cb.tiny_state()
    cb.write_nested(run / "step_10.pt", state, "model", global_step=10)
    cb.write_nested(run / "step_20.pt", state, "model", global_step=20)
    (run / "step_30.pt").write_bytes(b"PK\x03\x04" + bytes(100))  # a zip cut before its directory
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "report_gen", "diagnose", str(run), "-o", str(out), "--isolate",
                           "--format", "json", "-q"], capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-500:]
    report = json.loads((out / "report.json").read_text())
    (entry,) = report["inputs"]["runs"]
    assert entry["checkpoints"] == 2
    assert [(p["file"].rsplit("/", 1)[-1], p["kind"]) for p in entry["problems"]] == [("step_30.pt", "truncated")]
