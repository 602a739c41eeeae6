"""The bulk histogram decoder against the protobuf path: on generated mixed files (legacy histograms with
zero and empty fields, histograms carrying metadata or sharing a record with a scalar, TF2 tensor
histograms, scalars, session restarts, damaged records, several files and small read chunks) both
paths give identical HistogramSeries, in the same order, with the same problems."""
from __future__ import annotations

import functools
import math
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.compat.proto import summary_pb2

from builders import event_builders as eb
from report_gen.readers.events import bulk, decode, read_events
from report_gen.readers.tfrecord import RecordReader

TAGS = ["w", "grad_hist/fc.weight", "é/ünï", "a" * 200]
floats = st.one_of(st.just(0.0), st.just(-0.0), st.floats(allow_nan=True, allow_infinity=True, width=64))


@st.composite
def histogram_record(draw):
    tag = draw(st.sampled_from(TAGS))
    step = draw(st.one_of(st.just(0), st.integers(0, 300), st.integers(-5, 2**40)))
    wall = draw(st.one_of(st.just(0.0), st.floats(1e9, 2e9)))
    n = draw(st.integers(0, 40))
    limits = draw(st.lists(floats, min_size=n, max_size=n))
    counts = draw(st.lists(st.one_of(st.just(0.0), st.floats(0, 1e6)), min_size=draw(st.sampled_from([n, n, 0])),
                           max_size=n))
    stats = {k: draw(floats) for k in ("min", "max", "num", "sum", "sum_squares") if draw(st.booleans())}
    kind = draw(st.sampled_from(["legacy"] * 6 + ["metadata", "with_scalar", "tensor", "scalar", "restart",
                                                  "garbage"]))
    if kind == "legacy":
        return eb.make_hist_event(tag, step, wall_time=wall, limits=limits, counts=counts, stats=stats)
    histo = summary_pb2.HistogramProto(bucket_limit=limits, bucket=counts, **stats)
    if kind == "metadata":  # a value with metadata: the protobuf path
        value = summary_pb2.Summary.Value(tag=tag, histo=histo, metadata=eb.plugin_metadata("histograms"))
        return eb.make_summary_event([value], step, wall)
    if kind == "with_scalar":  # two values in one record: the protobuf path
        return eb.make_summary_event([summary_pb2.Summary.Value(tag=tag, histo=histo),
                                      summary_pb2.Summary.Value(tag="loss", simple_value=1.5)], step, wall)
    if kind == "tensor":
        buckets = [[i, i + 1.0, c] for i, c in enumerate(counts[:5])] or [[0.0, 1.0, 1.0]]
        return eb.make_tensor_hist_event(tag + "_tf2", step, buckets, wall)
    if kind == "scalar":
        return eb.make_scalar_event("loss", step, 0.25, wall)
    if kind == "restart":
        return eb.make_session_log_event(step, wall_time=wall)
    return draw(st.binary(min_size=1, max_size=60))  # not an Event: bad-proto on both paths


def _same(a, b) -> None:
    assert list(a.histograms) == list(b.histograms)
    for key, h in a.histograms.items():
        g = b.histograms[key]
        for attr in ("steps", "wall_times", "min", "max", "num", "sum", "sum_squares"):
            x, y = getattr(h, attr), getattr(g, attr)
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), (key, attr)
        assert len(h.limits) == len(g.limits) == len(h.counts) == len(g.counts) == len(h)
        for x, y in zip(h.limits + h.counts, g.limits + g.counts):
            assert x.dtype == y.dtype == np.float64 and np.array_equal(x, y, equal_nan=True), key
            # -0.0 and NaN payloads too: bit for bit
            assert x.tobytes() == y.tobytes() or (np.isnan(x).any() and np.array_equal(np.isnan(x), np.isnan(y)))
    assert [(p.kind, p.count, p.offset) for p in a.problems] == [(p.kind, p.count, p.offset) for p in b.problems]
    assert a.scalars.equals(b.scalars)


def _slow_only():
    def refuse(*args, **kwargs):
        raise RuntimeError("bulk path disabled")
    return mock.patch.object(bulk.LegacyHistograms, "decode", classmethod(refuse))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.lists(st.lists(histogram_record(), min_size=0, max_size=20), min_size=1, max_size=3),
       chunk=st.sampled_from([16 << 20, 512, 97]), max_per_tag=st.sampled_from([None, 3]))
def test_bulk_and_protobuf_paths_agree(files, chunk, max_per_tag):
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, records in enumerate(files):
            path = Path(d) / f"events.out.tfevents.{1700000000 + i}.host"
            eb.write_records(path, [eb.make_version_event(wall_time=1.0 + i)] + records)
            paths.append((str(path), ""))
        with mock.patch.object(decode, "RecordReader", functools.partial(RecordReader, chunk_size=chunk)):
            fast = read_events(paths, max_per_tag=max_per_tag)
            with _slow_only():
                slow = read_events(paths, max_per_tag=max_per_tag)
    _same(fast, slow)


def test_the_bulk_path_really_decodes_torch_histograms(tmp_path):
    """torch's own add_histogram records go through the bulk path (no protobuf object per record), and
    equal bucket limits of consecutive steps are kept once."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    rng = np.random.default_rng(0)
    for step in range(20):
        writer.add_histogram("weight_hist/fc.weight", rng.normal(size=500), step)
        writer.add_histogram("weight_hist/fc.bias", np.clip(rng.normal(size=50), -1, 1), step, bins=10)
    writer.close()
    path = str(next(tmp_path.glob("events.out.tfevents.*")))
    with mock.patch.object(decode, "_from_histo", side_effect=AssertionError("protobuf path used")):
        fast = read_events([(path, "")])
    with _slow_only():
        slow = read_events([(path, "")])
    _same(fast, slow)
    h = fast.histograms["weight_hist/fc.weight"]
    assert len(h) == 20 and h.num[0] == 500 and math.isclose(h.counts[0].sum(), 500)
    bias = fast.histograms["weight_hist/fc.bias"]
    assert len({id(a) for a in bias.limits}) < len(bias.limits)  # shared, not copied per step
