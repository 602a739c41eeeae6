"""Framing layer: byte-level fixtures for every kind of damage."""
from __future__ import annotations

import io

import pytest
from tensorboard.summary.writer.record_writer import RecordWriter

from event_builders import frame, write_bytes
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
    real = tfrecord._equal_run
    monkeypatch.setattr(tfrecord, "_equal_run", lambda *a: calls.append(1) or real(*a))
    assert read() == bulk and calls  # the look-ahead did run
    monkeypatch.setattr(tfrecord, "_RUN_MIN", 10**9)  # record by record
    walk = read()
    assert bulk == walk
    assert len(bulk[0]) == 298 and payloads[120] in bulk[0]
    assert {k for k, _, _ in bulk[1]} == {"bad-length-crc", "bad-data-crc"}
    assert np.all([r in payloads for r in bulk[0]])
