"""TFRecord framing layer: split a TensorBoard event file into record payloads, survive damage.

A TFRecord file is a sequence of records::

    uint64 length (little endian) | uint32 masked_crc32c(length) | data[length] | uint32 masked_crc32c(data)

with ``masked(crc) = ((crc >> 15 | crc << 17) + 0xa282ead8) & 0xffffffff``.

This layer knows nothing about protobuf. It streams the file in chunks (memory does not grow with file
size), and hands out :class:`RecordBatch` objects: one buffer plus the offsets of the valid records in
it, so the decoding layer can work on a whole batch at once (vectorised) or record by record.

Damage is never an exception; it becomes a :class:`report_gen.core.Problem` on
:attr:`RecordReader.problems`:

- ``truncated-record`` (info): the file ends inside a record (a killed run). Everything before is read.
- ``bad-length-crc`` / ``junk-bytes`` (warning): the header at some offset is not a valid record header.
  ``junk-bytes`` when the bytes there are printable text (e.g. a log line written into the file),
  ``bad-length-crc`` otherwise. The reader then resynchronises: it scans forward for the next offset
  holding a valid header (length CRC matches, record fits in the file) and continues there.
  ``count`` is the number of bytes skipped.
- ``bad-data-crc`` (warning): records whose payload CRC does not match are skipped; one Problem per
  file with ``count`` = number of such records and ``offset`` = the first one.
- ``unreadable`` (error): the file cannot be opened or read (permissions, a directory, I/O error).
"""
from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import crc32c as _crc32c
import numpy as np

from report_gen.core import Problem, ProblemKind

_HEADER = struct.Struct("<QI")
_U32 = struct.Struct("<I")
_HEADER_SIZE = 12
_FOOTER_SIZE = 4
_FRAME_SIZE = _HEADER_SIZE + _FOOTER_SIZE
_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def masked_crc32c(data: bytes) -> int:
    """Return the masked CRC32C of ``data`` as stored in TFRecord framing."""
    return _mask(_crc32c.crc32c(data))


@dataclass
class RecordBatch:
    """Valid records framed from one chunk of a file.

    Record ``i`` is ``buffer[starts[i]:starts[i] + lengths[i]]``; ``offsets[i]`` is where its frame
    begins in the file. Batches come in file order and records within a batch in file order.
    """

    buffer: bytes
    starts: np.ndarray  # int64
    lengths: np.ndarray  # int64
    base: int  # file offset of buffer[0]

    def __len__(self) -> int:
        return len(self.starts)

    def records(self) -> Iterator[bytes]:
        """Yield each record's payload as bytes."""
        buf = self.buffer
        for start, length in zip(self.starts.tolist(), self.lengths.tolist()):
            yield buf[start:start + length]


@dataclass
class RecordReader:
    """Stream the records of one TFRecord file; damage is collected in :attr:`problems`.

    Iterate :meth:`batches` (or :meth:`records`) once. ``check_crc`` turns CRC verification off
    (header CRCs are still needed, and checked, when resynchronising after damage).
    """

    path: str
    check_crc: bool = True
    chunk_size: int = 16 << 20
    problems: list[Problem] = field(default_factory=list)
    records_read: int = 0
    bytes_total: int = 0
    bad_data_crc: int = 0
    _first_bad_data_offset: int | None = None

    def records(self) -> Iterator[bytes]:
        """Yield each valid record's payload in file order."""
        for batch in self.batches():
            yield from batch.records()

    def batches(self) -> Iterator[RecordBatch]:
        """Yield batches of valid records in file order (see module docstring for damage handling)."""
        try:
            with open(self.path, "rb") as f:
                self.bytes_total = os.fstat(f.fileno()).st_size
                yield from _Scanner(self, f).run()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            self.problems.append(Problem(self.path, ProblemKind.UNREADABLE,
                                         f"{self.path}: cannot read file ({reason})", severity="error"))
            return
        if self.bad_data_crc:
            self.problems.append(Problem(
                self.path, ProblemKind.BAD_DATA_CRC,
                f"{self.path}: {self.bad_data_crc} record(s) with a bad data CRC skipped",
                severity="warning", offset=self._first_bad_data_offset, count=self.bad_data_crc))

    def _note_bad_data(self, offset: int) -> None:
        self.bad_data_crc += 1
        if self._first_bad_data_offset is None:
            self._first_bad_data_offset = offset


class _Scanner:
    """The framing state machine for one open file (buffer, position, refills, resync)."""

    def __init__(self, reader: RecordReader, f) -> None:
        self.reader = reader
        self.f = f
        self.buf = b""
        self.pos = 0  # position in buf
        self.base = 0  # file offset of buf[0]
        self.eof = False
        self.known_headers: dict[int, int] = {}  # length -> its masked CRC, once verified

    # -- buffer management -------------------------------------------------------------------
    def _fill(self, need: int) -> bool:
        """Make ``need`` bytes available from ``pos``; False if the file ends first."""
        while len(self.buf) - self.pos < need and not self.eof:
            self.base += self.pos
            rest = self.buf[self.pos:]
            chunk = self.f.read(max(self.reader.chunk_size, need - len(rest)))
            if not chunk:
                self.eof = True
            self.buf = rest + chunk
            self.pos = 0
        return len(self.buf) - self.pos >= need

    # -- main loop ----------------------------------------------------------------------------
    def run(self) -> Iterator[RecordBatch]:
        while True:
            batch, stopped_at_bad_header = self._frame_buffered()
            if len(batch):
                self.reader.records_read += len(batch.starts)
                yield batch
            if stopped_at_bad_header:
                self._resync()
            elif not self._fill(_HEADER_SIZE) or (self._header_ok() and not self._fill_record()):
                break
        self._report_tail()

    def _frame_buffered(self) -> tuple[RecordBatch, bool]:
        """Frame every complete record in the buffer; True if stopped at an invalid header.

        The hot loop only walks lengths: header CRCs are cached per length value (records of one
        size share the header), data CRCs are computed here and compared in bulk with numpy. After a
        few records of one length, the headers where the next records of that same length would sit
        are checked in bulk with numpy (a run of equal records, as a scalar logger writes them, is
        framed in one step); the first header that differs ends the run and the loop goes on from it.
        """
        buf, pos, n = self.buf, self.pos, len(self.buf)
        check = self.reader.check_crc
        crc, unpack, known = _crc32c.crc32c, _HEADER.unpack_from, self.known_headers
        starts: list[int] = []
        crcs: list[int] = []
        bad_header = False
        raw = np.frombuffer(buf, dtype=np.uint8)
        same, last_length, cooldown = 0, -1, 0
        while pos + _HEADER_SIZE <= n:
            length, length_crc = unpack(buf, pos)
            if known.get(length) != length_crc:
                if _mask(crc(buf[pos:pos + 8])) != length_crc:
                    bad_header = True
                    break
                known[length] = length_crc
            start = pos + _HEADER_SIZE
            end = start + length
            if end + _FOOTER_SIZE > n:
                break
            starts.append(start)
            if check:
                crcs.append(crc(buf[start:end]))
            pos = end + _FOOTER_SIZE
            same = same + 1 if length == last_length else 0
            last_length = length
            if cooldown:
                cooldown -= 1
            elif same >= _RUN_MIN:
                jumped = _equal_run(raw, pos, length, length_crc, n)
                if jumped < _RUN_MIN:
                    cooldown = 64  # lengths alternate here: do not probe on every record
                    continue
                run_starts = range(pos + _HEADER_SIZE, pos + jumped * (length + _FRAME_SIZE), length + _FRAME_SIZE)
                starts.extend(run_starts)
                if check:
                    crcs.extend([crc(buf[s:s + length]) for s in run_starts])
                pos += jumped * (length + _FRAME_SIZE)
        self.pos = pos
        return self._batch(starts, crcs if check else None), bad_header

    def _batch(self, starts: list[int], crcs: list[int] | None) -> RecordBatch:
        """Build the batch, dropping (and counting) records whose data CRC does not match."""
        raw = np.frombuffer(self.buf, dtype=np.uint8)
        start_arr = np.array(starts, dtype=np.int64)
        lengths = gather_rows(raw, start_arr - _HEADER_SIZE, 8).view("<u8").ravel().astype(np.int64)
        if crcs is not None and starts:
            stored = gather_rows(raw, start_arr + lengths, 4).view("<u4").ravel()
            bad = _mask(np.array(crcs, dtype=np.uint64)).astype(np.uint32) != stored
            if bad.any():
                for offset in (start_arr[bad] - _HEADER_SIZE).tolist():
                    self.reader._note_bad_data(self.base + offset)
                start_arr, lengths = start_arr[~bad], lengths[~bad]
        return RecordBatch(self.buf, start_arr, lengths, self.base)

    def _header_ok(self) -> bool:
        """The 12 bytes at ``pos`` are a header whose length CRC matches."""
        buf, pos = self.buf, self.pos
        return _U32.unpack_from(buf, pos + 8)[0] == masked_crc32c(buf[pos:pos + 8])

    def _fill_record(self) -> bool:
        """Buffer the whole record whose (valid) header is at ``pos``; False if the file ends first."""
        length = _HEADER.unpack_from(self.buf, self.pos)[0]
        if self.base + self.pos + _FRAME_SIZE + length > self.reader.bytes_total:
            return False
        return self._fill(_FRAME_SIZE + length)

    # -- damage -------------------------------------------------------------------------------
    def _resync(self) -> None:
        """Skip from a bad header to the next valid header whose record fits in the file (or to EOF).

        A random 12-byte window passes the length CRC with probability 2**-32, and the length must also
        fit in the file; a rare false hit just shows up as a bad data CRC next.
        """
        start = self.base + self.pos
        head = self.buf[self.pos:self.pos + _HEADER_SIZE]
        self.pos += 1
        while self._fill(_HEADER_SIZE):
            if self._header_ok() and self._fill_record():
                break
            self.pos += 1
        else:
            self.pos = len(self.buf)
        skipped = self.base + self.pos - start
        is_text = all(b in _PRINTABLE for b in head)
        kind = ProblemKind.JUNK_BYTES if is_text else ProblemKind.BAD_LENGTH_CRC
        what = "non-record bytes" if is_text else "a record header with a bad length CRC"
        self.reader.problems.append(Problem(
            self.reader.path, kind,
            f"{self.reader.path}: {what} at byte {start}; skipped {skipped} bytes to "
            + ("the next valid record" if self.pos < len(self.buf) else "the end of the file"),
            severity="warning", offset=start, count=skipped))

    def _report_tail(self) -> None:
        left = len(self.buf) - self.pos
        if left:
            offset = self.base + self.pos
            self.reader.problems.append(Problem(
                self.reader.path, ProblemKind.TRUNCATED_RECORD,
                f"{self.reader.path}: last record at byte {offset} is incomplete ({left} bytes); "
                "the run was probably killed while writing",
                severity="info", offset=offset))


_RUN_MIN = 8  # records of one length before a bulk look-ahead
_RUN_WINDOW = 8192  # records looked at per look-ahead


def _equal_run(raw: np.ndarray, pos: int, length: int, length_crc: int, n: int) -> int:
    """How many complete records of exactly `length` (with the same, already verified, header) follow
    back to back from `pos` in the buffer: their headers are read at the predicted offsets in bulk."""
    step = length + _FRAME_SIZE
    count = min((n - pos) // step, _RUN_WINDOW)
    if count <= 0:
        return 0
    at = pos + step * np.arange(count, dtype=np.int64)
    headers = gather_rows(raw, at, _HEADER_SIZE)
    good = (headers[:, :8].copy().view("<u8").ravel() == length) & (headers[:, 8:].copy().view("<u4").ravel()
                                                                      == length_crc)
    return count if good.all() else int(np.argmin(good))


def _mask(crc):
    """TFRecord's CRC mask; works on Python ints and on uint64 numpy arrays alike."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def gather_rows(raw: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """Rows of ``width`` bytes starting at each of ``starts`` (contiguous, ready for ``.view``)."""
    return np.ascontiguousarray(raw[starts[:, None] + np.arange(width)])
