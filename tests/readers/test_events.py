"""Event decoding, merging and the step policy, on hand-built and torch-written event files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tensorboard.compat.proto import event_pb2

from builders.event_builders import (
    frame, make_event, make_graph_event, make_hist_event, make_hparams_event, make_image_event,
    make_meta_graph_event, make_scalar_event, make_session_log_event, make_string_scalar_event,
    make_tensor_event, make_tensor_hist_event, make_tensor_image_event, make_tensor_scalar_event,
    make_text_event, make_version_event, raw_tensor, tiny_png, write_bytes, write_records,
)
from report_gen.readers.events import is_event_file_name, read_events

T0 = 1_700_000_000.0


def read_one(path, **kwargs):
    return read_events([(str(path), "")], **kwargs)


def series(data, tag, run=""):
    df = data.scalars
    rows = df[(df.tag == tag) & (df.run == run)]
    return rows.step.tolist(), rows.value.tolist()


def kinds(data):
    return [p.kind for p in data.problems]


@pytest.mark.parametrize("name, expected", [
    ("events.out.tfevents.1700000000.host.123.0", True),
    ("events.out.tfevents", True),  # CatBoost: no suffix
    ("/logs/run/events.out.tfevents.1.v2", True),
    ("model.pt", False),
    ("/logs/tfevents_dir/model.pt", False),
])
def test_is_event_file_name(name, expected):
    assert is_event_file_name(name) is expected


def test_scalars_frame_shape_and_order(tmp_path):
    path = write_records(tmp_path / "events.out.tfevents.1", [
        make_version_event(),
        make_scalar_event("loss", 0, 3.0, T0), make_scalar_event("acc", 0, 0.1, T0),
        make_scalar_event("loss", 2, 1.0, T0 + 2), make_scalar_event("loss", 1, 2.0, T0 + 1),
    ])
    data = read_one(path)
    df = data.scalars
    assert list(df.columns) == ["run", "tag", "step", "wall_time", "value"]
    assert [str(t) for t in df.dtypes] == ["str", "str", "int64", "float64", "float64"]
    assert df.tag.tolist() == ["acc", "loss", "loss", "loss"]
    assert series(data, "loss") == ([0, 1, 2], [3.0, 2.0, 1.0])
    assert df.wall_time.tolist() == [T0, T0, T0 + 1, T0 + 2]
    assert data.problems == [] and data.files == [str(path)]


@pytest.mark.parametrize("step", [0, 1, 127, 128, 300, 2**40, -1, -(2**40)])
@pytest.mark.parametrize("tag", ["x", "train/loss", "ü/ñ", "t" * 118, "t" * 119, "t" * 300])
def test_scalar_wire_shapes(tmp_path, step, tag):
    """Any step (absent, multi-byte, negative) and tag length round-trips exactly (fast or slow path)."""
    path = write_records(tmp_path / "events.out.tfevents.1", [make_scalar_event(tag, step, 0.25, T0 + 0.5)])
    row = read_one(path).scalars.iloc[0]
    assert (row.tag, row.step, row.value, row.wall_time) == (tag, step, 0.25, T0 + 0.5)


def test_multi_value_summary_and_float32_precision(tmp_path):
    from tensorboard.compat.proto import summary_pb2
    values = [summary_pb2.Summary.Value(tag="a", simple_value=0.1), summary_pb2.Summary.Value(tag="b", simple_value=2.0)]
    path = write_records(tmp_path / "events.out.tfevents.1",
                         [make_event(5, T0, summary=summary_pb2.Summary(value=values))])
    data = read_one(path)
    assert series(data, "a") == ([5], [float(np.float32(0.1))])
    assert series(data, "b") == ([5], [2.0])


def test_empty_version_only_and_no_suffix_files(tmp_path):
    empty = write_bytes(tmp_path / "a" / "events.out.tfevents.1", b"")
    version = write_records(tmp_path / "b" / "events.out.tfevents.2", [make_version_event()])
    catboost = write_records(tmp_path / "c" / "events.out.tfevents", [make_scalar_event("Logloss", 3, 0.5)])
    data = read_events([(str(empty), ""), (str(version), ""), (str(catboost), "")])
    by_file = {p.file: (p.kind, p.severity) for p in data.problems}
    assert by_file == {str(empty): ("empty-file", "info"), str(version): ("version-only", "info")}
    assert series(data, "Logloss") == ([3], [0.5])


def test_damage_is_reported_and_rest_is_read(tmp_path):
    good = frame(make_version_event()) + frame(make_scalar_event("loss", 1, 1.0))
    junk = b"Traceback (most recent call last): oops\n"
    bad_crc = bytearray(frame(make_scalar_event("loss", 2, 2.0)))
    bad_crc[20] ^= 0xFF
    tail_offset = len(good) + len(junk) + len(bad_crc) + len(frame(make_scalar_event("loss", 3, 3.0)))
    blob = (good + junk + bytes(bad_crc) + frame(make_scalar_event("loss", 3, 3.0))
            + frame(make_scalar_event("loss", 4, 4.0))[:-3])
    path = write_bytes(tmp_path / "events.out.tfevents.1", blob)
    data = read_one(path)
    assert series(data, "loss") == ([1, 3], [1.0, 3.0])
    got = [(p.kind, p.severity, p.offset) for p in data.problems]
    assert got == [("junk-bytes", "warning", len(good)),
                   ("truncated-record", "info", tail_offset),
                   ("bad-data-crc", "warning", len(good) + len(junk))]


def test_bad_proto_is_counted(tmp_path):
    first = frame(make_scalar_event("loss", 1, 1.0))
    path = write_bytes(tmp_path / "events.out.tfevents.1",
                       first + frame(b"\xff\xff\xff\xff") + frame(b"\x0a\x05ab") + frame(make_scalar_event("loss", 2, 2.0)))
    data = read_one(path)
    assert series(data, "loss") == ([1, 2], [1.0, 2.0])
    (problem,) = data.problems
    assert (problem.kind, problem.count, problem.offset) == ("bad-proto", 2, len(first))


# -- hostile / malformed tensors ----------------------------------------------------------------------
def bad_proto(data):
    return [(p.kind, p.count, p.offset) for p in data.problems if p.kind == "bad-proto"]


def test_claimed_shape_never_drives_allocation(tmp_path):
    """A few-hundred-byte file claiming 50M-element tensors: skipped as bad-proto, no big allocation."""
    from builders.memtools import peak_memory

    huge = 50_000_000
    first = frame(make_scalar_event("loss", 1, 1.0))
    path = write_bytes(tmp_path / "events.out.tfevents.1", first + b"".join(frame(r) for r in [
        make_tensor_event("w", 1, raw_tensor("DT_FLOAT", [huge // 3, 3], float_val=[1.0]), "histograms"),
        make_tensor_event("lr", 1, raw_tensor("DT_FLOAT", [huge], float_val=[1.0]), "scalars"),
        make_tensor_event("lr", 2, raw_tensor("DT_FLOAT", [2], float_val=[1.0, 2.0]), "scalars"),
        make_tensor_event("w", 2, raw_tensor("DT_DOUBLE", [2**40, 2**40, 3], double_val=[0.0]), "histograms"),
        make_tensor_event("w", 3, raw_tensor("DT_DOUBLE", [-1, 3], double_val=[0.0]), "histograms"),
        make_tensor_event("txt", 1, raw_tensor("DT_STRING", [huge], string_val=[b"x"]), "text"),
        make_tensor_event("img", 1, raw_tensor("DT_STRING", [huge], string_val=[b"2", b"2", b"png"]), "images"),
        make_scalar_event("loss", 2, 2.0),
    ]))
    with peak_memory() as mem:
        data = read_one(path)
    assert mem["peak"] < 20e6
    assert series(data, "loss") == ([1, 2], [1.0, 2.0])
    assert data.histograms == {} and data.texts == {} and data.images == {}
    assert bad_proto(data) == [("bad-proto", 7, len(first))]


def test_scalar_tensor_must_have_exactly_one_element(tmp_path):
    path = write_records(tmp_path / "events.out.tfevents.1", [
        make_tensor_event("lr", 1, raw_tensor("DT_FLOAT", [1, 1], float_val=[0.5]), "scalars"),  # product 1: ok
        make_tensor_event("lr", 2, raw_tensor("DT_FLOAT", [], float_val=[]), "scalars"),  # no value
        make_tensor_event("lr", 3, raw_tensor("DT_FLOAT", [], float_val=[1.0, 2.0]), "scalars"),  # too many
        make_tensor_event("vec", 1, raw_tensor("DT_FLOAT", [3], float_val=[1.0]), None),  # unnamed vector: not ours
    ])
    data = read_one(path)
    assert series(data, "lr") == ([1], [0.5]) and series(data, "vec") == ([], [])
    assert [(k, c) for k, c, _ in bad_proto(data)] == [("bad-proto", 2)]


def test_last_value_fill_only_for_small_tensors_within_the_file_budget(tmp_path):
    """TF's "trailing copies of the last value left out" form is rebuilt for small tensors only."""
    k = 333_333  # 999,999 elements: just under the per-tensor limit
    path = write_records(tmp_path / "events.out.tfevents.1", [
        make_tensor_event("empty", 1, raw_tensor("DT_DOUBLE", [30, 3], double_val=[0.0]), "histograms"),
        make_tensor_event("two", 1, raw_tensor("DT_DOUBLE", [2, 3], double_val=[0.0, 1.0, 2.0, 2.0]), "histograms"),
        make_tensor_event("big", 1, raw_tensor("DT_DOUBLE", [k, 3], double_val=[0.0]), "histograms"),
        # the file's fill budget (1M + 16 x file size elements) is spent by now
        make_tensor_event("big", 2, raw_tensor("DT_DOUBLE", [k, 3], double_val=[0.0]), "histograms"),
        make_tensor_event("over", 1, raw_tensor("DT_DOUBLE", [(1 << 20) // 3 + 1, 3], double_val=[0.0]),
                          "histograms"),
    ])
    data = read_one(path)
    assert data.histograms["empty"].num.tolist() == [0.0] and data.histograms["empty"].limits[0].size == 30
    assert data.histograms["two"].counts[0].tolist() == [2.0, 2.0]
    assert data.histograms["big"].steps.tolist() == [1] and "over" not in data.histograms
    assert [(k, c) for k, c, _ in bad_proto(data)] == [("bad-proto", 2)]


@pytest.mark.parametrize("tensor, plugin", [
    (raw_tensor("DT_FLOAT", [], tensor_content=b"\x00\x00\x80"), "scalars"),  # 3 bytes of float32
    (raw_tensor("DT_HALF", [], tensor_content=b"\x00"), "scalars"),
    (raw_tensor("DT_BFLOAT16", [], tensor_content=b"\x00\x00\x00"), None),
    (raw_tensor("DT_FLOAT", [], tensor_content=b"\x00" * 8), "scalars"),  # a multiple, but 2 values
    (raw_tensor("DT_DOUBLE", [2, 3], tensor_content=b"\x00" * 20), "histograms"),  # 20 % 8 != 0
    (raw_tensor("DT_DOUBLE", [2, 3], tensor_content=b"\x00" * 40), "histograms"),  # 5 values for 6
    (raw_tensor("DT_DOUBLE", [2, 2], double_val=[0.0] * 4), "histograms"),  # not [k, 3]
    (raw_tensor("DT_STRING", [2], string_val=[b"a"]), "text"),
    (raw_tensor("DT_STRING", [4], string_val=[b"2", b"2", b"p"]), "images"),
])
def test_malformed_tensor_is_bad_proto_and_the_rest_is_read(tmp_path, tensor, plugin):
    first = frame(make_version_event()) + frame(make_scalar_event("loss", 1, 1.0))
    path = write_bytes(tmp_path / "events.out.tfevents.1", first + b"".join(frame(r) for r in [
        make_tensor_event("x", 1, tensor, plugin),
        make_tensor_event("x", 2, tensor, plugin),
        make_scalar_event("loss", 2, 2.0),
    ]))
    data = read_one(path)
    assert series(data, "loss") == ([1, 2], [1.0, 2.0])
    assert bad_proto(data) == [("bad-proto", 2, len(first))]
    assert [p.kind for p in data.problems] == ["bad-proto"]


def test_bad_value_does_not_drop_the_other_values_of_its_record(tmp_path):
    from tensorboard.compat.proto import summary_pb2
    bad = summary_pb2.Summary.Value(tag="x", tensor=raw_tensor("DT_FLOAT", [], tensor_content=b"\x01"),
                                    metadata=summary_pb2.SummaryMetadata(
                                        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")))
    good = summary_pb2.Summary.Value(tag="loss", simple_value=0.5)
    path = write_records(tmp_path / "events.out.tfevents.1",
                         [make_event(3, T0, summary=summary_pb2.Summary(value=[bad, good]))])
    data = read_one(path)
    assert series(data, "loss") == ([3], [0.5])
    assert bad_proto(data) == [("bad-proto", 1, 0)]


def test_no_decoding_error_escapes(tmp_path, monkeypatch):
    """Whatever a record's content makes the decoding code raise, read_events reports and goes on."""
    from report_gen.readers.events import bulk, decode

    def boom(*args, **kwargs):
        raise RuntimeError("hostile")

    monkeypatch.setattr(decode, "_from_histo", boom)
    monkeypatch.setattr(bulk.SimpleScalars, "decode", classmethod(boom))  # the bulk paths too
    monkeypatch.setattr(bulk.LegacyHistograms, "decode", classmethod(boom))
    path = write_records(tmp_path / "events.out.tfevents.1", [
        make_scalar_event("loss", 1, 1.0), make_hist_event("w", 1, [1.0]), make_scalar_event("loss", 2, 2.0)])
    data = read_one(path)
    assert series(data, "loss") == ([1, 2], [1.0, 2.0])  # the slow path took over
    assert [(k, c) for k, c, _ in bad_proto(data)] == [("bad-proto", 1)]


def test_unreadable_file_does_not_stop_the_run(tmp_path):
    good = write_records(tmp_path / "events.out.tfevents.1", [make_scalar_event("loss", 1, 1.0)])
    data = read_events([(str(tmp_path), ""), (str(good), "")])
    assert series(data, "loss") == ([1], [1.0])
    assert [(p.kind, p.severity) for p in data.problems] == [("unreadable", "error")]


def test_tf1_records_are_skipped(tmp_path):
    path = write_records(tmp_path / "events.out.tfevents.1", [
        make_version_event("brain.Event:1"), make_graph_event(), make_meta_graph_event(),
        make_event(0, T0, log_message=event_pb2.LogMessage(message="hi")),
        make_session_log_event(0), make_scalar_event("loss", 1, 1.0),
    ])
    data = read_one(path)
    assert series(data, "loss") == ([1], [1.0]) and data.problems == []


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int32", "int64"])
@pytest.mark.parametrize("packed", [False, True])
def test_tf2_tensor_scalars(tmp_path, dtype, packed):
    path = write_records(tmp_path / "events.out.tfevents.1", [
        make_tensor_scalar_event("lr", 1, 3, dtype=dtype, packed=packed),
        make_tensor_scalar_event("lr", 2, 2, dtype=dtype, packed=packed, plugin=None),  # later: no metadata
    ])
    assert series(read_one(path), "lr") == ([1, 2], [3.0, 2.0])


def test_plugin_is_remembered_per_tag_per_file(tmp_path):
    buckets = [[0.0, 1.0, 2.0], [1.0, 2.0, 0.0], [2.0, 4.0, 1.0]]
    first = write_records(tmp_path / "events.out.tfevents.1", [
        make_tensor_hist_event("w", 0, buckets, T0),
        make_tensor_hist_event("w", 1, [[0.0, 1.0, 5.0]], T0 + 1, plugin=None),
        make_string_scalar_event("checkpoint_path", 1, "/ckpt/model-1"),  # string where a number was expected
        make_string_scalar_event("checkpoint_path", 2, "/ckpt/model-2", plugin=None),
    ])
    # in a second file the [k,3] tensor without metadata is NOT a histogram (plugin unknown there)
    second = write_records(tmp_path / "events.out.tfevents.2", [
        make_tensor_hist_event("w", 2, buckets, T0 + 10, plugin=None)])
    data = read_events([(str(first), ""), (str(second), "")])
    assert data.histograms["w"].steps.tolist() == [0, 1]
    assert data.scalars.empty and data.problems == []


def test_tf2_histogram_conversion(tmp_path):
    buckets = [[-1.0, 0.0, 0.0], [0.0, 1.0, 2.0], [1.0, 3.0, 1.0], [3.0, 4.0, 0.0]]
    path = write_records(tmp_path / "events.out.tfevents.1", [make_tensor_hist_event("w", 7, buckets)])
    h = read_one(path).histograms["w"]
    assert h.steps.tolist() == [7]
    assert (h.min[0], h.max[0], h.num[0]) == (0.0, 3.0, 3.0)
    assert h.sum[0] == pytest.approx(2 * 0.5 + 1 * 2.0)
    assert h.sum_squares[0] == pytest.approx(2 * 0.25 + 1 * 4.0)
    assert h.limits[0].tolist() == [0.0, 1.0, 3.0, 4.0] and h.counts[0].tolist() == [0.0, 2.0, 1.0, 0.0]


def test_empty_tf2_histogram(tmp_path):
    path = write_records(tmp_path / "events.out.tfevents.1", [make_tensor_hist_event("w", 1, np.zeros((0, 3)))])
    h = read_one(path).histograms["w"]
    assert h.num.tolist() == [0.0] and np.isnan(h.min[0]) and h.limits[0].size == 0


def test_legacy_histogram_keeps_exact_stats(tmp_path):
    values = np.array([-2.0, 0.5, 0.5, 3.0])
    path = write_records(tmp_path / "events.out.tfevents.1", [make_hist_event("w", 3, values, bins=4)])
    h = read_one(path).histograms["w"]
    assert (h.min[0], h.max[0], h.num[0], h.sum[0], h.sum_squares[0]) == (-2.0, 3.0, 4.0, 2.0, 13.5)
    assert h.counts[0].sum() == 4 and h.limits[0][-1] == 3.0
    assert h.mean[0] == 0.5


def test_images_both_forms_kept_encoded_and_skippable(tmp_path):
    png_a, png_b = tiny_png(3, 2, 10), tiny_png(3, 2, 200)
    path = write_records(tmp_path / "events.out.tfevents.1", [
        make_image_event("maps/conv1", 1, png_a, width=3, height=2),
        make_tensor_image_event("maps/tf2", 2, [png_a, png_b], width=3, height=2),
    ])
    data = read_one(path)
    legacy, = data.images["maps/conv1"]
    assert (legacy.tag, legacy.step, legacy.width, legacy.height, legacy.png_bytes()) == ("maps/conv1", 1, 3, 2, png_a)
    assert [(i.step, i.encoded) for i in data.images["maps/tf2"]] == [(2, png_a), (2, png_b)]
    assert read_one(path, kinds=("scalars",)).images == {}


def test_text_and_hparams(tmp_path):
    path = write_records(tmp_path / "events.out.tfevents.1", [
        make_hparams_event({"lr": 0.01, "optimizer": "adam", "amp": False}),
        make_text_event("notes", 0, "first"), make_text_event("notes", 5, "second", plugin=None),
    ])
    data = read_one(path)
    assert data.hparams == {"lr": 0.01, "optimizer": "adam", "amp": False}
    assert data.texts == {"notes": [(0, "first"), (5, "second")]}
    limited = read_one(path, kinds=("texts",))
    assert limited.hparams == {} and limited.texts["notes"][1] == (5, "second")


def test_unknown_kind_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError):
        read_events([], kinds=("audio",))


# -- sub-folders and merging ----------------------------------------------------------------------
def test_subs_go_to_run_column_and_key_prefix(tmp_path):
    main = write_records(tmp_path / "run" / "events.out.tfevents.1", [
        make_scalar_event("loss", 1, 1.0), make_hist_event("w", 1, [1.0, 2.0])])
    sub = write_records(tmp_path / "run" / "act_mean" / "events.out.tfevents.2", [
        make_scalar_event("act", 1, 0.5), make_hist_event("w", 1, [1.0]), make_text_event("t", 1, "x")])
    data = read_events([(str(sub), "act_mean"), (str(main), "")])
    assert data.scalars.run.tolist() == ["", "act_mean"]
    assert set(data.histograms) == {"w", "act_mean/w"} and set(data.texts) == {"act_mean/t"}
    assert data.histograms["act_mean/w"].tag == "act_mean/w"
    assert data.files == [str(main), str(sub)]


def test_files_merge_by_first_wall_time_then_name(tmp_path):
    late = write_records(tmp_path / "events.out.tfevents.1_a", [make_scalar_event("loss", 10, 2.0, T0 + 100)])
    early = write_records(tmp_path / "events.out.tfevents.2_b", [make_scalar_event("loss", 10, 1.0, T0)])
    data = read_events([(str(late), ""), (str(early), "")])
    assert data.files == [str(early), str(late)]
    # the later file restarts at step 10: the earlier value at step 10 is dropped
    assert series(data, "loss") == ([10], [2.0])


def test_tags_are_in_write_order_not_alphabetical(tmp_path):
    """Histogram/image/text keys follow first appearance (model depth: input layer first)."""
    layers = ["features.0.weight", "features.3.weight", "features.10.weight", "classifier.1.weight"]
    first = write_records(tmp_path / "events.out.tfevents.1", [
        rec for step in range(2) for rec in
        [make_scalar_event("loss", step, 1.0, T0 + step)]
        + [make_hist_event(f"grad/{name}", step, [1.0], T0 + step) for name in layers]
        + [make_image_event("z_img", step, wall_time=T0 + step), make_image_event("a_img", step, wall_time=T0 + step),
           make_text_event("z_txt", step, "z", T0 + step), make_text_event("a_txt", step, "a", T0 + step)]])
    # a later file (merge order: later first wall time) introduces a new tag and repeats an old one
    second = write_records(tmp_path / "events.out.tfevents.0", [
        make_hist_event("grad/aaa.head", 5, [1.0], T0 + 100),
        make_hist_event("grad/features.0.weight", 5, [1.0], T0 + 100)])
    sub = write_records(tmp_path / "b_sub" / "events.out.tfevents.2", [
        make_hist_event("zz", 0, [1.0], T0 - 50), make_hist_event("aa", 0, [1.0], T0 - 50)])
    data = read_events([(str(sub), "b_sub"), (str(second), ""), (str(first), "")])
    assert list(data.histograms) == [f"grad/{name}" for name in layers] + ["grad/aaa.head", "b_sub/zz", "b_sub/aa"]
    assert list(data.images) == ["z_img", "a_img"] and list(data.texts) == ["z_txt", "a_txt"]
    assert data.histograms["grad/features.0.weight"].steps.tolist() == [0, 1, 5]


# -- step policy ------------------------------------------------------------------------------------
def test_restart_in_later_file_drops_overlap_and_reports_once(tmp_path):
    first = write_records(tmp_path / "events.out.tfevents.1", [
        make_scalar_event(tag, s, float(s), T0 + s) for s in range(0, 10) for tag in ("loss", "acc")]
        + [make_hist_event("w", s, [float(s)], T0 + s) for s in range(0, 10)])
    second = write_records(tmp_path / "events.out.tfevents.2", [
        make_scalar_event(tag, s, 100.0 + s, T0 + 1000 + s) for s in range(6, 12) for tag in ("loss", "acc")]
        + [make_hist_event("w", s, [100.0], T0 + 1000 + s) for s in range(6, 12)])
    data = read_events([(str(first), ""), (str(second), "")])
    steps, values = series(data, "loss")
    assert steps == list(range(12))
    assert values == [float(s) for s in range(6)] + [100.0 + s for s in range(6, 12)]
    assert data.histograms["w"].steps.tolist() == list(range(12))
    (problem,) = data.problems
    assert (problem.kind, problem.severity, problem.file, problem.count) == ("step-restart", "info", str(second), 12)


def test_many_values_on_one_step_are_kept_in_write_order(tmp_path):
    path = write_records(tmp_path / "events.out.tfevents.1", [
        make_scalar_event("batch_loss", epoch, float(10 * epoch + b), T0 + 10 * epoch + b)
        for epoch in range(3) for b in range(4)])
    data = read_one(path)
    steps, values = series(data, "batch_loss")
    assert steps == [0] * 4 + [1] * 4 + [2] * 4
    assert values == [float(10 * e + b) for e in range(3) for b in range(4)]
    assert data.problems == []


def test_equal_step_in_a_later_file_is_a_restart(tmp_path):
    first = write_records(tmp_path / "events.out.tfevents.1", [make_scalar_event("loss", s, 1.0, T0 + s) for s in range(5)])
    second = write_records(tmp_path / "events.out.tfevents.2", [make_scalar_event("loss", 4, 2.0, T0 + 50)])
    data = read_events([(str(first), ""), (str(second), "")])
    assert series(data, "loss") == ([0, 1, 2, 3, 4], [1.0] * 4 + [2.0])
    assert [(p.kind, p.count) for p in data.problems] == [("step-restart", 1)]


REAL_HF = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "hf"


@pytest.mark.parametrize("case, last_step", [("bert-healthy-tensorboard", 120), ("gpt2-healthy-tensorboard", 200)])
def test_trainer_evaluate_after_train_is_merged_not_a_restart(case, last_step):
    """transformers' Trainer: evaluate() after train() opens a second event file holding eval/* and
    train/epoch at the final step, where the last in-training evaluation already logged eval/*."""
    files = sorted(str(p) for p in (REAL_HF / case / "runs").glob("*/*tfevents*"))
    assert len(files) == 2
    data = read_events([(f, "") for f in files])
    assert [p.kind for p in data.problems] == []
    steps, values = series(data, "eval/loss")
    assert steps[-2:] == [last_step, last_step] and values[-1] == values[-2]  # both evaluations kept
    train_steps, _ = series(data, "train/loss")
    assert train_steps[-1] == last_step and len(train_steps) == len(set(train_steps))


def test_an_evaluation_file_at_one_step_is_merged_even_at_a_logged_step(tmp_path):
    first = write_records(tmp_path / "events.out.tfevents.1", [
        make_scalar_event(tag, s, float(s), T0 + s) for s in (10, 20, 30) for tag in ("train/loss", "eval/loss")])
    second = write_records(tmp_path / "events.out.tfevents.2", [
        make_scalar_event("eval/loss", 20, 7.0, T0 + 100), make_scalar_event("train/epoch", 20, 2.0, T0 + 100)])
    data = read_events([(str(first), ""), (str(second), "")])
    assert data.problems == []
    assert series(data, "eval/loss") == ([10, 20, 20, 30], [10.0, 20.0, 7.0, 30.0])


@pytest.mark.parametrize("records", [
    # a training series in the later file: a resumed run, whatever else it logs
    [("eval/loss", 20, 7.0), ("train/loss", 20, 7.0)],
    # evaluations at two steps: a resumed run that logs only evaluations
    [("eval/loss", 20, 7.0), ("eval/loss", 30, 8.0)],
])
def test_a_later_file_that_is_not_one_evaluation_still_restarts(tmp_path, records):
    first = write_records(tmp_path / "events.out.tfevents.1", [
        make_scalar_event(tag, s, float(s), T0 + s) for s in (10, 20, 30) for tag in ("train/loss", "eval/loss")])
    second = write_records(tmp_path / "events.out.tfevents.2", [
        make_scalar_event(tag, step, value, T0 + 100 + i) for i, (tag, step, value) in enumerate(records)])
    data = read_events([(str(first), ""), (str(second), "")])
    assert [p.kind for p in data.problems] == ["step-restart"]
    assert series(data, "eval/loss")[0][:2] == [10, 20] and 30.0 not in series(data, "eval/loss")[1][:2]


def test_an_evaluation_file_with_a_histogram_is_judged_as_a_restart(tmp_path):
    first = write_records(tmp_path / "events.out.tfevents.1", [make_scalar_event("eval/loss", s, 1.0, T0 + s)
                                                                for s in (10, 20)])
    second = write_records(tmp_path / "events.out.tfevents.2", [
        make_scalar_event("eval/loss", 10, 2.0, T0 + 100), make_hist_event("eval/w", 10, [1.0], T0 + 100)])
    data = read_events([(str(first), ""), (str(second), "")])
    assert series(data, "eval/loss") == ([10], [2.0])
    assert [p.kind for p in data.problems] == ["step-restart"]


def test_steps_going_back_within_a_file_are_kept_until_a_session_start(tmp_path):
    path = write_records(tmp_path / "events.out.tfevents.1", [
        *[make_scalar_event("loss", s, 1.0) for s in range(5)],
        make_scalar_event("loss", 2, 2.0),  # backwards in the same session: kept, ordered by step
        make_session_log_event(3),  # TF1 restart marker
        make_scalar_event("loss", 3, 3.0),
    ])
    data = read_one(path)
    assert series(data, "loss") == ([0, 1, 2, 2, 3], [1.0, 1.0, 1.0, 2.0, 3.0])
    (problem,) = data.problems
    assert (problem.kind, problem.count, problem.file) == ("step-restart", 2, str(path))


def test_max_per_tag_keeps_first_and_last(tmp_path):
    path = write_records(tmp_path / "events.out.tfevents.1",
                         [make_scalar_event("loss", s, float(s)) for s in range(100)]
                         + [make_hist_event("w", s, [1.0]) for s in range(10)])
    data = read_one(path, max_per_tag=5)
    steps, _ = series(data, "loss")
    assert steps == [0, 25, 50, 74, 99]
    assert data.histograms["w"].steps.tolist() == [0, 2, 4, 7, 9]


def test_fast_and_slow_paths_agree_on_a_mixed_file(tmp_path):
    rng = np.random.default_rng(0)
    records, expected = [], []
    for i in range(300):
        tag, step, value = f"tag{i % 7}", int(rng.integers(-5, 10**6)), float(np.float32(rng.standard_normal()))
        maker = make_tensor_scalar_event if i % 3 == 0 else make_scalar_event
        records.append(maker(tag, step, value, wall_time=T0 + i))
        expected.append((tag, step, T0 + i, value))
    path = write_records(tmp_path / "events.out.tfevents.1", records)
    df = read_one(path).scalars
    assert sorted(zip(df.tag, df.step, df.wall_time, df.value)) == sorted(expected)


# -- torch round trip ---------------------------------------------------------------------------------
def test_torch_summary_writer_round_trip(tmp_path):
    import torch
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "run"
    writer = SummaryWriter(str(run))
    for step in range(3):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
        writer.add_histogram("weights/fc", torch.arange(10.0) + step, step)
        writer.add_scalars("activation_stats/fc", {"mean": 0.5 + step, "std": 1.0}, step)
    writer.add_image("maps/x", torch.zeros(3, 4, 5), 0)
    writer.add_text("notes", "hello", 0)
    writer.add_hparams({"lr": 0.1, "bs": 32}, {"hparam/acc": 0.9}, run_name="hp")
    writer.close()
    files = [(str(p), str(p.parent.relative_to(run)).replace(".", "")) for p in sorted(run.rglob("*tfevents*"))]
    data = read_events(files)
    assert series(data, "train/loss") == ([0, 1, 2], [1.0, 0.5, pytest.approx(1 / 3)])
    assert series(data, "activation_stats/fc", run="activation_stats_fc_mean") == ([0, 1, 2], [0.5, 1.5, 2.5])
    assert series(data, "hparam/acc", run="hp") == ([0], [pytest.approx(0.9)])
    h = data.histograms["weights/fc"]
    assert h.steps.tolist() == [0, 1, 2] and h.num.tolist() == [10.0] * 3 and h.sum.tolist() == [45.0, 55.0, 65.0]
    image, = data.images["maps/x"]
    assert (image.width, image.height) == (5, 4) and image.encoded.startswith(b"\x89PNG")
    assert data.texts == {"notes/text_summary": [(0, "hello")]}  # torch appends /text_summary
    assert data.hparams == {"lr": 0.1, "bs": 32.0}
    assert data.problems == []


def test_the_appended_evaluation_check_judges_each_tag_once_not_each_record(tmp_path, monkeypatch):
    """A 1M-scalar file took 11 s in this check when every record's tag was tokenised (16 s for the whole
    diagnosis); the tags are few, so the check is asked once per tag and the rest is numpy."""
    from report_gen.readers.events import merge

    calls = []
    real = merge.is_evaluation_series
    monkeypatch.setattr(merge, "is_evaluation_series", lambda tag, sub="": calls.append(tag) or real(tag, sub))
    recs = [make_version_event()] + [make_scalar_event(tag, i, 1.0 / (i + 1)) for i in range(2000)
                                     for tag in ("train/loss", "val/loss", "lr")]
    write_records(tmp_path / "events.out.tfevents.1", recs)
    data = read_events([(str(tmp_path / "events.out.tfevents.1"), "")])
    assert len(data.scalars) == 6000
    assert sorted(calls) == ["lr", "train/loss", "val/loss"]
