"""The bulk scalar fast path: records of torch's plain ``add_scalar`` shape decoded with numpy.

Speed
    Files are streamed in chunks. Records of the common legacy scalar shape (one ``simple_value`` per
    event, as torch's ``add_scalar`` writes) are decoded in bulk with numpy straight from the chunk;
    everything else goes through ``event_pb2.Event.FromString``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from report_gen.readers.tfrecord import gather_rows, length_groups, varying_columns


@dataclass
class SimpleScalars:
    """Records of the exact legacy single-``simple_value`` shape, decoded with numpy.

    Wire layout (proto3 field order):
    ``09 <wall f64> [10 <step varint>] 2a L1 0a L2 0a T <tag> 15 <value f32>`` with one-byte L1, L2, T.
    ``mask`` marks which records of the batch matched; the other arrays hold the matched ones. Tags come
    as ``codes`` into ``names`` (one string per distinct tag of the batch, in order of first appearance):
    a million records of ten tags are ten strings, not a million.
    """

    mask: np.ndarray
    codes: np.ndarray  # int64 index into names, per matched record
    names: list[str]
    steps: np.ndarray
    wall_times: np.ndarray
    values: np.ndarray

    @classmethod
    def decode(cls, buffer: bytes, starts: np.ndarray, lengths: np.ndarray) -> "SimpleScalars":
        raw = np.frombuffer(buffer, dtype=np.uint8)
        starts = np.asarray(starts, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        n = starts.size
        groups = []  # (record indices, ok, steps, walls, values, tag bytes) per length decoded as a group
        rest = np.ones(n, dtype=bool)
        for length, idx in length_groups(lengths):
            if not 21 <= length < _MAX_SIMPLE:
                continue
            for _ in range(_MAX_LAYOUTS):  # records of one length may have several layouts (see below)
                if idx.size < _MIN_GROUP:
                    break
                group = _decode_group(raw, starts[idx], length)
                if group is None:  # the first is not a simple scalar (the file_version record): from the next
                    idx = idx[1:]
                    continue
                ok = group[0]
                rows = idx if group[1].size == idx.size else idx[ok]
                if not rows.size:
                    break
                groups.append((rows, *group[1:]))
                rest[rows] = False  # the others are left to the record-by-record checks below
                if rows.size == idx.size:
                    break
                idx = idx[~ok]  # another tag of this length with a step varint one byte wider, ...
        if len(groups) == 1 and groups[0][0].size == n:  # one layout for the whole batch: no scatter
            rows, steps, walls, values, tag_rows = groups[0]
            codes, names = _piece_codes([(rows, tag_rows)], n)
            return cls(mask=np.ones(n, dtype=bool), codes=codes, names=names, steps=steps, wall_times=walls,
                       values=values)
        mask = ~rest
        steps, walls, values = np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n)
        pieces: list[tuple[np.ndarray, np.ndarray]] = []  # (record indices, their tag bytes (k, T))
        for rows, g_steps, g_walls, g_values, tag_rows in groups:
            steps[rows], walls[rows], values[rows] = g_steps, g_walls, g_values
            pieces.append((rows, tag_rows))
        left = np.flatnonzero(rest)
        if left.size:
            pieces += _decode_scattered(buffer, left, starts[left], lengths[left], mask, steps, walls, values)
        codes, names = _piece_codes(pieces, n)
        sel = np.flatnonzero(mask)
        return cls(mask=mask, codes=codes[sel], names=names, steps=steps[sel], wall_times=walls[sel],
                   values=values[sel])


_MAX_SIMPLE = 512  # the longest record decoded as a simple scalar (its tag, at most 255 bytes, fits)
_MIN_GROUP = 64  # records of one length before they are decoded as a group
#: layouts tried per record length: a tag one byte longer than another, with a step one varint byte
#: shorter, makes records of the same length (`grad_norm` at step 200 and `train/loss` at step 20000)
_MAX_LAYOUTS = 8
_BLOCK = 1 << 14  # records per cache-sized block (16k records of 50 bytes: under a megabyte)


def _decode_group(raw: np.ndarray, starts: np.ndarray, length: int):
    """Decode the records of `length` bytes at `starts`, all laid out as the first one is (a step
    varint of one width, one tag length): the layout is read once from the first record, then every
    structural byte is checked column by column, a cache-sized block of records at a time.
    Returns (ok, steps, wall_times, values, tag bytes) with the last four for the ok records only, or
    None when the first record is not of the simple-scalar shape."""
    first = int(starts[0])
    rec = raw[first:first + length].tobytes()
    if rec[9] == 0x10:
        step_len = next((k + 1 for k in range(min(10, length - 10)) if rec[10 + k] < 0x80), 0)
        if not step_len:
            return None
        p = 10 + step_len
    else:
        step_len, p = 0, 9
    if p + 6 > length:
        return None
    tag_len = rec[p + 5]
    expected = {0: 0x09, p: 0x2A, p + 1: tag_len + 9, p + 2: 0x0A, p + 3: tag_len + 7, p + 4: 0x0A, p + 5: tag_len}
    if step_len:
        expected[9] = 0x10
    if p + 11 + tag_len != length or tag_len + 9 >= 0x80:
        return None
    expected[p + 6 + tag_len] = 0x15
    if any(rec[c] != b for c, b in expected.items()):
        return None
    count = starts.size
    windows = sliding_window_view(raw, length)
    ok = np.ones(count, dtype=bool)
    step = np.zeros(count, dtype=np.uint64)
    walls, values = np.empty(count), np.empty(count)
    tags = np.empty((count, tag_len), dtype=np.uint8)
    at = p + 7 + tag_len
    for a in range(0, count, _BLOCK):  # a block of records stays in cache for all its columns
        v = windows[starts[a:a + _BLOCK]]
        good, stp = ok[a:a + _BLOCK], step[a:a + _BLOCK]
        for c, b in expected.items():
            good &= v[:, c] == b
        for k in range(step_len):  # every byte but the last has its continuation bit set
            byte = v[:, 10 + k]
            good &= (byte >= 0x80) if k < step_len - 1 else (byte < 0x80)
            stp |= (byte & 0x7F).astype(np.uint64) << np.uint64(7 * k)
        walls[a:a + _BLOCK] = np.ascontiguousarray(v[:, 1:9]).view("<f8").ravel()
        values[a:a + _BLOCK] = np.ascontiguousarray(v[:, at:at + 4]).view("<f4").ravel()
        tags[a:a + _BLOCK] = v[:, p + 6:p + 6 + tag_len]
    if ok.all():
        return ok, step.view(np.int64), walls, values, tags
    good = np.flatnonzero(ok)
    return ok, step.view(np.int64)[good], walls[good], values[good], tags[good]


def _decode_scattered(buffer: bytes, idx: np.ndarray, starts: np.ndarray, lengths: np.ndarray, mask: np.ndarray,
                      steps: np.ndarray, walls: np.ndarray, values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The records at ``idx`` each with its own layout (vectorised over them): fills mask, steps, walls
    and values at the matched ones and returns their tag bytes as pieces, one per tag length."""
    raw, at = _bytes_at(buffer)  # reads clamped to the buffer: a malformed record reads junk, then fails a check
    ends = starts + lengths
    has_step = at(starts + 9) == 0x10
    step, step_len, step_ok = _varint_at(raw, starts + 10)
    step_len = np.where(has_step, step_len, 0)
    p = starts + 9 + np.where(has_step, 1 + step_len, 0)  # at the summary field
    tag_len = at(p + 5)
    ok = ((lengths >= 21) & (lengths < _MAX_SIMPLE) & (ends <= raw.size) & (at(starts) == 0x09) & (~has_step | step_ok)
          & (at(p) == 0x2A) & (at(p + 2) == 0x0A) & (at(p + 4) == 0x0A)
          & (at(p + 1) < 0x80) & (at(p + 1) == at(p + 3) + 2) & (at(p + 3) == tag_len + 7)
          & (at(p + 6 + tag_len) == 0x15) & (p + 11 + tag_len == ends))
    sel = np.flatnonzero(ok)
    rows = idx[sel]
    starts, p, tag_len = starts[sel], p[sel], tag_len[sel]
    mask[rows] = True
    steps[rows] = np.where(has_step[sel], step[sel], 0)
    walls[rows] = gather_rows(raw, starts + 1, 8).view("<f8").ravel()
    values[rows] = gather_rows(raw, p + 7 + tag_len, 4).view("<f4").ravel().astype(np.float64)
    pieces = []
    for length in np.flatnonzero(np.bincount(tag_len)).tolist():  # (np.unique would import numpy.ma)
        same = np.flatnonzero(tag_len == length)
        pieces.append((rows[same], gather_rows(raw, p[same] + 6, length) if length else np.zeros((same.size, 0), np.uint8)))
    return pieces


_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)


def row_codes(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group the equal rows of an (n, T) uint8 array: (code per row, index of the first row of each
    code). Vectorised and exact.

    Only the columns that differ somewhere are looked at (ten tags `train/metric_0`..`_9` differ in
    one byte), packed eight to a 64-bit word. One word is the key itself; several are hashed into one,
    and rows with equal hashes are then proved equal word by word: a collision is split, never merged."""
    n = rows.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    varying = np.flatnonzero(varying_columns(rows))
    if not varying.size:
        return np.zeros(n, dtype=np.int64), np.zeros(1, dtype=np.int64)
    if varying.size <= 2:  # the key fits 16 bits: a lookup table instead of a sorted search
        key = rows[:, varying[0]].astype(np.int64)
        if varying.size == 2:
            key |= rows[:, varying[1]].astype(np.int64) << 8
        present = np.flatnonzero(np.bincount(key, minlength=1 << 16))
        table = np.zeros(1 << 16, dtype=np.int64)
        table[present] = np.arange(present.size)
        slot = table[key]
        return slot, _first_rows(slot, present.size)
    words = []
    for w in range(0, varying.size, 8):
        word = np.zeros(n, dtype=np.uint64)
        for j, c in enumerate(varying[w:w + 8].tolist()):
            word |= rows[:, c].astype(np.uint64) << np.uint64(8 * j)
        words.append(word)
    key = words[0]
    for w in words[1:]:
        key = key * _HASH_MUL ^ w
    distinct = np.unique(np.concatenate([key[:4096], key[:: max(1, n // 4096)]]))
    while True:
        slot = np.minimum(np.searchsorted(distinct, key), distinct.size - 1)
        missing = distinct[slot] != key
        if not missing.any():
            break
        distinct = np.union1d(distinct, key[missing])
    slot = slot.astype(np.int64)
    first = _first_rows(slot, distinct.size)
    if len(words) > 1:
        proven = np.ones(n, dtype=bool)
        for w in words:
            proven &= w == w[first[slot]]
        if not proven.all():  # a collision: those rows are grouped exactly, with codes of their own
            extra = np.flatnonzero(~proven)
            sub_codes, sub_first = _exact_codes(rows[extra])
            slot[extra] = distinct.size + sub_codes
            first = np.concatenate([first, extra[sub_first]])
    return slot, first


def _first_rows(slot: np.ndarray, k: int) -> np.ndarray:
    """The index of the first row of each of the `k` codes in `slot` (every code occurs)."""
    if k > 32:
        return np.unique(slot, return_index=True)[1]
    first = np.empty(k, dtype=np.int64)
    head = slot[:4096]  # a logger writes its few tags within the first steps: look there first
    for d in range(k):
        at = np.flatnonzero(head == d)
        first[d] = at[0] if at.size else np.argmax(slot == d)
    return first


def _exact_codes(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """row_codes for the few rows a hash collision left: one bytes key per row."""
    index: dict[bytes, int] = {}
    first: list[int] = []
    codes = np.empty(rows.shape[0], dtype=np.int64)
    for i, row in enumerate(rows):
        key = row.tobytes()
        if key not in index:
            index[key] = len(first)
            first.append(i)
        codes[i] = index[key]
    return codes, np.array(first, dtype=np.int64)


def _piece_codes(pieces: list[tuple[np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, list[str]]:
    """Codes of every record (-1 where none) into names in order of first appearance, from the pieces'
    tag bytes. Names are decoded as UTF-8 with replacement, as protobuf's Python `simple_value` path
    shows them."""
    codes = np.full(n, -1, dtype=np.int64)
    index: dict[bytes, int] = {}
    first_record: list[int] = []
    for rows, tag_rows in pieces:
        if not rows.size:
            continue
        local, first = row_codes(tag_rows)
        mapping = np.empty(first.size, dtype=np.int64)
        for d, r in enumerate(first.tolist()):
            key = tag_rows[r].tobytes()
            if key not in index:
                index[key] = len(first_record)
                first_record.append(int(rows[r]))
            else:
                first_record[index[key]] = min(first_record[index[key]], int(rows[r]))
            mapping[d] = index[key]
        if rows.size == n:  # one piece of every record, in order
            codes = mapping[local]
        else:
            codes[rows] = mapping[local]
    names = [key.decode("utf-8", "replace") for key in index]
    if len(names) > 1:  # codes in order of first appearance
        order = np.argsort(np.array(first_record, dtype=np.int64), kind="stable")
        rank = np.empty(len(names), dtype=np.int64)
        rank[order] = np.arange(len(names))
        if (order != np.arange(len(names))).any():
            codes = rank[codes] if codes.min() >= 0 else np.where(codes >= 0, rank[np.maximum(codes, 0)], -1)
            names = [names[i] for i in order.tolist()]
    return codes, names


def _bytes_at(buffer: bytes):
    """The buffer as bytes, and `at(index)`: the bytes at an array of offsets (clamped to the buffer, so
    a malformed length reads junk that the caller's checks then refuse, never out of bounds)."""
    raw = np.frombuffer(buffer, dtype=np.uint8)
    last = raw.size - 1

    def at(index: np.ndarray) -> np.ndarray:
        return raw[np.minimum(index, last)].astype(np.int64)

    return raw, at


def _varint_at(raw: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value, byte length, valid) of the varint starting at each of ``pos`` (at most 10 bytes; offsets
    clamped to the buffer), reading only as many bytes as the longest one has (a step counter is one to
    three). An invalid one (no last byte within 10) has value 0 and length 1."""
    last = raw.size - 1
    byte = raw[np.minimum(pos, last)]
    value = (byte & 0x7F).astype(np.uint64)
    going = byte >= 0x80
    length = np.ones(pos.size, dtype=np.int64)
    for k in range(1, 10):
        if not going.any():
            break
        byte = raw[np.minimum(pos + k, last)]
        value |= np.where(going, (byte & 0x7F).astype(np.uint64) << np.uint64(7 * k), np.uint64(0))
        length += going
        going &= byte >= 0x80
    return np.where(going, np.uint64(0), value).view(np.int64), np.where(going, 1, length), ~going


@dataclass
class LegacyHistograms:
    """Records of the legacy ``HistogramProto`` shape (what torch's ``add_histogram`` writes), decoded
    with numpy: no protobuf object per record.

    Wire layout (fields in number order, each optional one absent when zero/empty, as protobuf
    writes them): ``[09 <wall f64>] [10 <step varint>] 2a L1 { 0a L2 { 0a T <tag> 2a L3 { [09 min]
    [11 max] [19 num] [21 sum] [29 sum_squares] [32 L4 <bucket_limit packed f64>] [3a L5 <bucket packed
    f64>] } } }`` with every length checked against the enclosing one. Anything else (metadata, a second
    value, unpacked buckets, unknown fields) is left to the protobuf path, record by record.
    ``mask`` marks the matched records of the batch; the other fields hold the matched ones: ``stats``
    is (n, 5) min, max, num, sum, sum_squares; ``limit_spans``/``count_spans`` are (start, bytes) of the
    packed arrays in the buffer.
    """

    mask: np.ndarray
    tags: np.ndarray  # object array of str
    steps: np.ndarray
    wall_times: np.ndarray
    stats: np.ndarray
    limit_spans: np.ndarray  # (n, 2) int64
    count_spans: np.ndarray

    @classmethod
    def decode(cls, buffer: bytes, starts: np.ndarray, lengths: np.ndarray) -> "LegacyHistograms":
        raw, at = _bytes_at(buffer)
        ends = starts + lengths
        ok = lengths >= 8
        has_wall = at(starts) == 0x09
        pos = starts + 9 * has_wall
        has_step = at(pos) == 0x10
        step, step_len, step_ok = _varint_at(raw, pos + 1)
        ok &= ~has_step | step_ok
        pos = pos + np.where(has_step, 1 + step_len, 0)
        for expected in (0x2A, 0x0A):  # the summary, then its one value: each runs to the end
            size, size_len, size_ok = _varint_at(raw, pos + 1)
            ok &= (at(pos) == expected) & size_ok & (size >= 0)
            pos = pos + 1 + size_len
            ok &= pos + size.astype(np.int64) == ends
        tag_len, tag_len_len, tag_ok = _varint_at(raw, pos + 1)
        ok &= (at(pos) == 0x0A) & tag_ok & (tag_len >= 0) & (tag_len < (1 << 20))
        tag_start = pos + 1 + tag_len_len
        pos = tag_start + np.where(ok, tag_len, 0).astype(np.int64)
        size, size_len, size_ok = _varint_at(raw, pos + 1)
        ok &= (at(pos) == 0x2A) & size_ok & (size >= 0)
        pos = pos + 1 + size_len
        ok &= pos + size.astype(np.int64) == ends
        fixed = np.zeros((starts.size, 5), dtype=np.int64)  # offsets of min, max, num, sum, sum_squares
        present = np.zeros((starts.size, 5), dtype=bool)
        for k, field_tag in enumerate((0x09, 0x11, 0x19, 0x21, 0x29)):
            present[:, k] = at(pos) == field_tag
            fixed[:, k] = pos + 1
            pos = pos + 9 * present[:, k]
        spans = []
        for field_tag in (0x32, 0x3A):
            has = at(pos) == field_tag
            size, size_len, size_ok = _varint_at(raw, pos + 1)
            size = np.where(has, size.astype(np.int64), 0)
            ok &= ~has | (size_ok & (size >= 0) & (size % 8 == 0) & (size < (1 << 40)))
            start = pos + np.where(has, 1 + size_len, 0)
            spans.append(np.stack([start, size], axis=1))
            pos = start + np.where(ok, size, 0)
        ok &= (pos == ends) & (ends <= raw.size)
        tags, valid = _strict_tags(buffer, tag_start[ok].tolist(), tag_len[ok].astype(np.int64).tolist())
        ok[np.flatnonzero(ok)[~valid]] = False  # not UTF-8: protobuf refuses the record, so must we
        sel = np.flatnonzero(ok)
        stats = np.zeros((sel.size, 5), dtype=np.float64)
        for k in range(5):
            rows = sel[present[sel, k]]
            if rows.size:
                stats[present[sel, k], k] = gather_rows(raw, fixed[rows, k], 8).view("<f8").ravel()
        walls = np.zeros(sel.size, dtype=np.float64)
        with_wall = has_wall[sel]
        if with_wall.any():
            walls[with_wall] = gather_rows(raw, starts[sel][with_wall] + 1, 8).view("<f8").ravel()
        return cls(mask=ok, tags=tags[valid],
                   steps=np.where(has_step[sel], step[sel], 0), wall_times=walls, stats=stats,
                   limit_spans=spans[0][sel], count_spans=spans[1][sel])


def _strict_tags(buffer: bytes, starts: list[int], lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Tag strings as an object array, and which are valid UTF-8 (decoded once per distinct string)."""
    names: dict[bytes, str | None] = {}
    raw = [buffer[s:s + n] for s, n in zip(starts, lengths)]
    for key in set(raw):
        try:
            names[key] = key.decode("utf-8")
        except UnicodeDecodeError:
            names[key] = None
    tags = np.array([names[r] for r in raw], dtype=object)
    return tags, np.array([t is not None for t in tags], dtype=bool)


def packed_doubles(buffer: bytes, spans: np.ndarray, shared: dict[bytes, np.ndarray] | None = None
                   ) -> list[np.ndarray]:
    """The packed float64 arrays at ``spans`` (start, bytes), copied out of the buffer (read-only).

    With ``shared`` (bytes -> array, kept by the caller), equal arrays are one object: bucket limits of
    consecutive steps of one tag are usually identical, so a long run keeps each distinct set once.
    """
    if shared is None:
        flat = np.frombuffer(b"".join([buffer[s:s + n] for s, n in spans.tolist()]), dtype="<f8")
        if not len(spans):
            return []
        sizes = spans[:, 1] // 8
        if (sizes == sizes[0]).all():
            return list(flat.reshape(len(spans), int(sizes[0]))) if sizes[0] else [flat[:0]] * len(spans)
        return np.split(flat, np.cumsum(sizes)[:-1])
    out = []
    for s, n in spans.tolist():
        key = buffer[s:s + n]
        arr = shared.get(key)
        if arr is None:
            arr = shared[key] = np.frombuffer(key, dtype="<f8")
        out.append(arr)
    return out
