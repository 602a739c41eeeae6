"""Helpers that write tiny TensorBoard event files byte by byte, for tests.

Every ``make_*`` function returns the serialized ``Event`` proto (bytes); ``write_records`` frames a
list of such payloads (or any bytes) as TFRecords and writes them to a file. The framing is
implemented here independently of ``report_gen.readers.tfrecord`` so tests cross-check the reader.

Typical use::

    path = write_records(tmp_path / "events.out.tfevents.1.host", [
        make_version_event(),
        make_scalar_event("train/loss", 0, 1.5),
        make_hist_event("weights/fc", 0, np.random.randn(100)),
    ])
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import crc32c
import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

DEFAULT_WALL_TIME = 1_700_000_000.0


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC32C."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord frame: length, masked CRC of length, data, masked CRC of data."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc(header)) + data + struct.pack("<I", masked_crc(data))


def write_records(path: str | Path, records: Iterable[bytes]) -> Path:
    """Write ``records`` framed as TFRecords to ``path`` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(frame(r) for r in records))
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write raw bytes (e.g. framed records with damage spliced in)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- events --------------------------------------------------------------------------------------
def make_event(step: int = 0, wall_time: float = DEFAULT_WALL_TIME, **fields) -> bytes:
    """Any Event; ``fields`` are passed to ``event_pb2.Event`` (summary=..., file_version=...)."""
    return event_pb2.Event(step=step, wall_time=wall_time, **fields).SerializeToString()


def make_summary_event(values: Sequence[summary_pb2.Summary.Value], step: int = 0,
                       wall_time: float = DEFAULT_WALL_TIME) -> bytes:
    """An Event holding a Summary with the given values."""
    return make_event(step, wall_time, summary=summary_pb2.Summary(value=list(values)))


def make_version_event(version: str = "brain.Event:2", wall_time: float = DEFAULT_WALL_TIME) -> bytes:
    """The file_version record every TensorFlow/torch writer puts first."""
    return make_event(0, wall_time, file_version=version)


def make_session_log_event(step: int, status: str = "START", wall_time: float = DEFAULT_WALL_TIME) -> bytes:
    """A TF1 SessionLog event (START marks a restart)."""
    log = event_pb2.SessionLog(status=event_pb2.SessionLog.SessionStatus.Value(status))
    return make_event(step, wall_time, session_log=log)


def make_graph_event(wall_time: float = DEFAULT_WALL_TIME) -> bytes:
    """A TF1 graph_def event (opaque bytes are enough for readers that skip it)."""
    return make_event(0, wall_time, graph_def=b"\x0a\x03abc")


def make_meta_graph_event(wall_time: float = DEFAULT_WALL_TIME) -> bytes:
    """A TF1 meta_graph_def event."""
    return make_event(0, wall_time, meta_graph_def=b"\x0a\x03abc")


def plugin_metadata(plugin: str, content: bytes = b"") -> summary_pb2.SummaryMetadata:
    """SummaryMetadata naming a plugin."""
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin, content=content))


def make_scalar_event(tag: str, step: int, value: float, wall_time: float = DEFAULT_WALL_TIME) -> bytes:
    """A legacy ``simple_value`` scalar (what torch's add_scalar writes)."""
    return make_summary_event([summary_pb2.Summary.Value(tag=tag, simple_value=value)], step, wall_time)


_TENSOR_DTYPES = {
    "float32": (types_pb2.DT_FLOAT, "float_val"),
    "float64": (types_pb2.DT_DOUBLE, "double_val"),
    "int32": (types_pb2.DT_INT32, "int_val"),
    "int64": (types_pb2.DT_INT64, "int64_val"),
}


def make_tensor(values, dtype: str = "float32", packed: bool = False) -> tensor_pb2.TensorProto:
    """A TensorProto. dtype: float32, float64, float16, int32, int64 or string (values: bytes/str).

    ``packed`` stores numbers in ``tensor_content`` instead of the typed repeated field.
    """
    arr = np.asarray(values)
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in arr.shape])
    if dtype == "string":
        flat = [v.encode() if isinstance(v, str) else bytes(v) for v in arr.ravel().tolist()]
        return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=flat)
    if dtype == "float16":
        half = arr.astype(np.float16)
        if packed:
            return tensor_pb2.TensorProto(dtype=types_pb2.DT_HALF, tensor_shape=shape,
                                          tensor_content=half.tobytes())
        return tensor_pb2.TensorProto(dtype=types_pb2.DT_HALF, tensor_shape=shape,
                                      half_val=half.view(np.uint16).astype(np.int32).ravel().tolist())
    enum, field = _TENSOR_DTYPES[dtype]
    typed = arr.astype(dtype)
    if packed:
        return tensor_pb2.TensorProto(dtype=enum, tensor_shape=shape, tensor_content=typed.tobytes())
    return tensor_pb2.TensorProto(dtype=enum, tensor_shape=shape, **{field: typed.ravel().tolist()})


def make_tensor_scalar_event(tag: str, step: int, value: float, wall_time: float = DEFAULT_WALL_TIME,
                             dtype: str = "float32", plugin: str | None = "scalars",
                             packed: bool = False) -> bytes:
    """A TF2 scalar: a 0-d tensor; ``plugin=None`` leaves the metadata out (later occurrences in TF2)."""
    kwargs = {"metadata": plugin_metadata(plugin)} if plugin else {}
    value_pb = summary_pb2.Summary.Value(tag=tag, tensor=make_tensor(value, dtype, packed), **kwargs)
    return make_summary_event([value_pb], step, wall_time)


def make_tensor_event(tag: str, step: int, tensor: tensor_pb2.TensorProto, plugin: str | None = None,
                      wall_time: float = DEFAULT_WALL_TIME) -> bytes:
    """A summary value holding any (possibly malformed) TensorProto, e.g. from :func:`raw_tensor`."""
    kwargs = {"metadata": plugin_metadata(plugin)} if plugin else {}
    return make_summary_event([summary_pb2.Summary.Value(tag=tag, tensor=tensor, **kwargs)], step, wall_time)


def raw_tensor(dtype: str, shape: Sequence[int], **fields) -> tensor_pb2.TensorProto:
    """A TensorProto with a free ``shape`` (not checked against the values), for hostile-input tests.

    dtype: a ``types_pb2`` name such as ``"DT_FLOAT"``; ``fields``: ``tensor_content=...``,
    ``float_val=[...]``, ``string_val=[...]``...
    """
    dims = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape])
    return tensor_pb2.TensorProto(dtype=types_pb2.DataType.Value(dtype), tensor_shape=dims, **fields)


def histogram_buckets(values, bins: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(right edges, counts) of ``values`` over ``bins`` equal buckets."""
    counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=bins)
    return edges[1:], counts.astype(np.float64)


def make_hist_event(tag: str, step: int, values=None, wall_time: float = DEFAULT_WALL_TIME, *,
                    bins: int = 30, limits=None, counts=None, stats: Mapping[str, float] | None = None) -> bytes:
    """A legacy HistogramProto; from raw ``values`` or explicit ``limits``/``counts``/``stats``."""
    if values is not None:
        values = np.asarray(values, dtype=np.float64)
        limits, counts = histogram_buckets(values, bins)
        stats = {"min": values.min(), "max": values.max(), "num": values.size,
                 "sum": values.sum(), "sum_squares": float((values ** 2).sum())}
    histo = summary_pb2.HistogramProto(bucket_limit=np.asarray(limits, float).tolist(),
                                       bucket=np.asarray(counts, float).tolist(), **dict(stats or {}))
    return make_summary_event([summary_pb2.Summary.Value(tag=tag, histo=histo)], step, wall_time)


def make_tensor_hist_event(tag: str, step: int, buckets, wall_time: float = DEFAULT_WALL_TIME,
                           plugin: str | None = "histograms", dtype: str = "float64") -> bytes:
    """A TF2 histogram: a [k, 3] tensor of (left edge, right edge, count)."""
    arr = np.asarray(buckets, dtype=np.float64).reshape(-1, 3)
    kwargs = {"metadata": plugin_metadata(plugin)} if plugin else {}
    value_pb = summary_pb2.Summary.Value(tag=tag, tensor=make_tensor(arr, dtype), **kwargs)
    return make_summary_event([value_pb], step, wall_time)


def tiny_png(width: int = 2, height: int = 2, gray: int = 128) -> bytes:
    """A valid grayscale PNG of the given size."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    raw = b"".join(b"\x00" + bytes([gray]) * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def make_image_event(tag: str, step: int, png: bytes | None = None, width: int = 2, height: int = 2,
                     wall_time: float = DEFAULT_WALL_TIME) -> bytes:
    """A legacy ``Summary.Image`` (what torch's add_image writes)."""
    image = summary_pb2.Summary.Image(height=height, width=width, colorspace=1,
                                      encoded_image_string=png if png is not None else tiny_png(width, height))
    return make_summary_event([summary_pb2.Summary.Value(tag=tag, image=image)], step, wall_time)


def make_tensor_image_event(tag: str, step: int, pngs: Sequence[bytes], width: int = 2, height: int = 2,
                            wall_time: float = DEFAULT_WALL_TIME, plugin: str | None = "images") -> bytes:
    """A TF2 image summary: a string tensor [width, height, png, png, ...]."""
    items = [str(width).encode(), str(height).encode(), *pngs]
    kwargs = {"metadata": plugin_metadata(plugin)} if plugin else {}
    value_pb = summary_pb2.Summary.Value(tag=tag, tensor=make_tensor(np.array(items, dtype=object), "string"),
                                         **kwargs)
    return make_summary_event([value_pb], step, wall_time)


def make_text_event(tag: str, step: int, text: str, wall_time: float = DEFAULT_WALL_TIME,
                    plugin: str | None = "text") -> bytes:
    """A text summary: a scalar string tensor with plugin ``text``."""
    kwargs = {"metadata": plugin_metadata(plugin)} if plugin else {}
    value_pb = summary_pb2.Summary.Value(tag=tag, tensor=make_tensor(np.array(text, dtype=object), "string"),
                                         **kwargs)
    return make_summary_event([value_pb], step, wall_time)


def make_string_scalar_event(tag: str, step: int, text: str, wall_time: float = DEFAULT_WALL_TIME,
                             plugin: str | None = "scalars") -> bytes:
    """A string tensor where a number is expected (e.g. a ``checkpoint_path`` 'scalar')."""
    return make_text_event(tag, step, text, wall_time, plugin=plugin)


def make_hparams_event(hparams: Mapping[str, float | str | bool],
                       wall_time: float = DEFAULT_WALL_TIME) -> bytes:
    """The hparams plugin's session_start_info record."""
    info = plugin_data_pb2.SessionStartInfo()
    for key, value in hparams.items():
        if isinstance(value, bool):
            info.hparams[key].bool_value = value
        elif isinstance(value, (int, float)):
            info.hparams[key].number_value = float(value)
        else:
            info.hparams[key].string_value = str(value)
    content = plugin_data_pb2.HParamsPluginData(version=0, session_start_info=info).SerializeToString()
    value_pb = summary_pb2.Summary.Value(tag="_hparams_/session_start_info",
                                         metadata=plugin_metadata("hparams", content))
    return make_summary_event([value_pb], 0, wall_time)

