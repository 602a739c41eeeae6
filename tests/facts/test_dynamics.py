"""series_facts over a checkpoint series: updates, missing tensors, NaN appearance, memory discipline."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from builders import ckpt_builders as cb
from report_gen.facts.dynamics import series_facts, update_facts
from report_gen.readers.checkpoint import open_checkpoint, order_series


def _series(tmp_path, states):
    paths = [cb.write_plain(tmp_path / f"ckpt-{10 * (i + 1)}.pt", s) for i, s in enumerate(states)]
    return order_series([open_checkpoint(str(p)) for p in reversed(paths)])


def test_updates_match_numpy(tmp_path):
    a = {"w": torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), "b": torch.ones(3)}
    b = {"w": a["w"] * 1.1, "b": torch.ones(3)}
    c = {"w": b["w"] + 0.5, "b": torch.ones(3)}
    facts = series_facts(_series(tmp_path, [a, b, c]))
    w = facts["w"]
    assert w.steps == [10, 20, 30] and w.present == [0, 1, 2] and len(w.stats) == 3
    wa, wb, wc = (x["w"].double().numpy() for x in (a, b, c))
    np.testing.assert_allclose(w.rel_update, [np.linalg.norm(wb - wa) / np.linalg.norm(wa),
                                              np.linalg.norm(wc - wb) / np.linalg.norm(wb)], rtol=1e-6)
    np.testing.assert_allclose(w.abs_update_mean, [np.abs(wb - wa).mean(), np.abs(wc - wb).mean()],
                               rtol=1e-6)
    np.testing.assert_array_equal(facts["b"].rel_update, [0.0, 0.0])  # frozen
    assert w.nan_appeared_at is None


def test_missing_tensor_shape_change_and_nan(tmp_path):
    s0 = {"w": torch.ones(2, 2), "x": torch.ones(3)}
    s1 = {"w": torch.ones(2, 2) * 2}
    s2 = {"w": torch.tensor([[1.0, float("nan")], [1.0, 1.0]]), "x": torch.ones(4)}
    s3 = {"w": torch.ones(2, 2), "x": torch.ones(4) * 3}
    facts = series_facts(_series(tmp_path, [s0, s1, s2, s3]))
    assert facts["w"].nan_appeared_at == 2
    x = facts["x"]
    assert x.present == [0, 2, 3]
    assert math.isnan(x.rel_update[0]) and math.isnan(x.rel_update[1])  # missing, then shape change
    assert x.rel_update[2] == pytest.approx(2.0)


def test_update_facts_zero_reference():
    assert math.isnan(update_facts(torch.zeros(3), torch.zeros(3), 0.0)[0])
    assert update_facts(torch.zeros(3), torch.ones(3), 0.0) == (math.inf, 1.0)


def test_loads_one_tensor_at_a_time_and_reports_progress(tmp_path):
    ckpts = _series(tmp_path, [cb.tiny_state(i) for i in range(3)])
    calls = []
    for ckpt in ckpts:
        original = ckpt.load

        def load(name, _original=original):
            calls.append(name)
            return _original(name)
        ckpt.load = load
    seen = []
    facts = series_facts(ckpts, progress=lambda done, total, name: seen.append((done, total, name)))
    assert list(facts) == list(ckpts[0].tensors)
    # name by name: all three versions of one tensor before the next name
    assert calls == [n for n in ckpts[0].tensors for _ in range(3)]
    assert seen[-1] == (9, 9, "fc.bias") and len(seen) == 9


def test_unreadable_tensor_is_skipped_for_that_checkpoint_only(tmp_path):
    from report_gen.readers.checkpoint import CheckpointError

    states = [{"w": torch.ones(2, 2) * (i + 1), "b": torch.ones(3)} for i in range(3)]
    ckpts = _series(tmp_path, states)
    original = ckpts[1].load

    def flaky(name):
        if name == "w":
            raise CheckpointError(ckpts[1].path, "corrupt", "storage data/0 is missing from the archive")
        return original(name)

    ckpts[1].load = flaky
    problems = []
    facts = series_facts(ckpts, problems=problems)
    w = facts["w"]
    assert w.present == [0, 2] and w.unreadable == [1] and len(w.stats) == 2
    assert np.isnan(w.rel_update).all()  # no update into or out of the unreadable version
    assert facts["b"].present == [0, 1, 2] and facts["b"].unreadable == []
    (problem,) = problems
    assert (problem.file, problem.kind, problem.severity, problem.count) == (
        ckpts[1].path, "unreadable-tensor", "warning", 1)
    assert "w: storage data/0 is missing" in problem.message and ckpts[1].path not in problem.message
    assert series_facts(ckpts)["w"].unreadable == [1]  # the old call form still works, silently


def test_file_damaged_after_opening_does_not_abort_the_series(tmp_path):
    paths = [cb.write_whole_module(tmp_path / f"ckpt-{i}.pt", _model(i)) for i in (1, 2, 3)]
    ckpts = order_series([open_checkpoint(str(p)) for p in paths])  # restricted reader
    paths[1].write_bytes(paths[1].read_bytes()[:300])  # cut after it was opened
    problems = []
    facts = series_facts(ckpts, problems=problems)
    (problem,) = problems
    assert problem.file == str(paths[1]) and problem.count == len(ckpts[1].tensors)
    assert all(s.present == [0, 2] for s in facts.values())


def _model(seed):
    model = cb.TinyNet()
    model.load_state_dict(cb.tiny_state(seed))
    return model


def test_a_pool_of_workers_gives_the_same_series(tmp_path, monkeypatch):
    """Names shared among forked workers that reopen the files: identical facts, same order, lazy
    facts still computed (through this process's loaders)."""
    from report_gen import parallel
    g = torch.Generator().manual_seed(3)
    states = [{f"l{i}.weight": torch.randn(40, 30, generator=g) * (k + 1) for i in range(6)} for k in range(3)]
    ckpts = _series(tmp_path, states)
    serial = series_facts(ckpts, jobs=1)
    monkeypatch.setattr(parallel, "MIN_POOL_BYTES", 0)
    monkeypatch.setattr(parallel, "MIN_PIECE_BYTES", 0)
    calls = []
    real = parallel.run_tasks
    monkeypatch.setattr(parallel, "run_tasks", lambda func, items, *a: calls.append(len(items)) or real(func, items, *a))
    pooled = series_facts(ckpts, jobs=2)
    assert calls and calls[0] >= 2 and list(pooled) == list(serial)  # the workers computed it
    for name in serial:
        a, b = serial[name], pooled[name]
        assert a.present == b.present and np.array_equal(a.rel_update, b.rel_update, equal_nan=True)
        for x, y in zip(a.stats, b.stats):
            assert (x.mean, x.std, x.absmax, x.kurtosis) == (y.mean, y.std, y.absmax, y.kurtosis)
            assert y.source is not None and y.stable_rank == x.stable_rank
