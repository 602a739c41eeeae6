"""TensorBoard event-file reader: Event protos -> :class:`report_gen.readers.types.EventData`.

Layers: :mod:`report_gen.readers.tfrecord` frames records and reports damage; this module decodes
``Event`` protos (one file at a time), then merges the files of one run and applies the step policy.

What is decoded
    - scalars: legacy ``simple_value``; TF2 0-d (or single-element) numeric tensors (float, double,
      half, bfloat16, ints, bool) whose plugin is ``scalars`` or unnamed. String tensors where a number
      was expected (e.g. a ``checkpoint_path`` "scalar") are skipped.
    - histograms: legacy ``HistogramProto`` (statistics kept exactly) and TF2 ``[k, 3]`` tensors of
      (left edge, right edge, count) with plugin ``histograms``: num = Σ count, sum = Σ count·centre,
      sum_squares = Σ count·centre², min/max = left/right edge of the first/last non-empty bucket.
    - images: ``Summary.Image`` and TF2 string tensors ``[width, height, png, ...]`` (plugin ``images``),
      kept encoded.
    - texts: string tensors with plugin ``text`` (several strings are joined with newlines).
    - hparams: ``session_start_info`` of the hparams plugin, flattened to ``{name: number|str|bool}``.
    - ``file_version``, ``graph_def``, ``meta_graph_def``, ``tagged_run_metadata``, ``log_message`` are
      recognised and skipped; ``session_log`` START marks a restart (see below).
    In TF2 a value carries its plugin name only on the first occurrence of its tag in a file, so the
    plugin is remembered per tag per file.

Hostile or malformed records
    Nothing in a record's content can stop the read or make memory grow beyond what the file holds:
    a record that is not an ``Event`` proto, or a value that fails to decode, is skipped and counted,
    and the rest of the file is read (one ``Problem(kind="bad-proto", severity="warning")`` per file
    with the number of such records and the offset of the first). A TF2 tensor's claimed shape is
    never used to allocate: it must match the values actually present. ``tensor_content`` must hold
    exactly (number of elements) x (dtype size) bytes; a repeated value field must hold exactly that
    many values, except TF's compression where trailing copies of the last value are left out, which is
    honoured only for non-scalar tensors of at most ``_MAX_FILL`` elements (and at most
    ``_MAX_FILL`` + 16 x file size elements filled per file). A tensor with the ``scalars`` plugin must
    claim exactly one element (shape ``[]`` or a shape whose product is 1) and hold exactly one value;
    a ``histograms`` tensor's element count must be a multiple of 3; a string tensor (images, text)
    must hold as many strings as its shape claims. Records breaking these rules count as bad-proto.
    A numeric tensor without plugin name claiming more than one element is not a scalar and is
    skipped without being decoded.

Sub-folders
    ``read_events`` gets ``(path, sub)`` pairs for one run. ``sub`` is recorded, not interpreted: in the
    scalar DataFrame the ``run`` column holds ``sub`` ("" for files directly in the run folder); the keys
    of ``histograms``, ``images`` and ``texts`` (and the ``tag`` attribute of their items) are ``tag``
    when ``sub == ""`` and ``f"{sub}/{tag}"`` otherwise. Files of the same sub are merged in write order:
    by the wall time of their first event, then by file name.

Order of tags
    ``histograms``, ``images`` and ``texts`` are dicts in order of FIRST APPEARANCE (write order): subs
    in sorted order ("" first), then files in merge order, then records in file order; a tag first
    logged in a later file comes after every tag of the earlier files. Downstream code relies on this:
    loggers write per-layer histograms from the input layer to the output layer, so key order is model
    depth (alphabetical order would put ``classifier.*`` before ``features.*``). The scalar DataFrame
    is NOT in write order: its rows are sorted by ``run``, then ``tag`` (both alphabetically), then
    step, then write order.

Step policy (like TensorBoard's purge of orphaned data)
    Values of one (sub, tag) are taken in write order. A value at step ``s`` starts a *restart* when
    ``s`` is <= a step already seen for that tag and the value comes from a different writing session
    than the previous value: a later file, or after a TF1 ``session_log`` START record. On a restart
    every earlier value at a step >= ``s`` is dropped. Within one session nothing is dropped: several
    values at the same step (per-batch values logged with the epoch as step) and even steps going
    backwards (one tag logged by two loops with different step counters) are all kept, then ordered by
    step. No wall-time gap threshold is used: a restarted process always writes a new file (torch, TF
    and Keras writers name files by time, host and pid), while a long pause inside one file is usually
    just a slow epoch or an evaluation. Each file that restarts a series gets one
    ``Problem(kind="step-restart", severity="info")`` with the number of values dropped.
    After the policy, values are ordered by step (ties in write order); ``max_per_tag`` then keeps that
    many values per tag, evenly spaced and always including the first and the last.

Speed
    Files are streamed in chunks. Records of the common legacy scalar shape (one ``simple_value`` per
    event, as torch's ``add_scalar`` writes) are decoded in bulk with numpy straight from the chunk;
    everything else goes through ``event_pb2.Event.FromString``.
"""
from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from report_gen.core import Problem, ProblemKind
from report_gen.readers.tfrecord import RecordBatch, RecordReader, gather_rows
from report_gen.readers.types import SCALAR_COLUMNS, EventData, HistogramSeries, ImageRef

ALL_KINDS = ("scalars", "histograms", "images", "texts", "hparams")

_SESSION_START = event_pb2.SessionLog.START

# TF leaves out trailing copies of a tensor's last value; such a tensor is rebuilt only if it has at
# most _MAX_FILL elements, and a file may rebuild at most _MAX_FILL + _FILL_PER_BYTE * (its size)
# elements in all, so a tiny hostile file cannot make the reader allocate gigabytes.
_MAX_FILL = 1 << 20
_FILL_PER_BYTE = 16
_HUGE = 1 << 63  # claimed element counts are clamped here (shapes can multiply to enormous numbers)

# dtype enum -> (numpy dtype of the values, TensorProto repeated field holding them)
_TENSOR_FIELDS: dict[int, tuple[str, str]] = {
    types_pb2.DT_FLOAT: ("float32", "float_val"),
    types_pb2.DT_DOUBLE: ("float64", "double_val"),
    types_pb2.DT_HALF: ("float16", "half_val"),
    types_pb2.DT_BFLOAT16: ("bfloat16", "half_val"),
    types_pb2.DT_INT8: ("int8", "int_val"),
    types_pb2.DT_INT16: ("int16", "int_val"),
    types_pb2.DT_INT32: ("int32", "int_val"),
    types_pb2.DT_UINT8: ("uint8", "int_val"),
    types_pb2.DT_UINT16: ("uint16", "int_val"),
    types_pb2.DT_UINT32: ("uint32", "uint32_val"),
    types_pb2.DT_INT64: ("int64", "int64_val"),
    types_pb2.DT_UINT64: ("uint64", "uint64_val"),
    types_pb2.DT_BOOL: ("bool", "bool_val"),
}


def is_event_file_name(name: str) -> bool:
    """True for TensorBoard event file names: any name containing ``tfevents``.

    CatBoost writes exactly ``events.out.tfevents`` (no suffix); only the last path part is looked at.
    """
    return "tfevents" in os.path.basename(name)


def read_events(files: Sequence[tuple[str, str]], *, max_per_tag: int | None = None,
                kinds: Collection[str] = ALL_KINDS) -> EventData:
    """Read the event files of ONE run.

    files: ``(path, sub)`` pairs; ``sub`` is "" for files directly in the run folder, else the relative
        sub-folder (recorded as the scalar ``run`` column and as a ``sub/`` key prefix elsewhere).
    max_per_tag: keep at most this many values per tag (evenly spaced, first and last kept).
    kinds: which of "scalars", "histograms", "images", "texts", "hparams" to decode.

    Damage never raises: it is listed in ``EventData.problems``. See the module docstring for details.
    """
    unknown = set(kinds) - set(ALL_KINDS)
    if unknown:
        raise ValueError(f"unknown event kinds {sorted(unknown)}; expected some of {ALL_KINDS}")
    if max_per_tag is not None and max_per_tag < 1:
        raise ValueError("max_per_tag must be >= 1")
    decoded = [_decode_file(path, sub, frozenset(kinds)) for path, sub in files]
    decoded.sort(key=_merge_key)
    data = EventData.empty()
    for content in decoded:
        data.files.append(content.path)
        data.problems.extend(content.problems)
        data.hparams.update(content.hparams)
    restarts = _Restarts()
    frames = []
    for sub in sorted({c.sub for c in decoded}):
        group = [c for c in decoded if c.sub == sub]
        frames.append(_merge_scalars(sub, group, max_per_tag, restarts))
        _merge_points(sub, group, max_per_tag, restarts, data)
    if frames:
        data.scalars = _scalar_frame(frames)
    data.problems.extend(restarts.problems())
    return data


# -- per-file decoding -------------------------------------------------------------------------
@dataclass
class _Point:
    """One non-scalar value in write order within its file."""

    seq: int
    step: int
    wall_time: float
    payload: Any


@dataclass
class _FileContent:
    """What one file holds, before merging (values keyed by raw tag, ordered by ``seq``)."""

    path: str
    sub: str
    problems: list[Problem] = field(default_factory=list)
    first: tuple[int, float] | None = None  # (seq, wall_time) of the earliest decoded event
    scalar_tags: list[np.ndarray] = field(default_factory=list)  # object arrays of tag names
    scalar_cols: list[tuple[np.ndarray, ...]] = field(default_factory=list)  # (seq, step, wall, value)
    histograms: dict[str, list[_Point]] = field(default_factory=dict)
    images: dict[str, list[_Point]] = field(default_factory=dict)
    texts: dict[str, list[_Point]] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    session_starts: list[int] = field(default_factory=list)  # seq of session_log START records

    def note_first(self, seq: int, wall_time: float) -> None:
        if self.first is None or seq < self.first[0]:
            self.first = (seq, wall_time)


def _merge_key(content: _FileContent) -> tuple:
    first_wall = content.first[1] if content.first else float("inf")
    return (content.sub, first_wall, os.path.basename(content.path), content.path)


def _decode_file(path: str, sub: str, kinds: frozenset[str]) -> _FileContent:
    reader = RecordReader(path)
    decoder = _EventDecoder(_FileContent(path, sub), kinds)
    seq = 0
    for batch in reader.batches():
        decoder.file_bytes = reader.bytes_total
        decoder.decode_batch(batch, seq)
        seq += len(batch)
    content = decoder.finish()
    content.problems[:0] = reader.problems
    if reader.bytes_total == 0 and not reader.problems:
        content.problems.append(Problem(path, ProblemKind.EMPTY_FILE, f"{path}: empty event file",
                                        severity="info"))
    elif decoder.version_only(seq):
        content.problems.append(Problem(path, ProblemKind.VERSION_ONLY,
                                        f"{path}: holds only the file_version record", severity="info"))
    return content


class _EventDecoder:
    """Decodes the record batches of one file into a :class:`_FileContent`."""

    def __init__(self, content: _FileContent, kinds: frozenset[str]) -> None:
        self.content = content
        self.kinds = kinds
        self.plugins: dict[str, str] = {}  # tag -> plugin name seen on its first occurrence
        self.versions = 0
        self.bad_proto = 0
        self.bad_proto_offset: int | None = None
        self.file_bytes = 0  # size of the file (sets the fill budget, see _MAX_FILL)
        self.filled = 0  # tensor elements rebuilt from TF's "last value left out" form so far
        self._slow_scalars: tuple[list, list, list, list, list] = ([], [], [], [], [])

    def decode_batch(self, batch: RecordBatch, first_seq: int) -> None:
        """Decode one batch; record ``i`` gets sequence number ``first_seq + i``."""
        try:
            fast = _SimpleScalars.decode(batch.buffer, batch.starts, batch.lengths)
        except Exception:  # noqa: BLE001 - defensive: the bulk path never loses a batch, the slow path decides
            fast = None
        if fast is not None and fast.mask.any():
            seqs = first_seq + np.flatnonzero(fast.mask)
            self.content.note_first(int(seqs[0]), float(fast.wall_times[0]))
            if "scalars" in self.kinds:
                self.content.scalar_tags.append(fast.tags)
                self.content.scalar_cols.append((seqs, fast.steps, fast.wall_times, fast.values))
        buf = batch.buffer
        rest = np.flatnonzero(~fast.mask) if fast is not None else np.arange(len(batch))
        for i, start, length in zip(rest.tolist(), batch.starts[rest].tolist(), batch.lengths[rest].tolist()):
            self._decode_record(buf[start:start + length], first_seq + i, batch.base + start - 12)

    def _decode_record(self, data: bytes, seq: int, offset: int) -> None:
        """Decode one record; if it (or any of its values) cannot be decoded it is counted as bad-proto."""
        try:
            ok = self._decode_event(data, seq)
        except Exception:  # noqa: BLE001 - no record's content may stop the read
            ok = False
        if not ok:
            self.bad_proto += 1
            if self.bad_proto_offset is None:
                self.bad_proto_offset = offset

    def _decode_event(self, data: bytes, seq: int) -> bool:
        """Decode one Event; False if it is not an Event or some of its values were malformed."""
        try:
            event = event_pb2.Event.FromString(data)
        except DecodeError:
            return False
        self.content.note_first(seq, event.wall_time)
        what = event.WhichOneof("what")
        ok = True
        if what == "summary":
            for value in event.summary.value:
                try:  # the other values of the record are still read
                    self._decode_value(value, seq, event.step, event.wall_time)
                except Exception:  # noqa: BLE001 - _Malformed, or anything a hostile value triggers
                    ok = False
        elif what == "file_version":
            self.versions += 1
        elif what == "session_log" and event.session_log.status == _SESSION_START:
            self.content.session_starts.append(seq)
        # anything else (graph_def, meta_graph_def, ...) is recognised and skipped
        return ok

    def _decode_value(self, value: summary_pb2.Summary.Value, seq: int, step: int, wall: float) -> None:
        tag = value.tag
        plugin = value.metadata.plugin_data.plugin_name if value.HasField("metadata") else ""
        if plugin:
            self.plugins[tag] = plugin
        else:
            plugin = self.plugins.get(tag, "")
        if plugin == "hparams":
            if "hparams" in self.kinds:
                self.content.hparams.update(_session_hparams(value.metadata.plugin_data.content))
            return
        kind = value.WhichOneof("value")
        if kind == "simple_value":
            self._add_scalar(tag, seq, step, wall, value.simple_value)
        elif kind == "histo":
            self._add(self.content.histograms, "histograms", tag, seq, step, wall, lambda: _from_histo(value.histo))
        elif kind == "image":
            self._add(self.content.images, "images", tag, seq, step, wall,
                      lambda: [(value.image.width, value.image.height, value.image.encoded_image_string)])
        elif kind == "tensor":
            self._decode_tensor(value.tensor, plugin, tag, seq, step, wall)

    def _decode_tensor(self, tensor: tensor_pb2.TensorProto, plugin: str, tag: str, seq: int, step: int,
                       wall: float) -> None:
        """Decode a TF2 tensor value; raises :class:`_Malformed` if its content contradicts its shape."""
        is_string = tensor.dtype == types_pb2.DT_STRING
        spec = _TENSOR_FIELDS.get(tensor.dtype)
        if plugin in ("scalars", "") and not is_string:
            if spec is None or "scalars" not in self.kinds:
                return
            if _claimed_size(tensor) != 1:
                if plugin == "scalars":
                    raise _Malformed("a scalar tensor must have exactly one element")
                return  # an unnamed non-scalar tensor: not ours, and never decoded
            flat, _ = _tensor_values(tensor, spec, 1, max_fill=0)
            self._add_scalar(tag, seq, step, wall, float(flat[0]))
        elif plugin == "histograms" and not is_string:
            if spec is None or "histograms" not in self.kinds:
                return
            claimed = _claimed_size(tensor)
            if claimed % 3:
                raise _Malformed("a histogram tensor must be [k, 3]")
            budget = _MAX_FILL + _FILL_PER_BYTE * self.file_bytes - self.filled
            flat, filled = _tensor_values(tensor, spec, claimed, max_fill=min(_MAX_FILL, budget))
            self.filled += filled
            self._add(self.content.histograms, "histograms", tag, seq, step, wall,
                      lambda: _from_tensor_buckets(flat.reshape(-1, 3)))
        elif plugin == "images" and is_string and "images" in self.kinds:
            items = _tensor_strings(tensor)
            if len(items) >= 2:
                self._add(self.content.images, "images", tag, seq, step, wall, lambda: _tensor_images(items))
        elif plugin == "text" and is_string and "texts" in self.kinds:
            items = _tensor_strings(tensor)
            self._add(self.content.texts, "texts", tag, seq, step, wall,
                      lambda: "\n".join(s.decode("utf-8", "replace") for s in items))

    def _add_scalar(self, tag: str, seq: int, step: int, wall: float, value: float) -> None:
        if "scalars" in self.kinds:
            for column, item in zip(self._slow_scalars, (tag, seq, step, wall, value)):
                column.append(item)

    def _add(self, store: dict[str, list[_Point]], kind: str, tag: str, seq: int, step: int, wall: float,
             payload) -> None:
        """Append a point built by ``payload()`` (called only if ``kind`` is wanted)."""
        if kind in self.kinds:
            point = _Point(seq, step, wall, payload())  # built first: if it raises, nothing is stored
            store.setdefault(tag, []).append(point)

    def version_only(self, n_records: int) -> bool:
        """The file held file_version records and nothing else."""
        return self.versions > 0 and self.versions == n_records

    def finish(self) -> _FileContent:
        """Close decoding: flush slow-path scalars and report undecodable records."""
        tags, seqs, steps, walls, values = self._slow_scalars
        if tags:
            self.content.scalar_tags.append(np.array(tags, dtype=object))
            self.content.scalar_cols.append((np.array(seqs, dtype=np.int64), np.array(steps, dtype=np.int64),
                                             np.array(walls, dtype=np.float64),
                                             np.array(values, dtype=np.float64)))
        if self.bad_proto:
            path = self.content.path
            self.content.problems.append(Problem(
                path, ProblemKind.BAD_PROTO,
                f"{path}: {self.bad_proto} record(s) are not Event protos or hold malformed values; skipped",
                severity="warning", offset=self.bad_proto_offset, count=self.bad_proto))
        return self.content


# -- value conversion --------------------------------------------------------------------------
class _Malformed(ValueError):
    """A value whose content contradicts its own description (e.g. its shape); counted as bad-proto."""


def _claimed_size(tensor: tensor_pb2.TensorProto) -> int:
    """Number of elements the tensor's shape claims (clamped at ``_HUGE``); never allocates."""
    size = 1
    for dim in tensor.tensor_shape.dim:
        if dim.size < 0:
            raise _Malformed("negative (unknown) dimension in a tensor value")
        size = min(size * dim.size, _HUGE)
    return size


def _tensor_values(tensor: tensor_pb2.TensorProto, spec: tuple[str, str], claimed: int,
                   max_fill: int) -> tuple[np.ndarray, int]:
    """The ``claimed`` values of a numeric TensorProto, flat, and how many elements were filled in.

    The values present must match ``claimed`` exactly: ``tensor_content`` of ``claimed`` x item size
    bytes, or ``claimed`` values in the typed field. The one exception is TF's compression (trailing
    copies of the last value left out), rebuilt only when ``claimed <= max_fill``. Anything else
    raises :class:`_Malformed`, so memory never exceeds what the record holds plus ``max_fill``.
    """
    dtype, field_name = spec
    content = tensor.tensor_content
    if content:
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        if len(content) != claimed * itemsize:
            raise _Malformed(f"tensor_content of {len(content)} bytes for {claimed} x {itemsize}-byte values")
        return _from_raw(content, dtype), 0
    values = getattr(tensor, field_name)
    n = len(values)
    if n == claimed:
        return _from_repeated(values, dtype), 0
    if 0 < n < claimed <= max_fill:
        flat = _from_repeated(values, dtype)
        return np.concatenate([flat, np.repeat(flat[-1:], claimed - n)]), claimed - n
    raise _Malformed(f"{n} value(s) for a tensor of {claimed} element(s)")


def _tensor_strings(tensor: tensor_pb2.TensorProto):
    """The strings of a string TensorProto; there must be exactly as many as its shape claims.

    (TF never compresses string tensors, so no "last value left out" form is accepted here.)
    """
    items = tensor.string_val
    if len(items) != _claimed_size(tensor):
        raise _Malformed(f"{len(items)} string(s) for a tensor of {_claimed_size(tensor)} element(s)")
    return items


def _from_raw(content: bytes, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return _bfloat16_to_float32(np.frombuffer(content, dtype="<u2"))
    return np.frombuffer(content, dtype=np.dtype(dtype).newbyteorder("<"))


def _from_repeated(values, dtype: str) -> np.ndarray:
    if dtype == "float16":
        return np.array(values, dtype=np.uint16).view(np.float16)
    if dtype == "bfloat16":
        return _bfloat16_to_float32(np.array(values, dtype=np.uint16))
    return np.array(values, dtype=dtype)


def _bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _from_histo(histo: summary_pb2.HistogramProto) -> tuple:
    """(min, max, num, sum, sum_squares, limits, counts) of a legacy HistogramProto."""
    return (histo.min, histo.max, histo.num, histo.sum, histo.sum_squares,
            np.array(histo.bucket_limit, dtype=np.float64), np.array(histo.bucket, dtype=np.float64))


def _from_tensor_buckets(buckets: np.ndarray) -> tuple:
    """(min, max, num, sum, sum_squares, limits, counts) from TF2 (left, right, count) rows."""
    buckets = buckets.astype(np.float64)
    left, right, counts = buckets[:, 0], buckets[:, 1], buckets[:, 2]
    centres = (left + right) / 2
    nonempty = np.flatnonzero(counts > 0)
    lo = left[nonempty[0]] if nonempty.size else np.nan
    hi = right[nonempty[-1]] if nonempty.size else np.nan
    return (lo, hi, counts.sum(), float(counts @ centres), float(counts @ centres**2), right.copy(), counts.copy())


def _tensor_images(items: Sequence[bytes]) -> list[tuple[int, int, bytes]]:
    """(width, height, encoded) for each image of a TF2 ``[width, height, png...]`` string tensor."""
    try:
        width, height = int(items[0]), int(items[1])
    except ValueError:
        return []
    return [(width, height, encoded) for encoded in items[2:]]


def _session_hparams(content: bytes) -> dict[str, Any]:
    """Flat hyper-parameters from a hparams plugin ``session_start_info`` (empty for other records)."""
    try:
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
    except DecodeError:
        return {}
    if not data.HasField("session_start_info"):
        return {}
    out: dict[str, Any] = {}
    for name, value in data.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        if kind == "number_value":
            out[name] = value.number_value
        elif kind == "string_value":
            out[name] = value.string_value
        elif kind == "bool_value":
            out[name] = value.bool_value
    return out


# -- the bulk scalar fast path -----------------------------------------------------------------
@dataclass
class _SimpleScalars:
    """Records of the exact legacy single-``simple_value`` shape, decoded with numpy.

    Wire layout (proto3 field order):
    ``09 <wall f64> [10 <step varint>] 2a L1 0a L2 0a T <tag> 15 <value f32>`` with one-byte L1, L2, T.
    ``mask`` marks which records of the batch matched; the other arrays hold the matched ones.
    """

    mask: np.ndarray
    tags: np.ndarray  # object array of str
    steps: np.ndarray
    wall_times: np.ndarray
    values: np.ndarray

    @classmethod
    def decode(cls, buffer: bytes, starts: np.ndarray, lengths: np.ndarray) -> "_SimpleScalars":
        raw = np.frombuffer(buffer, dtype=np.uint8)
        last = raw.size - 1

        def at(index: np.ndarray) -> np.ndarray:
            return raw[np.minimum(index, last)].astype(np.int64)

        ends = starts + lengths
        has_step = at(starts + 9) == 0x10
        varint = raw[np.minimum(starts[:, None] + 10 + np.arange(10), last)]
        done = varint < 0x80
        step_len = np.where(has_step, done.argmax(axis=1) + 1, 0)
        p = starts + 9 + np.where(has_step, 1 + step_len, 0)  # at the summary field
        tag_len = at(p + 5)
        mask = ((lengths >= 21) & (at(starts) == 0x09) & (~has_step | done.any(axis=1))
                & (at(p) == 0x2A) & (at(p + 2) == 0x0A) & (at(p + 4) == 0x0A)
                & (at(p + 1) < 0x80) & (at(p + 1) == at(p + 3) + 2) & (at(p + 3) == tag_len + 7)
                & (at(p + 6 + tag_len) == 0x15) & (p + 11 + tag_len == ends))
        sel = np.flatnonzero(mask)
        starts, p, tag_len = starts[sel], p[sel], tag_len[sel]
        return cls(
            mask=mask,
            tags=_tags(buffer, (p + 6).tolist(), tag_len.tolist()),
            steps=_varints(varint[sel], step_len[sel]),
            wall_times=gather_rows(raw, starts + 1, 8).view("<f8").ravel(),
            values=gather_rows(raw, p + 7 + tag_len, 4).view("<f4").ravel().astype(np.float64),
        )


def _varints(groups: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Decode int64 varints from rows of up to 10 bytes; length 0 means the field was absent (0)."""
    payload = (groups.astype(np.uint64) & np.uint64(0x7F)) << (np.uint64(7) * np.arange(10, dtype=np.uint64))
    payload[np.arange(10) >= lengths[:, None]] = 0
    return payload.sum(axis=1, dtype=np.uint64).view(np.int64)


def _tags(buffer: bytes, starts: list[int], lengths: list[int]) -> np.ndarray:
    """Tag strings (decoded once per distinct byte string) as an object array."""
    names: dict[bytes, str] = {}
    raw = [buffer[s:s + n] for s, n in zip(starts, lengths)]
    for key in set(raw):
        names[key] = key.decode("utf-8", "replace")
    return np.array([names[r] for r in raw], dtype=object)


# -- merging the files of one sub ----------------------------------------------------------------
class _Restarts:
    """Dropped-value counts per file that restarted a series, turned into Problems at the end."""

    def __init__(self) -> None:
        self.dropped: dict[str, int] = {}
        self.first_step: dict[str, int] = {}
        self.tags: dict[str, set[str]] = {}

    def add(self, path: str, tag: str, step: int, dropped: int) -> None:
        self.dropped[path] = self.dropped.get(path, 0) + dropped
        self.first_step[path] = min(step, self.first_step.get(path, step))
        self.tags.setdefault(path, set()).add(tag)

    def problems(self) -> list[Problem]:
        return [Problem(path, ProblemKind.STEP_RESTART,
                        f"{path}: training restarted (steps went back to {self.first_step[path]}); "
                        f"{n} earlier value(s) of {len(self.tags[path])} tag(s) at later steps dropped",
                        severity="info", count=n)
                for path, n in self.dropped.items()]


def _select(steps: np.ndarray, sessions: np.ndarray, max_per_tag: int | None) -> tuple[np.ndarray, list]:
    """Apply the step policy to one series in write order.

    Returns the indices to keep (ordered by step, ties in write order, thinned to ``max_per_tag``) and
    the restarts as ``(index, dropped)`` pairs.
    """
    n = steps.size
    keep = np.ones(n, dtype=bool)
    restarts = []
    if n > 1:
        prev_max = np.maximum.accumulate(steps)[:-1]
        new_session = sessions[1:] != sessions[:-1]
        for i in (np.flatnonzero((steps[1:] <= prev_max) & new_session) + 1).tolist():
            drop = keep[:i] & (steps[:i] >= steps[i])
            dropped = int(drop.sum())
            if dropped:
                keep[:i] &= ~drop
                restarts.append((i, dropped))
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(steps[kept], kind="stable")]
    if max_per_tag is not None and kept.size > max_per_tag:
        kept = kept[np.unique(np.linspace(0, kept.size - 1, max_per_tag).round().astype(np.int64))]
    return kept, restarts


def _session_ids(group: list[_FileContent], file_index: np.ndarray, seqs: np.ndarray) -> np.ndarray:
    """Writing-session number of each value: files in merge order, split at session_log START."""
    base = np.cumsum([0] + [len(c.session_starts) + 1 for c in group])
    sessions = base[file_index].astype(np.int64)
    for i, content in enumerate(group):
        if content.session_starts:
            rows = file_index == i
            sessions[rows] += np.searchsorted(np.asarray(content.session_starts), seqs[rows], side="right")
    return sessions


def _merge_scalars(sub: str, group: list[_FileContent], max_per_tag: int | None,
                   restarts: _Restarts) -> pd.DataFrame | None:
    parts = [(i, tags, cols) for i, c in enumerate(group) for tags, cols in zip(c.scalar_tags, c.scalar_cols)]
    if not parts:
        return None
    file_index = np.concatenate([np.full(tags.size, i) for i, tags, _ in parts])
    tags = np.concatenate([t for _, t, _ in parts])
    seqs, steps, walls, values = (np.concatenate([cols[k] for _, _, cols in parts]) for k in range(4))
    codes, names = pd.factorize(tags, sort=True)
    order = np.lexsort((seqs, file_index, codes))  # per tag, in write order
    sessions = _session_ids(group, file_index, seqs)[order]
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    chosen = []
    for code, name in enumerate(names):
        rows = order[bounds[code]:bounds[code + 1]]
        kept, found = _select(steps[rows], sessions[bounds[code]:bounds[code + 1]], max_per_tag)
        for i, dropped in found:
            restarts.add(group[file_index[rows[i]]].path, name, int(steps[rows[i]]), dropped)
        chosen.append(rows[kept])
    rows = np.concatenate(chosen)
    return pd.DataFrame({"run": sub, "tag": tags[rows], "step": steps[rows], "wall_time": walls[rows],
                         "value": values[rows]})


def _merge_points(sub: str, group: list[_FileContent], max_per_tag: int | None, restarts: _Restarts,
                  data: EventData) -> None:
    """Merge histograms, images and texts of one sub into ``data`` (keys prefixed with ``sub/``)."""
    prefix = f"{sub}/" if sub else ""
    for attr in ("histograms", "images", "texts"):
        # first appearance: files in merge order, then (dict insertion order) records in file order
        tags = dict.fromkeys(tag for c in group for tag in getattr(c, attr))
        for tag in tags:
            points = [(i, p) for i, c in enumerate(group) for p in getattr(c, attr).get(tag, [])]
            if not points:
                continue
            file_index = np.array([i for i, _ in points], dtype=np.int64)
            seqs = np.array([p.seq for _, p in points], dtype=np.int64)
            steps = np.array([p.step for _, p in points], dtype=np.int64)
            kept, found = _select(steps, _session_ids(group, file_index, seqs), max_per_tag)
            for i, dropped in found:
                restarts.add(group[points[i][0]].path, tag, int(steps[i]), dropped)
            chosen = [points[k][1] for k in kept.tolist()]
            key = prefix + tag
            if attr == "histograms":
                data.histograms[key] = _histogram_series(key, chosen)
            elif attr == "images":
                data.images[key] = [ImageRef(key, p.step, w, h, enc) for p in chosen for w, h, enc in p.payload]
            else:
                data.texts[key] = [(p.step, p.payload) for p in chosen]


def _histogram_series(key: str, points: list[_Point]) -> HistogramSeries:
    stats = np.array([p.payload[:5] for p in points], dtype=np.float64).reshape(-1, 5)
    return HistogramSeries(
        tag=key,
        steps=np.array([p.step for p in points], dtype=np.int64),
        wall_times=np.array([p.wall_time for p in points], dtype=np.float64),
        min=stats[:, 0], max=stats[:, 1], num=stats[:, 2], sum=stats[:, 3], sum_squares=stats[:, 4],
        limits=[p.payload[5] for p in points],
        counts=[p.payload[6] for p in points],
    )


def _scalar_frame(frames: list[pd.DataFrame | None]) -> pd.DataFrame:
    present = [f for f in frames if f is not None]
    if not present:
        return EventData.empty().scalars
    frame = pd.concat(present, ignore_index=True) if len(present) > 1 else present[0]
    return frame.astype({"run": "str", "tag": "str", "step": "int64", "wall_time": "float64",
                         "value": "float64"})[SCALAR_COLUMNS]
