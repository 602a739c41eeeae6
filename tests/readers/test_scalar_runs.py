"""The scalar fast path on long runs of equal records (what torch's add_scalar writes a million of):
CRCs computed with numpy per run, records decoded as strided blocks, tags coded from their varying
bytes. Every test compares with an independent reference: the C CRC32C, protobuf's own parse of each
record, or plain Python grouping."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap

import crc32c
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from builders.event_builders import (frame, make_scalar_event, make_tensor_scalar_event, make_version_event,
                                     write_bytes, write_records)
from report_gen.readers.events import read_events
from report_gen.readers.events.bulk import _HASH_MUL, row_codes
from report_gen.readers.events.merge import _rows_per_code
from report_gen.readers.tfrecord import _BLOCK_ROWS, records_crc_ok, rows_crc32c, varying_columns
from report_gen.readers.types import RunLog, ScalarSeries, ScalarTable

T0 = 1.7e9


def reference(path) -> list[tuple[str, int, float, float]]:
    """(tag, step, wall_time, value) of every scalar, as TensorBoard's own loader and protobuf read them."""
    out = []
    for event in EventFileLoader(str(path)).Load():
        for v in event.summary.value:
            value = v.simple_value if v.WhichOneof("value") == "simple_value" else v.tensor.float_val[0]
            out.append((v.tag, event.step, event.wall_time, float(np.float32(value))))
    return out


def ours(path, **kwargs) -> list[tuple[str, int, float, float]]:
    log = read_events([(str(path), "")], **kwargs)
    return [(s.tag, int(st), float(w), float(v)) for s in log.table.series
            for st, w, v in zip(s.steps, s.wall_times, s.values)]


@pytest.mark.parametrize("length", [1, 7, 38, 300, 5000])
def test_strided_crc_equals_the_c_implementation(length):
    rng = np.random.default_rng(length)
    count = _BLOCK_ROWS + 37 if length < 300 else 50  # across a block boundary
    stride = length + 16
    data = rng.integers(0, 256, count * stride + 8, dtype=np.uint8)
    data[: count * stride].reshape(count, stride)[:, : length // 2] = 7  # constant columns, as in real runs
    raw = np.frombuffer(data.tobytes(), dtype=np.uint8)
    got = rows_crc32c(raw, 3 + stride * np.arange(count - 1), length)
    want = [crc32c.crc32c(raw[3 + i * stride:3 + i * stride + length].tobytes()) for i in range(count - 1)]
    assert got.tolist() == want


@pytest.mark.parametrize("count", [1, 2, 3, 17, 64, _BLOCK_ROWS + 1])
def test_varying_columns_are_exactly_the_columns_where_some_row_differs(count):
    rng = np.random.default_rng(count)
    rows = np.tile(rng.integers(0, 256, 41, dtype=np.uint8), (count, 1))
    rows[:, [3, 9, 40]] = rng.integers(0, 256, (count, 3), dtype=np.uint8)
    rows[-1, 20] ^= 0x01  # one bit of one row, the last (the odd row out of the pairwise folding)
    want = ~(rows == rows[0]).all(axis=0)
    assert varying_columns(rows).tolist() == want.tolist()
    other = rng.integers(0, 256, 41, dtype=np.uint8)  # a reference row that is none of the rows
    assert varying_columns(rows, np.tile(rows[0], count)).tolist() == want.tolist()
    assert varying_columns(rows, np.tile(other, count + 5)).tolist() == (~(rows == other).all(axis=0)).tolist()


@pytest.mark.parametrize("length", [1, 38, 300, 5000])
def test_record_crc_check_finds_exactly_the_records_the_c_implementation_refuses(length):
    """Records of one length with their footers (masked CRCs), most of their bytes constant as a logger
    writes them; damage in a constant column, a varying column and a footer, across a block boundary."""
    rng = np.random.default_rng(length)
    count = _BLOCK_ROWS + 37 if length < 300 else 50
    stride = length + 4 + 12
    data = rng.integers(0, 256, count * stride, dtype=np.uint8).reshape(count, stride)
    data[:, : length // 2] = 7
    for i in range(count):
        crc = crc32c.crc32c(data[i, :length].tobytes())
        data[i, length:length + 4] = np.frombuffer(np.uint32((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)
                                                   .tobytes(), dtype=np.uint8)
    damaged = {1, count // 2, count - 1}
    data[1, 0] ^= 0x10  # a constant column (every other record holds 7 there)
    data[count // 2, length - 1] ^= 0x01  # the last byte
    data[count - 1, length + 2] ^= 0x80  # the footer
    raw = np.frombuffer(data.tobytes(), dtype=np.uint8)
    ok = records_crc_ok(raw, stride * np.arange(count), length)
    assert np.flatnonzero(~ok).tolist() == sorted(damaged)


def test_rows_per_code_lists_every_code_in_order_for_few_and_many_codes():
    rng = np.random.default_rng(0)
    for k in (1, 3, 16, 17, 300):
        codes = rng.integers(0, k, 5000)
        got = _rows_per_code(codes, k)
        assert [g.tolist() for g in got] == [np.flatnonzero(codes == c).tolist() for c in range(k)]


@pytest.mark.parametrize("tags", [("train/m0", "train/m1", "train/m2"), ("loss", "train/accuracy", "lr")])
def test_long_runs_across_varint_widths_and_tag_lengths_read_as_protobuf_reads_them(tmp_path, tags):
    """20,000 steps of three tags (of one length: runs of equal records; of three lengths: a cycle of
    three), the step varint growing from one to three bytes inside the file, a tag of another length
    every 500 steps breaking the runs, TF2 tensor scalars and a non-ASCII tag: every value as protobuf
    reads it."""
    rng = np.random.default_rng(0)
    records = [make_version_event()]
    for step in range(20_000):
        for k, tag in enumerate(tags):
            records.append(make_scalar_event(tag, step, float(rng.standard_normal()), T0 + step + k / 8))
        if step % 500 == 0:
            records.append(make_scalar_event("val/accuracy", step, 0.5, T0 + step))
            records.append(make_tensor_scalar_event("lr", step, 1e-3, wall_time=T0 + step))
            records.append(make_scalar_event("ünï/ß", step, -1.0, T0 + step))
    path = write_records(tmp_path / "events.out.tfevents.1", records)
    want = sorted(reference(path))
    assert len(want) == 60_000 + 3 * 40
    assert sorted(ours(path)) == want


def test_a_training_loop_with_an_evaluation_every_hundred_steps_is_framed_by_whole_intervals(tmp_path, monkeypatch):
    """Four tags a step and val/loss every 100 steps, as a training loop logs them: after two runs of
    100 steps with one evaluation between, the interval (401 records) is the cycle framed in bulk. The
    step varint widens twice (steps 128 and 16384), a header is damaged inside an interval and a
    value elsewhere: every other value as protobuf reads it, the damage reported."""
    from report_gen.readers import tfrecord

    tags = ("train/loss", "train/accuracy", "lr", "grad_norm")
    rng = np.random.default_rng(3)
    records = [make_version_event()]
    for step in range(17_000):
        records += [make_scalar_event(t, step, float(rng.standard_normal()), T0 + step) for t in tags]
        if step % 100 == 0:
            records.append(make_scalar_event("val/loss", step, 1.0 / (1 + step), T0 + step))
    frames = [frame(r) for r in records]
    offsets = np.cumsum([0] + [len(f) for f in frames])
    blob = bytearray(b"".join(frames))
    header_hit, value_hit = 30_011, 52_345  # inside intervals far from the file's start
    blob[offsets[header_hit] + 9] ^= 0x01  # the header's length CRC
    blob[offsets[value_hit] + 12 + len(records[value_hit]) - 1] ^= 0x01  # the value
    path = write_bytes(tmp_path / "events.out.tfevents.1", bytes(blob))
    cycles: list[int] = []
    real = tfrecord._periodic_run

    def spy(raw, pos, cycle, *args):
        found = real(raw, pos, cycle, *args)
        cycles.append(len(cycle) if found else 0)
        return found

    monkeypatch.setattr(tfrecord, "_periodic_run", spy)
    log = read_events([(str(path), "")])
    assert 401 in cycles  # the whole interval was framed in bulk
    got = sorted((s.tag, int(st), float(w), float(v)) for s in log.table.series
                 for st, w, v in zip(s.steps, s.wall_times, s.values))
    # protobuf's parse of every record but the two damaged (TensorBoard's own loader stops for good at
    # the damaged header, so it cannot be the reference for what follows)
    want = sorted(_decoded(r) for i, r in enumerate(records) if i and i not in (header_hit, value_hit))
    assert len(got) == len(records) - 3 and got == want
    assert sorted(str(p.kind) for p in log.problems) == ["bad-data-crc", "bad-length-crc"]


def _decoded(record: bytes) -> tuple[str, int, float, float]:
    from tensorboard.compat.proto import event_pb2

    event = event_pb2.Event.FromString(record)
    (v,) = event.summary.value
    return v.tag, event.step, event.wall_time, float(np.float32(v.simple_value))


def test_equal_length_records_of_two_layouts_in_one_run(tmp_path):
    """'abc' with a one-byte step and 'ab' with a two-byte step are records of one length lying back to
    back: the run's layout (read from its first record) does not fit every record, and the others must
    still be read, each by its own layout."""
    records = []
    for i in range(400):
        records.append(make_scalar_event("abc", 1 + i % 100, float(i), T0 + i) if i % 2 == 0
                       else make_scalar_event("ab", 200 + i, float(i), T0 + i))
    assert len({len(r) for r in records}) == 1
    path = write_records(tmp_path / "events.out.tfevents.1", records)
    assert sorted(ours(path)) == sorted(reference(path))


def test_a_corrupt_record_inside_a_run_is_counted_and_the_rest_is_read(tmp_path):
    records = [make_scalar_event("loss", step, float(step), T0 + step) for step in range(5000)]
    frames = [frame(r) for r in records]
    blob = bytearray(b"".join(frames))
    at = sum(len(f) for f in frames[:2500])
    blob[at + 12 + len(records[2500]) - 2] ^= 0x40  # inside the value of record 2500, in a run of equal records
    path = write_bytes(tmp_path / "events.out.tfevents.1", bytes(blob))
    log = read_events([(str(path), "")])
    (series,) = log.table.series
    assert series.steps.tolist() == [s for s in range(5000) if s != 2500]
    assert [(str(p.kind), p.count) for p in log.problems] == [("bad-data-crc", 1)]


def test_row_codes_group_rows_as_python_does():
    rng = np.random.default_rng(1)
    for width, varying in ((14, 1), (20, 5), (40, 19)):
        base = rng.integers(0, 256, width, dtype=np.uint8)
        distinct = np.tile(base, (50, 1))
        cols = rng.choice(width, varying, replace=False)
        distinct[:, cols] = rng.integers(0, 256, (50, varying), dtype=np.uint8)
        rows = distinct[rng.integers(0, 50, 20_000)]
        codes, first = row_codes(rows)
        groups: dict[bytes, int] = {}
        for i, row in enumerate(rows):
            key = row.tobytes()
            assert groups.setdefault(key, codes[i]) == codes[i]  # equal rows, equal codes
        assert len(set(groups.values())) == len(groups)  # different rows, different codes
        assert all(rows[first[c]].tobytes() == k for k, c in groups.items())


def test_row_codes_never_merge_rows_whose_hashes_collide():
    """Sixteen varying bytes make two 64-bit words, hashed into one key; two rows built to have the same
    key must still get two codes."""
    rng = np.random.default_rng(2)
    mask = (1 << 64) - 1
    a0, a1, b0 = (int(x) for x in rng.integers(0, 2**63, 3))
    b1 = ((a0 * int(_HASH_MUL)) & mask) ^ a1 ^ ((b0 * int(_HASH_MUL)) & mask)
    row = lambda w0, w1: np.frombuffer(w0.to_bytes(8, "little") + w1.to_bytes(8, "little"), dtype=np.uint8)
    rows = np.stack([row(a0, a1), row(b0, b1)] * 10 + list(rng.integers(0, 256, (30, 16), dtype=np.uint8)))
    codes, _ = row_codes(rows)
    assert codes[0] != codes[1] and codes[0] == codes[2] and codes[1] == codes[3]


def test_scalar_table_is_the_tidy_frame_and_back():
    table = ScalarTable([ScalarSeries("val", "loss", np.array([3, 1]), np.array([1.0, 2.0]), np.array([0.5, 0.25])),
                         ScalarSeries("", "loss", np.array([0]), np.array([0.0]), np.array([1.0])),
                         ScalarSeries("val", "loss", np.array([5]), np.array([3.0]), np.array([0.125]))])
    assert [(s.run, s.tag, s.steps.tolist()) for s in table.series] == [("", "loss", [0]), ("val", "loss", [3, 1, 5])]
    frame = table.frame()
    assert list(frame.columns) == ["run", "tag", "step", "wall_time", "value"]
    assert frame.values.tolist() == [["", "loss", 0, 0.0, 1.0], ["val", "loss", 3, 1.0, 0.5],
                                     ["val", "loss", 1, 2.0, 0.25], ["val", "loss", 5, 3.0, 0.125]]
    back = ScalarTable.from_frame(frame.iloc[[1, 0, 2, 3]])
    assert [(s.run, s.steps.tolist(), s.values.tolist()) for s in back.series] == \
        [("", [0], [1.0]), ("val", [3, 1, 5], [0.5, 0.25, 0.125])]
    log = RunLog.empty()
    log.scalars = frame  # the assignable DataFrame form becomes the table
    assert log.table.step_range() == (0, 5) and log.table.tag_count() == 1 and len(log.table) == 4
    assert RunLog.empty().scalars.empty and RunLog.empty().table.step_range() is None


# imported by no logs-only diagnose: pandas (a third of a second), protobuf (a tenth), torch; rich (~30 ms:
# the verdict line of a pipe or CI log is written without it); sqlite3 (MLflow stores only); the attention
# facts (checkpoints with query/key projections only)
LAZY_MODULES = ("pandas", "google.protobuf", "torch", "rich", "sqlite3", "report_gen.facts.attention",
                "importlib.metadata", "email")
# nor, when nothing is drawn (matplotlib imports them), uuid, secrets and numpy.ma (np.unique imports it)
LAZY_WITHOUT_PLOTS = LAZY_MODULES + ("uuid", "secrets", "matplotlib", "numpy.ma")


def _cli_imports(run_dir, out_dir, watched) -> tuple[str, list[str]]:
    """(verdict line, the `watched` modules imported) of the real CLI, `python -m report_gen diagnose RUN
    -o OUT -q`, in a fresh interpreter whose output is a pipe (as in CI)."""
    code = textwrap.dedent(f"""
        import atexit, runpy, sys
        atexit.register(lambda: print(sorted(m for m in {tuple(watched)!r} if m in sys.modules)))
        sys.argv = ["report-gen", "diagnose", {str(run_dir)!r}, "-o", {str(out_dir)!r}, "-q"]
        runpy.run_module("report_gen", run_name="__main__", alter_sys=True)
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and len(lines) == 2, (done.stdout, done.stderr)
    return lines[0], ast.literal_eval(lines[1])


def test_reading_plain_scalars_imports_neither_pandas_nor_protobuf(tmp_path):
    """The claim behind the 1M-scalar timing: a torch add_scalar file is read and judged without pandas
    (a third of a second to import) and without protobuf (a tenth); the real CLI imports none of the
    modules made lazy for a logs-only diagnose (and, with nothing to draw, neither uuid nor secrets)."""
    path = write_records(tmp_path / "run" / "events.out.tfevents.1",
                         [make_version_event()] + [make_scalar_event("train/loss", s, 1.0 / (s + 1), T0 + s)
                                                   for s in range(300)])
    verdict, imported = _cli_imports(path.parent, tmp_path / "out", LAZY_MODULES)
    assert verdict.startswith("PASS  0 errors") and imported == []
    metrics = write_records(tmp_path / "metrics" / "events.out.tfevents.1",  # like benchmarks' 1M-scalar file
                            [make_version_event()] + [make_scalar_event(f"train/metric_{i % 10}", i // 10, 0.5, T0 + i)
                                                      for i in range(3000)])
    verdict, imported = _cli_imports(metrics.parent, tmp_path / "out2", LAZY_WITHOUT_PLOTS)
    assert verdict.startswith("UNKNOWN  0 errors") and imported == []
    assert (tmp_path / "out2" / "report.json").is_file()
    assert (tmp_path / "out" / "report.json").is_file()


def test_scattered_records_whose_fields_point_past_the_buffer_are_refused_not_read_out_of_bounds():
    """The per-record path reads a record's fixed fields without a padded copy of the buffer: a record at
    the very end whose tag length points past it reads clamped bytes, fails its checks and is left to
    protobuf; the good records around it are decoded."""
    from report_gen.readers.events.bulk import SimpleScalars

    good = [make_scalar_event(f"t{i}", i, float(i), T0 + i) for i in range(5)]
    bad = bytearray(make_scalar_event("abc", 7, 1.0, T0))
    bad[bad.index(b"abc") - 1] = 0xFF  # a tag length of 255, past the record and the buffer
    records = good + [bytes(bad)]
    buffer = b"".join(records)
    starts = np.cumsum([0] + [len(r) for r in records[:-1]])
    lengths = np.array([len(r) for r in records])
    got = SimpleScalars.decode(buffer, starts, lengths)
    assert got.mask.tolist() == [True] * 5 + [False]
    assert [got.names[c] for c in got.codes] == [f"t{i}" for i in range(5)]
    assert got.values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and got.steps.tolist() == [0, 1, 2, 3, 4]
