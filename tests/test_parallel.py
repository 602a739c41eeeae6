"""The process pool inside one diagnose: same report as one process, results in run order, a worker that
dies becomes a Problem of its run (the other runs are still diagnosed)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from builders import ckpt_builders as cb
from builders import hostile_tools
from report_gen import engine, parallel
from report_gen.engine import Options, diagnose

SAMPLES = Path(__file__).resolve().parents[1] / "sample_runs"
RUNS = ["healthy_mlp", "diverging", "frozen_layer", "overfitting"]


def _stable(report: dict) -> str:
    report = dict(report)
    report.pop("created"), report.pop("timing")
    return json.dumps(report, sort_keys=False, default=str)


def _same(a, b, path="report") -> None:
    """Equal, floats to 1e-6 relative: one process with two torch threads and two processes with one thread
    each reduce in a different order, so the last bits of a float32 statistic may differ (never more)."""
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b)), (path, a, b)
    elif isinstance(a, dict) and isinstance(b, dict):
        assert list(a) == list(b), (path, list(a), list(b))
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), (path, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


@pytest.fixture
def always_pool(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_POOL_BYTES", 0)
    monkeypatch.setattr(parallel, "MIN_PIECE_BYTES", 0)


def _square(x):
    if x == 3:
        raise ValueError("three")
    if x == 5:
        os._exit(7)  # the worker dies
    return x * x


def test_run_tasks_keeps_order_and_isolates_failures():
    out = parallel.run_tasks(_square, list(range(8)), jobs=2)
    assert [o for i, o in enumerate(out) if i not in (3, 5)] == [0, 1, 4, 16, 36, 49]
    assert isinstance(out[3], parallel.Crashed) and "ValueError: three" in out[3].message
    assert isinstance(out[5], parallel.Crashed) and "died" in out[5].message


def test_a_pool_only_when_it_pays():
    assert not parallel.worth_a_pool(10 << 30, 20, jobs=1)  # one core
    assert not parallel.worth_a_pool(10 << 30, 1, jobs=2)  # one piece
    assert not parallel.worth_a_pool(2 << 20, 20, jobs=2)  # little work in all
    assert not parallel.worth_a_pool(parallel.MIN_POOL_BYTES, 1000, jobs=2)  # many tiny pieces
    assert parallel.worth_a_pool(200 << 20, 20, jobs=2)


def test_pool_gives_the_same_report_as_one_process(always_pool):
    paths = [str(SAMPLES / r) for r in RUNS]
    one = diagnose(paths, Options(jobs=1))
    two = diagnose(paths, Options(jobs=2))
    _same(json.loads(_stable(one)), json.loads(_stable(two)))
    assert [r["name"] for r in two["inputs"]["runs"]] == RUNS
    assert one["findings"] and one["evaluated"]


def test_a_crashing_worker_becomes_a_problem_of_its_run(always_pool, monkeypatch):
    real = engine.load_runs

    def dies_on_diverging(spec, *args, **kwargs):
        if spec.name == "diverging":
            os._exit(9)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(engine, "load_runs", dies_on_diverging)  # inherited by the forked workers
    report = diagnose([str(SAMPLES / r) for r in RUNS], Options(jobs=2))
    runs = {r["name"]: r for r in report["inputs"]["runs"]}
    assert [p["kind"] for p in runs["diverging"]["problems"]] == ["worker-crashed"]
    assert runs["diverging"]["verdict"] != "pass"
    assert any(f["code"] == "I101" and f["run"] == "diverging" for f in report["findings"])
    assert all(not runs[n]["problems"] or runs[n]["problems"][0]["kind"] != "worker-crashed"
               for n in RUNS if n != "diverging")
    assert any(f["run"] == "frozen_layer" and f["code"] == "U101" for f in report["findings"])


def test_isolate_works_inside_pool_workers(always_pool, monkeypatch, tmp_path):
    """--isolate with --jobs 2: each pool worker starts its own limited child to vet the checkpoints (a
    daemonic worker could not have children, and the forkserver of the parent is not the worker's to use);
    a parser crash there is one problem of its run."""
    from report_gen.readers.checkpoint import read as read_module
    from report_gen.readers.isolation import Isolation

    monkeypatch.setattr(read_module, "_isolation", lambda: Isolation(opener=hostile_tools.misbehaving_open))
    pools = []
    real_run_tasks = parallel.run_tasks
    monkeypatch.setattr(parallel, "run_tasks", lambda *a, **k: (pools.append(a[2]), real_run_tasks(*a, **k))[1])
    state = cb.tiny_state()
    runs = []
    for name in ("a", "b"):
        run = tmp_path / name
        run.mkdir()
        cb.write_nested(run / "step_10.pt", state, "model", global_step=10)
        cb.write_nested(run / ("crash_20.pt" if name == "a" else "step_20.pt"), state, "model", global_step=20)
        cb.write_nested(run / "step_30.pt", state, "model", global_step=30)
        runs.append(str(run))
    alone = diagnose(runs[1:], Options(jobs=1, isolate=True))  # vetted here: this process starts a forkserver
    assert pools == [] and alone["inputs"]["runs"][0]["checkpoints"] == 3
    report = diagnose(runs, Options(jobs=2, isolate=True))  # forked workers must start forkservers of their own
    assert pools == [2]  # the runs were diagnosed in a pool of two workers
    a, b = report["inputs"]["runs"]
    assert (a["name"], a["checkpoints"], b["name"], b["checkpoints"]) == ("a", 2, "b", 3)
    assert [(p["file"].rsplit("/", 1)[-1], p["kind"]) for p in a["problems"]] == [("crash_20.pt", "unreadable")]
    assert "SIGSEGV" in a["problems"][0]["message"]
    assert b["problems"] == []
