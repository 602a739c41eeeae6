"""Reading a whole run: the readers grade their own problems and never raise for damaged files."""
from __future__ import annotations

import torch

from builders import ckpt_builders as cb
from builders.event_builders import make_scalar_event, make_version_event, write_bytes, write_records
from report_gen.readers.checkpoint import read_checkpoints
from report_gen.readers.discovery import RunSpec
from report_gen.readers.run import read_run


def _graded(problems):
    return [(p.file.rsplit("/", 1)[-1], p.kind, p.severity) for p in problems]


def test_read_checkpoints_grades_each_file_and_orders_the_series(tmp_path):
    state = cb.tiny_state()
    late = cb.write_nested(tmp_path / "b.pt", state, "model", global_step=20)
    early = cb.write_nested(tmp_path / "a.pt", state, "model", global_step=10)
    torch.save(torch.zeros(3), tmp_path / "probe.pt")  # a tensor saved beside the checkpoints
    (tmp_path / "blob.pkl").write_bytes(b"\x80\x04garbage")  # a pickle that is something else
    cb.write_lfs_pointer(tmp_path / "lfs.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    cb.write_malicious(tmp_path / "evil.pt", state, tmp_path / "pwned")
    paths = [str(p) for p in (late, tmp_path / "probe.pt", tmp_path / "blob.pkl", tmp_path / "lfs.pt",
                              tmp_path / "empty.pt", tmp_path / "evil.pt", early, tmp_path / "gone.pt")]
    seen = []
    ckpts, problems = read_checkpoints(paths, progress=lambda i, n: seen.append((i, n)))
    # training order: by the step inside the file, a checkpoint without any step last
    assert [(c.path.rsplit("/", 1)[-1], c.step) for c in ckpts] == [("a.pt", 10), ("b.pt", 20), ("evil.pt", None)]
    assert seen == [(i, len(paths)) for i in range(len(paths))]
    assert _graded(problems) == [  # probe.pt is data beside the checkpoints (a probe batch), not a problem
        ("blob.pkl", "not-a-checkpoint", "info"),
        ("lfs.pt", "lfs-pointer", "warning"),
        ("empty.pt", "empty-file", "warning"),
        ("evil.pt", "unsafe-pickle-neutralised", "warning"),  # the file's own problem, where it comes
        ("gone.pt", "missing", "warning"),
    ]
    assert not (tmp_path / "pwned").exists()


def test_a_saved_tensor_is_a_problem_only_when_no_checkpoint_was_read(tmp_path):
    """A probe batch (a bare tensor, or a tuple of them) beside checkpoints is data; alone it explains why
    nothing was read. A mapping without weights stays a problem either way."""
    torch.save(torch.zeros(3), tmp_path / "probe.pt")
    torch.save((torch.zeros(2, 3), torch.ones(2)), tmp_path / "batch.pt")
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    alone = [str(tmp_path / n) for n in ("batch.pt", "meta.pt", "probe.pt")]
    ckpts, problems = read_checkpoints(alone)
    assert ckpts == [] and _graded(problems) == [("batch.pt", "no-weights", "info"), ("meta.pt", "no-weights", "info"),
                                                 ("probe.pt", "no-weights", "info")]
    assert "probe batch" in problems[2].message and "tuple of 2 tensors" in problems[0].message
    ckpt = cb.write_plain(tmp_path / "epoch_1.pt", cb.tiny_state())
    ckpts, problems = read_checkpoints(alone + [str(ckpt)])
    assert len(ckpts) == 1 and _graded(problems) == [("meta.pt", "no-weights", "info")]


def test_read_run_adds_nothing_readable_after_the_files_own_problems(tmp_path):
    events = write_bytes(tmp_path / "events.out.tfevents.1", b"\x00" * 5)  # a cut first record
    (tmp_path / "bad.pt").write_bytes(b"\x00\x01binary")
    spec = RunSpec("r", str(tmp_path), [(str(events), "")], [str(tmp_path / "bad.pt")])
    got = read_run(spec)
    assert got.log.scalars.empty and got.checkpoints == []
    assert _graded(got.problems) == [("events.out.tfevents.1", "truncated-record", "info"),
                                     ("bad.pt", "not-a-checkpoint", "warning"),  # bytes of no format, named .pt
                                     (tmp_path.name, "nothing-readable", "error")]
    assert got.problems[:1] == got.log.problems


def test_read_run_of_a_healthy_run_has_no_problem(tmp_path):
    events = write_records(tmp_path / "events.out.tfevents.1",
                           [make_version_event()] + [make_scalar_event("loss", s, 1.0) for s in range(3)])
    ckpt = cb.write_plain(tmp_path / "epoch_1.pt", cb.tiny_state())
    messages = []
    got = read_run(RunSpec("r", str(tmp_path), [(str(events), "")], [str(ckpt)]),
                   progress=lambda msg, i, n: messages.append(msg))
    assert got.problems == [] and len(got.checkpoints) == 1 and got.log.scalars.step.tolist() == [0, 1, 2]
    assert messages == ["r: checkpoint 1/1"]
    assert read_run(RunSpec("empty", str(tmp_path))).problems == []  # no files: nothing to complain about
