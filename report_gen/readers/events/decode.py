"""Decoding: the ``Event`` protos of ONE event file -> a :class:`FileContent` (values by raw tag).

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
    - the Keras model config (plugin ``graph_keras_model``, one string), kept raw with the histograms;
      :mod:`report_gen.readers.keras_config` reads kernel shapes from it.
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
"""
from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from report_gen.core import Problem, ProblemKind
from report_gen.readers import keras_config
from report_gen.readers.events.bulk import LegacyHistograms, SimpleScalars, packed_doubles
from report_gen.readers.tfrecord import RecordBatch, RecordReader

if TYPE_CHECKING:
    from tensorboard.compat.proto import summary_pb2, tensor_pb2

ALL_KINDS = ("scalars", "histograms", "images", "texts", "hparams")


@functools.cache
def _load_protos() -> None:
    """Import the protobuf classes, on the first record the bulk decoders leave (a file of plain
    scalars and histograms never needs them: protobuf and TensorBoard's protos cost a tenth of a second
    to import). They become this module's globals, as a top-level import would make them."""
    global DecodeError, event_pb2, summary_pb2, tensor_pb2, types_pb2, plugin_data_pb2, _SESSION_START, _TENSOR_FIELDS
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2

    _SESSION_START = event_pb2.SessionLog.START
    # dtype enum -> (numpy dtype of the values, TensorProto repeated field holding them)
    _TENSOR_FIELDS = {
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


# TF leaves out trailing copies of a tensor's last value; such a tensor is rebuilt only if it has at
# most _MAX_FILL elements, and a file may rebuild at most _MAX_FILL + _FILL_PER_BYTE * (its size)
# elements in all, so a tiny hostile file cannot make the reader allocate gigabytes.
_MAX_FILL = 1 << 20
_FILL_PER_BYTE = 16
_HUGE = 1 << 63  # claimed element counts are clamped here (shapes can multiply to enormous numbers)



@dataclass
class Point:
    """One non-scalar value in write order within its file."""

    seq: int
    step: int
    wall_time: float
    payload: Any


@dataclass
class FileContent:
    """What one file holds, before merging (values keyed by raw tag, ordered by ``seq``)."""

    path: str
    sub: str
    problems: list[Problem] = field(default_factory=list)
    first: tuple[int, float] | None = None  # (seq, wall_time) of the earliest decoded event
    scalar_tags: list[tuple[np.ndarray, list[str]]] = field(default_factory=list)  # (codes, names) per part
    scalar_cols: list[tuple[np.ndarray, ...]] = field(default_factory=list)  # (seq, step, wall, value)
    histograms: dict[str, list[Point]] = field(default_factory=dict)
    # legacy histograms decoded in bulk: tag -> batches, and the seq of each tag's first such record
    hist_batches: dict[str, list["HistBatch"]] = field(default_factory=dict)
    hist_first: dict[str, int] = field(default_factory=dict)
    images: dict[str, list[Point]] = field(default_factory=dict)
    texts: dict[str, list[Point]] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    session_starts: list[int] = field(default_factory=list)  # seq of session_log START records
    model_configs: list[bytes] = field(default_factory=list)  # Keras model JSON (readers/keras_config.py)

    def note_first(self, seq: int, wall_time: float) -> None:
        if self.first is None or seq < self.first[0]:
            self.first = (seq, wall_time)


@dataclass
class HistBatch:
    """Histogram values of one tag decoded in bulk from one record batch (in write order)."""

    seqs: np.ndarray
    steps: np.ndarray
    wall_times: np.ndarray
    stats: np.ndarray  # (n, 5): min, max, num, sum, sum_squares
    limits: list[np.ndarray]
    counts: list[np.ndarray]


def decode_file(path: str, sub: str, kinds: frozenset[str]) -> FileContent:
    reader = RecordReader(path)
    decoder = _EventDecoder(FileContent(path, sub), kinds)
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
    """Decodes the record batches of one file into a :class:`FileContent`."""

    def __init__(self, content: FileContent, kinds: frozenset[str]) -> None:
        self.content = content
        self.kinds = kinds
        self.plugins: dict[str, str] = {}  # tag -> plugin name seen on its first occurrence
        self.versions = 0
        self.bad_proto = 0
        self.bad_proto_offset: int | None = None
        self.file_bytes = 0  # size of the file (sets the fill budget, see _MAX_FILL)
        self.filled = 0  # tensor elements rebuilt from TF's "last value left out" form so far
        self._slow_scalars: tuple[list, list, list, list, list] = ([], [], [], [], [])
        self._shared_limits: dict[str, dict[bytes, np.ndarray]] = {}  # per tag: equal limits kept once

    def decode_batch(self, batch: RecordBatch, first_seq: int) -> None:
        """Decode one batch; record ``i`` gets sequence number ``first_seq + i``."""
        try:
            fast = SimpleScalars.decode(batch.buffer, batch.starts, batch.lengths)
        except Exception:  # noqa: BLE001 - defensive: the bulk path never loses a batch, the slow path decides
            fast = None
        if fast is not None and fast.mask.any():
            seqs = first_seq + np.flatnonzero(fast.mask)
            self.content.note_first(int(seqs[0]), float(fast.wall_times[0]))
            if "scalars" in self.kinds:
                self.content.scalar_tags.append((fast.codes, fast.names))
                self.content.scalar_cols.append((seqs, fast.steps, fast.wall_times, fast.values))
        buf = batch.buffer
        rest = np.flatnonzero(~fast.mask) if fast is not None else np.arange(len(batch))
        if rest.size:
            rest = self._bulk_histograms(batch, rest, first_seq)
        for i, start, length in zip(rest.tolist(), batch.starts[rest].tolist(), batch.lengths[rest].tolist()):
            self._decode_record(buf[start:start + length], first_seq + i, batch.base + start - 12)

    def _bulk_histograms(self, batch: RecordBatch, rest: np.ndarray, first_seq: int) -> np.ndarray:
        """Decode the legacy-histogram records among ``rest`` in bulk; returns the records still left."""
        try:
            hist = LegacyHistograms.decode(batch.buffer, batch.starts[rest], batch.lengths[rest])
        except Exception:  # noqa: BLE001 - defensive: the protobuf path decides
            return rest
        if not hist.mask.any():
            return rest
        seqs = first_seq + rest[hist.mask]
        self.content.note_first(int(seqs[0]), float(hist.wall_times[0]))
        if "histograms" in self.kinds:
            rows_of: dict[str, list[int]] = {}
            for i, tag in enumerate(hist.tags.tolist()):
                rows_of.setdefault(tag, []).append(i)
            for tag, rows in rows_of.items():
                idx = np.asarray(rows, dtype=np.int64)
                limits = packed_doubles(batch.buffer, hist.limit_spans[idx], self._shared_limits.setdefault(tag, {}))
                counts = packed_doubles(batch.buffer, hist.count_spans[idx])
                self.content.hist_batches.setdefault(tag, []).append(
                    HistBatch(seqs[idx], hist.steps[idx], hist.wall_times[idx], hist.stats[idx], limits, counts))
                self.content.hist_first.setdefault(tag, int(seqs[idx[0]]))
        return rest[~hist.mask]

    def _decode_record(self, data: bytes, seq: int, offset: int) -> None:
        """Decode one record; if it (or any of its values) cannot be decoded it is counted as bad-proto."""
        wall = _version_record(data)
        if wall is not None:  # what every writer puts first: no protobuf needed
            self.content.note_first(seq, wall)
            self.versions += 1
            return
        _load_protos()  # once
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
        elif plugin == keras_config.PLUGIN and is_string and "histograms" in self.kinds:
            if len(tensor.string_val) == 1:  # the kernel shapes of the histograms; parsed after the merge
                self.content.model_configs.append(tensor.string_val[0])
        elif plugin == "text" and is_string and "texts" in self.kinds:
            items = _tensor_strings(tensor)
            self._add(self.content.texts, "texts", tag, seq, step, wall,
                      lambda: "\n".join(s.decode("utf-8", "replace") for s in items))

    def _add_scalar(self, tag: str, seq: int, step: int, wall: float, value: float) -> None:
        if "scalars" in self.kinds:
            for column, item in zip(self._slow_scalars, (tag, seq, step, wall, value)):
                column.append(item)

    def _add(self, store: dict[str, list[Point]], kind: str, tag: str, seq: int, step: int, wall: float,
             payload) -> None:
        """Append a point built by ``payload()`` (called only if ``kind`` is wanted)."""
        if kind in self.kinds:
            point = Point(seq, step, wall, payload())  # built first: if it raises, nothing is stored
            store.setdefault(tag, []).append(point)

    def version_only(self, n_records: int) -> bool:
        """The file held file_version records and nothing else."""
        return self.versions > 0 and self.versions == n_records

    def finish(self) -> FileContent:
        """Close decoding: flush slow-path scalars and report undecodable records."""
        tags, seqs, steps, walls, values = self._slow_scalars
        if tags:
            index: dict[str, int] = {}
            codes = np.array([index.setdefault(t, len(index)) for t in tags], dtype=np.int64)
            self.content.scalar_tags.append((codes, list(index)))
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


_VERSION_PREFIX = b"brain.Event:"


def _version_record(data: bytes) -> float | None:
    """The wall time of a record that is exactly ``Event(wall_time=w, file_version="brain.Event:N")``
    (``09 <f64> 1a L <string>``), else None (then protobuf decodes it)."""
    if len(data) < 11 + len(_VERSION_PREFIX) or data[0] != 0x09 or data[9] != 0x1A or data[10] != len(data) - 11 \
            or not data.startswith(_VERSION_PREFIX, 11) or not data[11 + len(_VERSION_PREFIX):].isdigit():
        return None
    return struct.unpack_from("<d", data, 1)[0]


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
