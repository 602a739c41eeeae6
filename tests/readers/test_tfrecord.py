"""Framing layer: byte-level fixtures for every kind of damage."""
from __future__ import annotations

import io

import pytest
from tensorboard.summary.writer.record_writer import RecordWriter

from builders.event_builders import frame, write_bytes
from report_gen.readers.tfrecord import RecordReader, masked_crc32c

PAYLOADS = [b"first record", b"second", b"", b"x" * 300, b"last one"]


def read_all(path, **kwargs) -> tuple[list[bytes], RecordReader]:
    reader = RecordReader(str(path), **kwargs)
    return list(reader.records()), reader


def kinds(reader: RecordReader) -> list[str]:
    return [p.kind for p in reader.problems]


def test_masked_crc_matches_tensorboard_writer():
    out = io.BytesIO()
    RecordWriter(out).write(b"hello tensorboard")
    assert out.getvalue() == frame(b"hello tensorboard")
    assert masked_crc32c(b"") == int.from_bytes(frame(b"")[-4:], "little")


@pytest.mark.parametrize("chunk_size", [16 << 20, 7, 64])
def test_clean_file_any_chunk_size(tmp_path, chunk_size):
    path = write_bytes(tmp_path / "f", b"".join(frame(p) for p in PAYLOADS))
    records, reader = read_all(path, chunk_size=chunk_size)
    assert records == PAYLOADS
    assert reader.problems == []
    assert reader.records_read == len(PAYLOADS)


@pytest.mark.parametrize("cut", [3, 11, 12, 20])
def test_truncated_last_record_is_info(tmp_path, cut):
    good = frame(b"a") + frame(b"bb")
    path = write_bytes(tmp_path / "f", good + frame(b"truncated payload")[:cut])
    records, reader = read_all(path)
    assert records == [b"a", b"bb"]
    (problem,) = reader.problems
    assert (problem.kind, problem.severity, problem.offset) == ("truncated-record", "info", len(good))


def test_bad_length_crc_resyncs_to_next_record(tmp_path):
    damaged = bytearray(frame(b"second record"))
    damaged[9] ^= 0xFF  # inside the length CRC
    first = frame(b"first")
    path = write_bytes(tmp_path / "f", first + bytes(damaged) + frame(b"third") + frame(b"fourth"))
    records, reader = read_all(path)
    assert records == [b"first", b"third", b"fourth"]
    (problem,) = reader.problems
    assert (problem.kind, problem.severity) == ("bad-length-crc", "warning")
    assert problem.offset == len(first)
    assert problem.count == len(damaged)


@pytest.mark.parametrize("chunk_size", [16 << 20, 10])
def test_junk_text_between_records(tmp_path, chunk_size):
    junk = b"Epoch 3: loss=0.25 acc=0.91\nWARNING something odd happened\n" * 3
    head = frame(b"one") + frame(b"two")
    path = write_bytes(tmp_path / "f", head + junk + frame(b"three") + frame(b"four"))
    records, reader = read_all(path, chunk_size=chunk_size)
    assert records == [b"one", b"two", b"three", b"four"]
    (problem,) = reader.problems
    assert (problem.kind, problem.severity, problem.offset, problem.count) == (
        "junk-bytes", "warning", len(head), len(junk))


def test_junk_at_end_is_reported_not_dropped_silently(tmp_path):
    head = frame(b"one")
    path = write_bytes(tmp_path / "f", head + b"some trailing log text, no record here\n")
    records, reader = read_all(path)
    assert records == [b"one"]
    assert [(p.kind, p.offset) for p in reader.problems] == [("junk-bytes", len(head))]
    assert "end of the file" in reader.problems[0].message


def test_only_junk_is_not_an_empty_file(tmp_path):
    path = write_bytes(tmp_path / "f", b"this is a text file that was named like an event file\n")
    records, reader = read_all(path)
    assert records == []
    assert kinds(reader) == ["junk-bytes"]


def test_bad_data_crc_skips_and_counts(tmp_path):
    first = frame(b"first")
    bad1 = bytearray(frame(b"payload two"))
    bad1[14] ^= 0x01
    bad2 = bytearray(frame(b"payload four"))
    bad2[-1] ^= 0x01  # the stored data CRC itself
    path = write_bytes(tmp_path / "f", first + bytes(bad1) + frame(b"three") + bytes(bad2) + frame(b"five"))
    records, reader = read_all(path)
    assert records == [b"first", b"three", b"five"]
    (problem,) = reader.problems
    assert (problem.kind, problem.severity, problem.count, problem.offset) == (
        "bad-data-crc", "warning", 2, len(first))


def test_data_crc_check_can_be_turned_off(tmp_path):
    bad = bytearray(frame(b"payload"))
    bad[14] ^= 0x01
    path = write_bytes(tmp_path / "f", bytes(bad))
    records, reader = read_all(path, check_crc=False)
    assert records == [bytes(bad[12:-4])]
    assert reader.problems == []


def test_empty_file_has_no_records_and_no_framing_problem(tmp_path):
    path = write_bytes(tmp_path / "f", b"")
    records, reader = read_all(path)
    assert records == [] and reader.problems == [] and reader.bytes_total == 0


def test_directory_is_unreadable(tmp_path):
    records, reader = read_all(tmp_path)
    assert records == []
    (problem,) = reader.problems
    assert (problem.kind, problem.severity) == ("unreadable", "error")
    assert str(tmp_path) in problem.message


def test_missing_file_is_unreadable(tmp_path):
    _, reader = read_all(tmp_path / "nope")
    assert kinds(reader) == ["unreadable"]


def test_record_larger_than_chunk(tmp_path):
    big = bytes(range(256)) * 100
    path = write_bytes(tmp_path / "f", frame(b"a") + frame(big) + frame(b"z"))
    records, reader = read_all(path, chunk_size=1000)
    assert records == [b"a", big, b"z"] and reader.problems == []


def test_batches_expose_offsets(tmp_path):
    path = write_bytes(tmp_path / "f", b"".join(frame(p) for p in PAYLOADS))
    (batch,) = list(RecordReader(str(path)).batches())
    assert batch.lengths.tolist() == [len(p) for p in PAYLOADS]
    assert batch.starts[0] == 12 and batch.base == 0


def test_runs_of_equal_records_are_framed_in_bulk_with_the_same_damage_handling(tmp_path, monkeypatch):
    """Equal-length records are framed by a bulk look-ahead; damage inside a run (a bad header, a bad
    data CRC, a length change) gives exactly what the record-by-record walk gives."""
    import struct

    import numpy as np

    from report_gen.readers import tfrecord

    payloads = [struct.pack("<I", i) * 8 for i in range(300)]  # 32 bytes each
    payloads[120] = b"x" * 40  # a length change inside the run
    payloads[200:] = [struct.pack("<I", i) * (8 + i % 3) for i in range(200, 300)]  # a cycle of three lengths
    data = bytearray(b"".join(frame(p) for p in payloads))
    size = 32 + 16
    data[50 * size + 9] ^= 0xFF  # record 50: bad length CRC -> resync
    data[70 * size + 14] ^= 0xFF  # record 70: bad data CRC
    path = tmp_path / "f.tfrecord"
    path.write_bytes(bytes(data))

    def read():
        reader = tfrecord.RecordReader(str(path), chunk_size=4096)
        out = list(reader.records())
        return out, [(p.kind, p.offset, p.count) for p in reader.problems]

    bulk = read()
    calls = []
    real = tfrecord._periodic_run
    monkeypatch.setattr(tfrecord, "_periodic_run", lambda *a: calls.append(a[2]) or real(*a))
    assert read() == bulk and [32] in calls  # the look-ahead ran, for both kinds of run (a cycle in any phase)
    assert any(len(c) == 3 and sorted(c) == [32, 36, 40] for c in calls)
    monkeypatch.setattr(tfrecord, "_RUN_MIN", 10**9)  # record by record
    walk = read()
    assert bulk == walk
    assert len(bulk[0]) == 298 and payloads[120] in bulk[0]
    assert {k for k, _, _ in bulk[1]} == {"bad-length-crc", "bad-data-crc"}
    assert np.all([r in payloads for r in bulk[0]])


# ---------------------------------------------------------------------------------------------
# hostile and changing files (issue 14)

import json  # noqa: E402
import os  # noqa: E402
import struct  # noqa: E402
import threading  # noqa: E402

import numpy as np  # noqa: E402

from builders.event_builders import make_scalar_event, make_version_event  # noqa: E402
from builders.hostile_tools import bounded_time  # noqa: E402
from builders.memtools import peak_memory  # noqa: E402
from report_gen.readers.tfrecord import find_header, header_crcs  # noqa: E402


def header(length: int) -> bytes:
    """A header with a VALID length CRC claiming `length` bytes (no data follows it)."""
    raw = struct.pack("<Q", length)
    return raw + struct.pack("<I", masked_crc32c(raw))


def test_vectorised_header_crc_matches_the_scalar_one():
    rows = np.random.default_rng(0).integers(0, 256, size=(2000, 8), dtype=np.uint8)
    rows[:10] = 0
    assert header_crcs(rows).tolist() == [masked_crc32c(bytes(r)) for r in rows]


@pytest.mark.parametrize("fill", ["random", "zeros", "text"])
def test_find_header_finds_the_first_valid_header(fill):
    rng = np.random.default_rng(1)
    junk = {"random": rng.integers(0, 256, 100_000, dtype=np.uint8).tobytes(), "zeros": bytes(100_000),
            "text": b"loss=0.1\n" * 11_111}[fill]
    buf = junk[:70_001] + frame(b"payload") + junk[70_001:]
    assert find_header(buf, 0, len(buf) - 11, len(buf)) == 70_001
    assert find_header(buf, 70_002, len(buf) - 11, len(buf)) == -1
    assert find_header(buf, 0, len(buf) - 11, 70_001 + 16 + 6) == -1  # the record would not fit


@pytest.mark.parametrize("fill", ["random", "zeros"])
def test_64_mb_of_junk_is_resynced_fast(tmp_path, fill):
    path = tmp_path / "events.out.tfevents.1"
    with open(path, "wb") as f:
        f.write(frame(b"first"))
        if fill == "random":
            f.write(np.random.default_rng(2).integers(0, 256, 64 << 20, dtype=np.uint8).tobytes())
        else:
            f.seek(64 << 20, os.SEEK_CUR)  # a hole: a sparse file of zeros
        f.write(frame(b"last"))
    with bounded_time(3.0):
        records, reader = read_all(path)
    assert records == [b"first", b"last"]
    (problem,) = reader.problems
    assert (problem.kind, problem.offset, problem.count) == ("bad-length-crc", len(frame(b"first")), 64 << 20)


def test_an_oversized_record_is_skipped_by_seek_and_reported(tmp_path):
    """A valid header claiming 3 GiB in a sparse 3 GiB file: seeked past, never read or allocated."""
    path = tmp_path / "events.out.tfevents.1"
    length = 3 << 30
    with open(path, "wb") as f:
        f.write(frame(b"before") + header(length))
        f.seek(length + 4, os.SEEK_CUR)
        f.write(frame(b"after"))
    assert os.stat(path).st_blocks * 512 < 1 << 20  # really sparse: nothing to read there
    with bounded_time(1.0), peak_memory() as mem:
        records, reader = read_all(path, chunk_size=1 << 20)
    assert records == [b"before", b"after"]
    assert mem["peak"] < 8 << 20
    (problem,) = reader.problems
    assert (problem.kind, problem.severity, problem.offset, problem.count) == (
        "oversized-record", "warning", len(frame(b"before")), length)
    assert "64 MiB" in problem.message


def test_the_record_cap_is_inclusive(tmp_path, monkeypatch):
    """A record of exactly MAX_RECORD_BYTES is read; one byte more is skipped (a small cap, to test it)."""
    import report_gen.readers.tfrecord as tfrecord

    monkeypatch.setattr(tfrecord, "MAX_RECORD_BYTES", 1000)
    path = write_bytes(tmp_path / "f", frame(b"a") + frame(bytes(1000)) + frame(bytes(1001)) + frame(b"z"))
    records, reader = read_all(path, chunk_size=256)
    assert [len(r) for r in records] == [1, 1000, 1]
    assert [(p.kind, p.count) for p in reader.problems] == [("oversized-record", 1001)]


def test_a_lying_header_in_mid_file_does_not_hide_what_follows(tmp_path):
    """A valid header claiming 1 TB, then more records: resynced past (a warning), not a 'truncated' tail."""
    first, lie = frame(b"one") + frame(b"two"), header(1 << 40)
    path = write_bytes(tmp_path / "f", first + lie + frame(b"three") + frame(b"four"))
    records, reader = read_all(path)
    assert records == [b"one", b"two", b"three", b"four"]
    (problem,) = reader.problems
    assert (problem.kind, problem.severity, problem.offset, problem.count) == (
        "bad-length", "warning", len(first), len(lie))
    assert "1,099,511,627,776 bytes" in problem.message


def test_a_lying_header_with_nothing_after_is_a_truncated_tail(tmp_path):
    first = frame(b"one")
    path = write_bytes(tmp_path / "f", first + header(1 << 40) + b"partial payload")
    records, reader = read_all(path)
    assert records == [b"one"]
    assert [(p.kind, p.severity, p.offset) for p in reader.problems] == [("truncated-record", "info", len(first))]


def test_nan_after_a_lying_header_is_still_found(tmp_path):
    """End to end: the NaN that follows a lying 1 TB header is read, so the verdict is not PASS."""
    from report_gen.cli import main

    run = tmp_path / "run"
    run.mkdir()
    good = b"".join(frame(make_scalar_event("train/loss", i, 2.0 - i * 0.01)) for i in range(40))
    tail = frame(make_scalar_event("train/loss", 40, float("nan")))
    write_bytes(run / "events.out.tfevents.1.host", frame(make_version_event()) + good + header(1 << 40) + tail)
    out = tmp_path / "out"
    assert main(["diagnose", str(run), "-o", str(out), "--format", "json", "-q"]) == 1
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["verdict"] == "fail"
    assert any("non-finite" in f["message"] for f in report["findings"])
    assert any(p["kind"] == "bad-length" for p in report["inputs"]["runs"][0]["problems"])


def test_a_file_that_grows_while_read_is_read_up_to_its_size_at_open(tmp_path):
    path = write_bytes(tmp_path / "f", b"".join(frame(b"r%d" % i) for i in range(50)))
    size_at_open = path.stat().st_size
    reader = RecordReader(str(path), chunk_size=64)
    records = []
    for batch in reader.batches():
        records.extend(batch.records())
        with open(path, "ab") as f:  # a log redirected into the file, or a run still writing it
            f.write(frame(b"late") * 10)
    assert records == [b"r%d" % i for i in range(50)]
    assert reader.bytes_total == size_at_open
    (problem,) = reader.problems
    assert (problem.kind, problem.severity, problem.offset) == ("file-grew", "info", size_at_open)


def test_a_file_that_shrinks_while_read_is_reported(tmp_path):
    path = write_bytes(tmp_path / "f", b"".join(frame(b"r%d" % i) for i in range(50)))
    reader = RecordReader(str(path), chunk_size=64)
    records = []
    for batch in reader.batches():
        records.extend(batch.records())
        os.truncate(path, 100)
    assert 0 < len(records) < 50
    assert "file-shrank" in kinds(reader)


def _read_in_thread(path) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(read_all(path)), daemon=True)
    thread.start()
    thread.join(10)
    return thread, out


def test_a_fifo_named_like_an_event_file_is_refused_without_blocking(tmp_path):
    path = tmp_path / "events.out.tfevents.1.host"
    os.mkfifo(path)
    thread, out = _read_in_thread(path)
    if thread.is_alive():  # unblock the stuck open before failing
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    assert not thread.is_alive()
    (records, reader), = out
    assert records == []
    (problem,) = reader.problems
    assert (problem.kind, problem.severity) == ("unreadable", "error")
    assert "FIFO" in problem.message and "\n" not in problem.message


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_symlink_to_a_device_is_refused_without_reading(tmp_path, device):
    path = tmp_path / "events.out.tfevents.1.host"
    path.symlink_to(device)
    thread, out = _read_in_thread(path)
    assert not thread.is_alive()
    (records, reader), = out
    assert records == [] and kinds(reader) == ["unreadable"]
    assert "character device" in reader.problems[0].message and device in reader.problems[0].message
