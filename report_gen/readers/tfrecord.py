"""TFRecord framing layer: split a TensorBoard event file into record payloads, survive damage.

A TFRecord file is a sequence of records::

    uint64 length (little endian) | uint32 masked_crc32c(length) | data[length] | uint32 masked_crc32c(data)

with ``masked(crc) = ((crc >> 15 | crc << 17) + 0xa282ead8) & 0xffffffff``.

This layer knows nothing about protobuf. It streams the file in chunks (memory does not grow with file
size), and hands out :class:`RecordBatch` objects: one buffer plus the offsets of the valid records in
it, so the decoding layer can work on a whole batch at once (vectorised) or record by record.

The file is opened only if it is a regular file (`report_gen.safe_open.open_regular`: a FIFO or a
device named like an event file is refused, never waited on), and read only up to the size it had
when opened.

Damage is never an exception; it becomes a :class:`report_gen.core.Problem` on
:attr:`RecordReader.problems`:

- ``truncated-record`` (info): the file ends inside a record (a killed run). Everything before is read.
  Only when nothing valid follows: a header that claims more bytes than the file holds, with valid
  records after it, is ``bad-length`` instead.
- ``bad-length-crc`` / ``junk-bytes`` (warning): the header at some offset is not a valid record header.
  ``junk-bytes`` when the bytes there are printable text (e.g. a log line written into the file),
  ``bad-length-crc`` otherwise. The reader then resynchronises: it scans forward for the next offset
  holding a valid header (length CRC matches, record fits in the file) and continues there.
  ``count`` is the number of bytes skipped.
- ``bad-length`` (warning): a header with a valid CRC claims a record longer than what is left of the
  file (a lying header); the reader resynchronises past it (``count`` = bytes skipped).
- ``oversized-record`` (warning): a valid record longer than `MAX_RECORD_BYTES`; skipped by seeking
  past it, never read into memory (``count`` = its length).
- ``bad-data-crc`` (warning): records whose payload CRC does not match are skipped; one Problem per
  file with ``count`` = number of such records and ``offset`` = the first one.
- ``file-grew`` (info) / ``file-shrank`` (warning): the file changed size while it was read (a run
  still writing it, or truncating it); what it held at open is read, nothing past it.
- ``unreadable`` (error): the file cannot be opened or read (permissions, a directory, a FIFO or a
  device, an I/O error).

Resynchronising is vectorised: `find_header` tests every offset of a window at once with numpy
(length bytes that must be zero for the record to fit in the file, then the header CRC computed with
eight 256-entry tables, CRC32C being affine in its input bits), so 64 MB of junk costs well under a
second instead of a CRC per byte in Python.
"""
from __future__ import annotations

import functools
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from report_gen.core import Problem, ProblemKind
from report_gen.numeric import crc32c_module
from report_gen.safe_open import open_regular

_crc32c = crc32c_module()

_HEADER = struct.Struct("<QI")
_U32 = struct.Struct("<I")
_HEADER_SIZE = 12
_FOOTER_SIZE = 4
_FRAME_SIZE = _HEADER_SIZE + _FOOTER_SIZE
_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}

#: The longest record read into memory. Event records are protobuf ``Event`` messages, and protobuf's
#: long-standing default message size limit is 64 MiB (CodedInputStream's total-bytes limit, 64 << 20,
#: still the default of several runtimes). Real TensorBoard records are 50 bytes (a scalar) to a few
#: MB (an image, a graph); a longer one is skipped by seeking past it and reported, so a file whose
#: one header claims gigabytes never makes the reader allocate them.
MAX_RECORD_BYTES = 64 << 20
_FIRST_WINDOW = 4 << 10  # resync windows start small (damage is usually short) and double
_MAX_WINDOW = 4 << 20


def masked_crc32c(data: bytes) -> int:
    """Return the masked CRC32C of ``data`` as stored in TFRecord framing."""
    return _mask(_crc32c.crc32c(data))


def _crc_byte_table() -> np.ndarray:
    """The 256-entry table of reflected CRC32C (polynomial 0x82F63B78): the register after one byte."""
    reg = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        reg = np.where(reg & 1, (reg >> np.uint32(1)) ^ np.uint32(0x82F63B78), reg >> np.uint32(1)).astype(np.uint32)
    return reg


_CRC_BYTE_TABLE = _crc_byte_table()
_VECTOR_MAX_LENGTH = 4096  # longer records: one C call each costs less than their tables
_BLOCK_ROWS = 1 << 14  # records per block (a block of 16k short records stays in cache)


@functools.lru_cache(maxsize=64)
def _position_tables(length: int) -> tuple[np.ndarray, int]:
    """CRC32C of `length` bytes as ``base ^ T[0][b0] ^ ... ^ T[length-1][b_last]``.

    The CRC is affine over GF(2) in its input bits, so each byte's contribution depends only on the
    byte and its position: the byte's table entry advanced through the zero bytes that follow it
    (one standard table step per byte). ``base`` is the CRC of `length` zero bytes."""
    tables = np.empty((length, 256), dtype=np.uint32)
    t = _CRC_BYTE_TABLE.copy()
    tables[length - 1] = t
    for k in range(length - 2, -1, -1):
        t = (t >> np.uint32(8)) ^ _CRC_BYTE_TABLE[t & np.uint32(0xFF)]
        tables[k] = t
    tables.flags.writeable = False
    return tables, _crc32c.crc32c(bytes(length))


def header_crcs(length_bytes: np.ndarray) -> np.ndarray:
    """Masked CRC32C of each row of an (n, 8) uint8 array (the length fields of n headers)."""
    tables, base = _position_tables(8)
    crc = np.full(len(length_bytes), base, dtype=np.uint32)
    for k in range(8):
        crc ^= tables[k][length_bytes[:, k]]
    return _mask_u32(crc)


def find_header(buf: bytes, start: int, stop: int, file_end: int) -> int:
    """The first offset i in [start, stop) of `buf` holding a valid record header (length CRC
    matches) whose record fits before `file_end` (an offset in buf's coordinates: i + 16 + length
    <= file_end); -1 when there is none. buf[i:i + 12] must exist for every i < stop.

    Vectorised: offsets are first filtered on the length bytes that must be zero for any record to
    fit (for a file under 4 GiB, the top four), then on not being all zero (sparse files), and only
    the survivors get their header CRC computed, with tables, and compared."""
    n = stop - start
    max_length = file_end - start - _FRAME_SIZE
    if n <= 0 or max_length < 0:
        return -1
    raw = np.frombuffer(buf, dtype=np.uint8)[start:stop + _HEADER_SIZE - 1]
    zero = raw == 0
    wide = (max_length.bit_length() + 7) // 8  # length bytes that may be non-zero
    candidates = np.ones(n, dtype=bool)
    for k in range(wide, 8):
        candidates &= zero[k:k + n]
    if np.count_nonzero(candidates) > n // 64:  # mostly zeros: an all-zero header is never valid
        nonzero = ~zero
        near = nonzero[:n].copy()
        for k in range(1, _HEADER_SIZE):
            near |= nonzero[k:k + n]
        candidates &= near
    idx = np.flatnonzero(candidates)
    for block in range(0, len(idx), 1 << 16):
        at = idx[block:block + (1 << 16)]
        rows = raw[at[:, None] + np.arange(_HEADER_SIZE)]
        lengths = np.ascontiguousarray(rows[:, :8]).view("<u8").ravel()
        room = file_end - (start + at) - _FRAME_SIZE  # int64, may be negative
        fits = (room >= 0) & (lengths <= np.maximum(room, 0).astype(np.uint64))
        if not fits.any():
            continue
        at, rows = at[fits], rows[fits]
        stored = np.ascontiguousarray(rows[:, 8:]).view("<u4").ravel()
        hit = np.flatnonzero(header_crcs(rows[:, :8]) == stored)
        if len(hit):
            return start + int(at[hit[0]])
    return -1


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
    ``bytes_total`` is the size of the file when it was opened: nothing past it is read.
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
            with open_regular(self.path, buffering=0) as f:  # raw: no read-ahead past what is asked
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
        self.size = reader.bytes_total  # measured at open: nothing past it is ever read
        self.buf = b""
        self.pos = 0  # position in buf
        self.base = 0  # file offset of buf[0]
        self.fpos = 0  # file offset of the next read
        self.eof = False
        self.shrank = False
        self.tail: tuple[int, int] | None = None  # (offset, bytes) of an incomplete last record
        self.known_headers: dict[int, int] = {}  # length -> its masked CRC, once verified

    # -- buffer management -------------------------------------------------------------------
    def _fill(self, need: int) -> bool:
        """Make ``need`` bytes available from ``pos``; False if the file (as opened) ends first."""
        while len(self.buf) - self.pos < need and not self.eof:
            self.base += self.pos
            rest = self.buf[self.pos:]
            want = min(max(self.reader.chunk_size, need - len(rest)), self.size - self.fpos)
            chunk = self.f.read(want) if want > 0 else b""
            self.fpos += len(chunk)
            if len(chunk) < want:
                self.shrank = True
            if not chunk or self.fpos >= self.size:
                self.eof = True
            self.buf = rest + chunk
            self.pos = 0
        return len(self.buf) - self.pos >= need

    def _problem(self, kind: ProblemKind, message: str, severity: str = "warning", **extra) -> None:
        path = self.reader.path
        self.reader.problems.append(Problem(path, kind, f"{path}: {message}", severity=severity, **extra))

    # -- main loop ----------------------------------------------------------------------------
    def run(self) -> Iterator[RecordBatch]:
        while True:
            batch, stopped_at_bad_header = self._frame_buffered()
            if len(batch):
                self.reader.records_read += len(batch.starts)
                yield batch
            if stopped_at_bad_header:
                self._resync()
                continue
            if not self._fill(_HEADER_SIZE):
                break  # the end of the file, or a partial header there
            if not self._header_ok():
                continue  # framing flags it next round
            length = _HEADER.unpack_from(self.buf, self.pos)[0]
            if self.base + self.pos + _FRAME_SIZE + length > self.size:
                if not self._resync_past_lying_header(length):
                    break
            elif length > MAX_RECORD_BYTES:
                self._skip_oversized(length)
            elif not self._fill(_FRAME_SIZE + length):
                break  # only when the file shrank under us
        self._report_tail()
        self._report_size_change()

    def _frame_buffered(self) -> tuple[RecordBatch, bool]:
        """Frame every complete record in the buffer; True if stopped at an invalid header.

        The hot loop only walks lengths: header CRCs are cached per length value (records of one
        size share the header). A logger writes the same few tags over and over, so record lengths
        repeat with a short period (one length for one tag, or the cycle `loss, accuracy, lr` of a
        training step). Every few records the loop looks for such a period in the lengths just framed
        and checks, in bulk with numpy, the headers where the next cycles' records would sit; the
        cycles that match are framed in one step. When a run is broken by another record (an
        evaluation every hundred steps), the same cycle is tried again right after it; when two runs
        alike have one record between them, that record and a run are the cycle of a whole
        evaluation interval, looked for in the same way. Data CRCs are computed afterwards for the
        whole batch, per record length, with numpy (`records_crc_ok`).
        """
        buf, pos, n = self.buf, self.pos, len(self.buf)
        unpack, known = _HEADER.unpack_from, self.known_headers
        singles: list[int] = []  # starts of records framed one by one since the last run
        single_lengths: list[int] = []
        parts: list[tuple[np.ndarray, np.ndarray]] = []  # (starts, lengths) in file order
        bad_header = False
        raw = np.frombuffer(buf, dtype=np.uint8)
        history: list[int] = []  # lengths of the records framed one by one lately
        cooldown = backoff = _RUN_MIN  # records until the next look; the wait doubles after each miss
        retry: list[int] | None = None  # the cycle of the run just broken
        hint = 0  # cycles in the last run (an evaluation every hundred steps breaks every run alike)
        between: tuple[tuple[int, ...], int, int] | None = None  # (cycle, cycles, length) of run, record, run
        while pos + _HEADER_SIZE <= n:
            length, length_crc = unpack(buf, pos)
            if known.get(length) != length_crc:
                if _mask(_crc32c.crc32c(buf[pos:pos + 8])) != length_crc:
                    bad_header = True
                    break
                known[length] = length_crc
            end = pos + _HEADER_SIZE + length
            if end + _FOOTER_SIZE > n or length > MAX_RECORD_BYTES:
                break  # needs more bytes, does not fit, or is too long: run() decides
            singles.append(pos + _HEADER_SIZE)
            single_lengths.append(length)
            pos = end + _FOOTER_SIZE
            history.append(length)
            cycle = None
            if retry is not None and pos + _HEADER_SIZE <= n:
                upcoming = unpack(buf, pos)[0]
                if upcoming in retry:  # the cycle goes on after the record that broke it
                    k = retry.index(upcoming)
                    cycle = retry[k:] + retry[:k]
                    between = (tuple(retry), hint, length)  # the last run and the one record after it
                retry = None
            if cycle is None:
                if cooldown:
                    cooldown -= 1
                    continue
                cycle = _period(history)
            cycles = _periodic_run(raw, pos, cycle, known, n, hint) if cycle else 0
            if cycles < _RUN_MIN_CYCLES:
                between = None
                backoff = min(backoff * 2, _MAX_BACKOFF)  # no period here: look again later, less often
                cooldown = backoff
                del history[:-2 * _MAX_PERIOD]
                continue
            if singles:
                parts.append((np.array(singles, dtype=np.int64), np.array(single_lengths, dtype=np.int64)))
                singles, single_lengths = [], []
            parts.append(_periodic(pos, cycle, cycles))
            pos += cycles * (sum(cycle) + _FRAME_SIZE * len(cycle))
            if between is not None and between[:2] == (tuple(cycle), cycles):  # two runs alike, one record between
                outer = [between[2]] + cycle * cycles  # that record and a run: the cycle of a whole evaluation interval
                repeats = _periodic_run(raw, pos, outer, known, n) if len(outer) <= _MAX_OUTER else 0
                if repeats:
                    parts.append(_periodic(pos, outer, repeats))
                    pos += repeats * (sum(outer) + _FRAME_SIZE * len(outer))
            between = None
            history, cooldown, backoff, retry, hint = [], _RUN_MIN, _RUN_MIN, cycle, cycles
        if singles:
            parts.append((np.array(singles, dtype=np.int64), np.array(single_lengths, dtype=np.int64)))
        self.pos = pos
        return self._batch(parts), bad_header

    def _batch(self, parts: list[tuple[np.ndarray, np.ndarray]]) -> RecordBatch:
        """Build the batch, dropping (and counting) records whose data CRC does not match."""
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return RecordBatch(self.buf, empty, empty, self.base)
        start_arr = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        lengths = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        if self.reader.check_crc and start_arr.size:
            raw = np.frombuffer(self.buf, dtype=np.uint8)
            bad = np.empty(start_arr.size, dtype=bool)
            for length, idx in length_groups(lengths):
                bad[idx] = ~records_crc_ok(raw, start_arr[idx], length)
            if bad.any():
                for offset in (start_arr[bad] - _HEADER_SIZE).tolist():
                    self.reader._note_bad_data(self.base + offset)
                start_arr, lengths = start_arr[~bad], lengths[~bad]
        return RecordBatch(self.buf, start_arr, lengths, self.base)

    def _header_ok(self) -> bool:
        """The 12 bytes at ``pos`` are a header whose length CRC matches."""
        buf, pos = self.buf, self.pos
        return _U32.unpack_from(buf, pos + 8)[0] == masked_crc32c(buf[pos:pos + 8])

    # -- damage -------------------------------------------------------------------------------
    def _search(self, pos: int) -> bool:
        """Move to the first valid header at or after buffer position `pos` whose record fits in
        the file; False (position at the end of the data) when there is none."""
        window = _FIRST_WINDOW
        while True:
            last = len(self.buf) - _HEADER_SIZE + 1  # offsets with a whole header buffered
            while pos < last:
                stop = min(last, pos + window)
                found = find_header(self.buf, pos, stop, self.size - self.base)
                if found >= 0:
                    self.pos = found
                    return True
                pos, window = stop, min(window * 2, _MAX_WINDOW)
            self.pos = pos
            if not self._fill(len(self.buf) - pos + 1):
                self.pos = len(self.buf)
                return False
            pos = self.pos

    def _resync(self) -> None:
        """Skip from a bad header to the next valid header whose record fits in the file (or to EOF).

        A random 12-byte window passes the length CRC with probability 2**-32, and the length must also
        fit in the file; a rare false hit just shows up as a bad data CRC next.
        """
        start = self.base + self.pos
        head = self.buf[self.pos:self.pos + _HEADER_SIZE]
        found = self._search(self.pos + 1)
        skipped = self.base + self.pos - start
        is_text = all(b in _PRINTABLE for b in head)
        kind = ProblemKind.JUNK_BYTES if is_text else ProblemKind.BAD_LENGTH_CRC
        what = "non-record bytes" if is_text else "a record header with a bad length CRC"
        self._problem(kind, f"{what} at byte {start}; skipped {skipped} bytes to "
                      + ("the next valid record" if found else "the end of the file"),
                      offset=start, count=skipped)

    def _resync_past_lying_header(self, length: int) -> bool:
        """A header with a valid CRC claims more than the file holds. Resync past it when a valid
        record follows (a lying header in mid-file must not hide what comes after it); otherwise
        it is the incomplete last record of a killed run. False in that case."""
        start = self.base + self.pos
        if self._search(self.pos + 1):
            skipped = self.base + self.pos - start
            self._problem(ProblemKind.BAD_LENGTH, f"the record header at byte {start} claims {length:,} bytes, more than "
                          f"the {self.size - start - _FRAME_SIZE:,} left in the file; skipped {skipped} bytes "
                          "to the next valid record", offset=start, count=skipped)
            return True
        self.tail = (start, self.size - start)
        return False

    def _skip_oversized(self, length: int) -> None:
        """A valid record longer than MAX_RECORD_BYTES: seek past it, never read it."""
        start = self.base + self.pos
        after = start + _FRAME_SIZE + length
        self.f.seek(after)
        self.buf, self.pos, self.base, self.fpos = b"", 0, after, after
        self.eof = after >= self.size
        self._problem(ProblemKind.OVERSIZED_RECORD, f"the record at byte {start} holds {length:,} bytes, more than the "
                      f"{MAX_RECORD_BYTES >> 20} MiB a TensorBoard record can hold; skipped without reading it",
                      offset=start, count=length)

    def _report_tail(self) -> None:
        if self.tail is None and len(self.buf) > self.pos:
            self.tail = (self.base + self.pos, len(self.buf) - self.pos)
        if self.tail is not None:
            offset, left = self.tail
            self._problem(ProblemKind.TRUNCATED_RECORD, f"last record at byte {offset} is incomplete ({left} bytes); "
                          "the run was probably killed while writing", severity="info", offset=offset)

    def _report_size_change(self) -> None:
        try:
            now = os.fstat(self.f.fileno()).st_size
        except (OSError, ValueError):
            return
        if self.shrank or now < self.size:
            self._problem(ProblemKind.FILE_SHRANK, f"shrank from {self.size:,} to {now:,} bytes while it was read; "
                          "records past that point are missing", offset=min(now, self.fpos))
        elif now > self.size:
            self._problem(ProblemKind.FILE_GREW, f"grew by {now - self.size:,} bytes while it was read (a run still "
                          f"writing it?); read up to the {self.size:,} bytes it had when opened",
                          severity="info", offset=self.size, count=now - self.size)


_RUN_MIN = 8  # records framed one by one between two looks for a period
_MAX_PERIOD = 16  # the longest cycle of lengths looked for (tags written per step)
_RUN_MIN_CYCLES = 4  # cycles that must follow for a run to be framed in bulk
_MAX_BACKOFF = 1024  # records between two looks, at most, in a file without short periods
_RUN_WINDOW = 1 << 16  # records looked at per look-ahead
_MAX_OUTER = 4096  # records in the cycle of run + record (100 steps of 4 tags and an evaluation: 401)


def _period(history: list[int]) -> list[int] | None:
    """The shortest cycle of lengths the last records repeat (seen twice in a row), or None."""
    for period in range(1, min(_MAX_PERIOD, len(history) // 2) + 1):
        if history[-period:] == history[-2 * period:-period]:
            return history[-period:]
    return None


def _periodic_run(raw: np.ndarray, pos: int, cycle: list[int], known: dict[int, int], n: int, hint: int = 0) -> int:
    """How many complete cycles of records with exactly the lengths of `cycle` (headers already
    verified, in `known`) follow back to back from `pos` in the buffer: the cycles are viewed as rows
    and every record's header bytes compared in bulk, in windows that double (a run broken every
    hundred cycles costs about that much, not a whole window). The first window is `hint` cycles
    (the last run's) when given: runs broken at a fixed interval are then checked in two steps."""
    cycle_bytes = sum(cycle) + _FRAME_SIZE * len(cycle)
    limit = min((n - pos) // cycle_bytes, _RUN_WINDOW // len(cycle))
    if limit <= 0:
        return 0
    columns, expected = _cycle_headers(tuple(cycle), tuple(known[length] for length in cycle))
    rows = np.ndarray((limit, cycle_bytes), dtype=np.uint8, buffer=raw, offset=pos, strides=(cycle_bytes, 1))
    done, window = 0, hint or 64
    while done < limit:
        count = min(window, limit - done)
        good = (rows[done:done + count, columns] == expected).all(axis=1)
        if not good.all():
            return done + int(np.argmin(good))
        done, window = done + count, window * 2
    return done


@functools.lru_cache(maxsize=256)
def _cycle_headers(cycle: tuple[int, ...], crcs: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Columns of the header bytes within one cycle of records, and the bytes they must hold."""
    columns, expected, offset = [], [], 0
    for length, crc in zip(cycle, crcs):
        columns.extend(range(offset, offset + _HEADER_SIZE))
        expected.extend(_HEADER.pack(length, crc))
        offset += length + _FRAME_SIZE
    return np.asarray(columns, dtype=np.intp), np.asarray(expected, dtype=np.uint8)


def _periodic(pos: int, cycle: list[int], cycles: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of `cycles` repetitions of `cycle` from buffer position `pos`, in file order."""
    firsts, offset = [], pos + _HEADER_SIZE
    for length in cycle:
        firsts.append(offset)
        offset += length + _FRAME_SIZE
    cycle_bytes = offset - pos - _HEADER_SIZE
    starts = np.arange(0, cycles * cycle_bytes, cycle_bytes, dtype=np.int64)[:, None] + np.array(firsts, dtype=np.int64)
    lengths = np.empty((cycles, len(cycle)), dtype=np.int64)
    lengths[:] = cycle
    return starts.ravel(), lengths.ravel()


def length_groups(lengths: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(length, indices of the records of that length) for each distinct length, ascending."""
    if not lengths.size:
        return []
    top = int(lengths.max())
    distinct = np.flatnonzero(np.bincount(lengths)) if top < (1 << 20) else np.unique(lengths)  # one pass, no sort
    if distinct.size <= 16:
        return [(int(v), np.flatnonzero(lengths == v)) for v in distinct.tolist()]
    order = np.argsort(lengths, kind="stable")
    bounds = np.searchsorted(lengths[order], distinct)
    ends = np.append(bounds[1:], lengths.size)
    return [(int(v), order[a:b]) for v, a, b in zip(distinct.tolist(), bounds.tolist(), ends.tolist())]


_VECTOR_MIN = 32  # fewer records of one length: one C call each is cheaper than the numpy steps


def rows_crc32c(raw: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Unmasked CRC32C of the records of `length` bytes at `starts` in `raw`, with numpy.

    Records of one length written by one logger are mostly equal bytes (field tags, the tag, high
    bytes of the wall time): per block of records (copied out together, so the block stays in cache),
    the columns equal in every record add one constant, and only the varying columns (about 11 of 38
    bytes for `add_scalar`) are looked up per record. Exact (tests compare it with the C
    implementation); long records, and a few records, go to the C call one by one."""
    if not _vectorised(starts, length):
        return _c_crc32c(raw, starts, length)
    out = np.empty(starts.size, dtype=np.uint32)
    for a, block, ref in _blocks_of(raw, starts, length):
        out[a:a + len(block)] = _block_crc32c(raw, starts[a:a + len(block)], block, _varying(block, ref, length), length)
    return out


def records_crc_ok(raw: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Whether each record of `length` bytes at `starts` matches the masked CRC32C in the 4 bytes that
    follow it (its footer). The footer is read with the record, in the same block copy."""
    if not _vectorised(starts, length):
        return _mask_u32(_c_crc32c(raw, starts, length)) == gather_rows(raw, starts + length, 4).view("<u4").ravel()
    out = np.empty(starts.size, dtype=bool)
    for a, block, ref in _blocks_of(raw, starts, length + 4):
        crcs = _block_crc32c(raw, starts[a:a + len(block)], block[:, :length], _varying(block, ref, length), length)
        out[a:a + len(block)] = _mask_u32(crcs) == np.ascontiguousarray(block[:, length:]).view("<u4").ravel()
    return out


def _vectorised(starts: np.ndarray, length: int) -> bool:
    return 0 < length <= _VECTOR_MAX_LENGTH and starts.size >= _VECTOR_MIN


def _blocks_of(raw: np.ndarray, starts: np.ndarray, width: int):
    """(first index, rows, reference) for each block of `_BLOCK_ROWS` records: the `width` bytes at their
    starts, and the first record's bytes repeated once per row (every block is compared with it)."""
    windows = sliding_window_view(raw, width)
    ref = np.tile(windows[starts[0]], min(starts.size, _BLOCK_ROWS))
    for a in range(0, starts.size, _BLOCK_ROWS):
        yield a, windows[starts[a:a + _BLOCK_ROWS]], ref


def _too_varied(length: int) -> int:
    """Above this many varying columns, the C call per record is faster than a table lookup per column."""
    return 64 + length // 8


def _varying(block: np.ndarray, ref: np.ndarray, length: int) -> np.ndarray | None:
    """The varying columns among the first `length` of `block`, or None when there are too many for the
    tables (histogram buckets). A few rows decide that first: what varies among them varies in the
    block, so a sample already over the limit settles it without looking at every row."""
    if len(block) > 64 and np.count_nonzero(varying_columns(block[:64], ref)[:length]) > _too_varied(length):
        return None
    varying = varying_columns(block, ref)[:length]
    return None if np.count_nonzero(varying) > _too_varied(length) else varying


def _block_crc32c(raw: np.ndarray, starts: np.ndarray, block: np.ndarray, varying: np.ndarray | None,
                  length: int) -> np.ndarray:
    """CRC32C of each row of `block` (the `length` bytes of the records at `starts`); `varying` marks
    the columns not equal in every row (None: too many, one C call per record)."""
    if varying is None:  # mostly varying bytes (histogram buckets): C is faster
        return _c_crc32c(raw, starts, length)
    columns = np.flatnonzero(varying)
    tables, base = _position_tables(length)
    fixed = np.flatnonzero(~varying)
    const = np.uint32(base) ^ np.bitwise_xor.reduce(tables[fixed, block[0, fixed]]) if fixed.size else np.uint32(base)
    crcs = np.full(len(block), const, dtype=np.uint32)
    for k in columns.tolist():
        crcs ^= tables[k][block[:, k]]
    return crcs


def varying_columns(rows: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """Which columns of a 2-D uint8 array are not the same in every row (exact): where some row differs
    from the reference row.

    Every row is XORed with a reference row (`ref`: that row repeated at least once per row, flat; the
    first row when not given), then the rows are ORed together pairwise in place, halving them each
    time: whole-array operations, where numpy's reductions along axis 0 walk the few columns row by row."""
    count, width = rows.shape
    if not count or not width or (count == 1 and ref is None):
        return np.zeros(width, dtype=bool)
    flat = np.ascontiguousarray(rows).reshape(-1)
    x = np.bitwise_xor(flat, np.tile(rows[0], count) if ref is None else ref[:flat.size])
    while count > 1:
        half = count // 2
        if count % 2:
            x[:width] |= x[(count - 1) * width:count * width]
        np.bitwise_or(x[:half * width], x[half * width:2 * half * width], out=x[:half * width])
        count = half
    return x[:width] != 0


def _c_crc32c(raw: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """rows_crc32c with one call of the C CRC32C per record."""
    data = memoryview(raw)
    return np.array([_crc32c.crc32c(data[s:s + length]) for s in starts.tolist()], dtype=np.uint32)


def _mask(crc):
    """TFRecord's CRC mask; works on Python ints and on uint64 numpy arrays alike."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _mask_u32(crc: np.ndarray) -> np.ndarray:
    """TFRecord's CRC mask of a uint32 array, in uint32 (the rotation and the sum wrap at 32 bits)."""
    return ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(0xA282EAD8)


def gather_rows(raw: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """Rows of ``width`` bytes starting at each of ``starts`` (contiguous, ready for ``.view``): one row of
    a sliding-window view per start, so no (n, width) index array is built."""
    return sliding_window_view(raw, width)[starts]
