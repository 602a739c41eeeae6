"""The Keras model config the TensorBoard callback logs (tag `keras`, plugin `graph_keras_model`) -> kernel
shapes (readers/keras_config.py). The configs are the ones Keras 3 and tf-keras wrote into the committed
real fixtures (tests/fixtures/real/make_keras.py), read here with tensorboard's own protos."""
import copy
import json

import numpy as np
import pytest
from tensorboard.compat.proto import event_pb2

from builders import realfix
from builders.event_builders import (make_scalar_event, make_tensor_event, make_tensor_hist_event, make_text_event,
                                     make_version_event, raw_tensor, write_records)
from report_gen.readers import keras_config
from report_gen.readers.events.read import read_events
from report_gen.readers.signals import build_signals
from report_gen.readers.tfrecord import RecordReader

# Dense(32) on 16 inputs, Dense(32), Dense(2): torch layout (out, in)
MLP = {"dense": (32, 16), "dense_1": (32, 32), "dense_2": (2, 32)}


def logged_config(name: str) -> str:
    """The model JSON Keras logged in a fixture's train/ event file."""
    [path] = (realfix.case("keras", name) / "logs" / "train").glob("*tfevents*")
    reader = RecordReader(str(path))
    for batch in reader.batches():
        for start, length in zip(batch.starts.tolist(), batch.lengths.tolist()):
            event = event_pb2.Event.FromString(batch.buffer[start:start + length])
            for value in event.summary.value:
                if value.tag == "keras":
                    assert value.metadata.plugin_data.plugin_name == "graph_keras_model"
                    return value.tensor.string_val[0].decode()
    raise AssertionError(f"no keras config in {path}")


def keras_run(tmp_path, config, *, extra=()):
    """A train/ event file holding `config` (str or bytes) under the `keras` tag, a loss and one kernel histogram."""
    tensor = raw_tensor("DT_STRING", [], string_val=[config if isinstance(config, bytes) else config.encode()])
    buckets = np.column_stack([np.linspace(-1, 0.9, 20), np.linspace(-0.9, 1, 20), np.full(20, 25.0)])
    write_records(tmp_path / "train" / "events.out.tfevents.1.host", [
        make_version_event(), make_tensor_event("keras", 0, tensor, plugin="graph_keras_model"), *extra,
        make_scalar_event("epoch_loss", 0, 0.7), make_tensor_hist_event("sequential/dense/kernel/histogram", 0, buckets)])
    return read_events([(str(tmp_path / "train" / "events.out.tfevents.1.host"), "train")])


def test_keras3_config_gives_each_dense_kernel_in_torch_layout():
    config = logged_config("wide_init")
    assert json.loads(config)["config"]["layers"][1]["build_config"] == {"input_shape": [None, 16]}
    assert keras_config.kernel_shapes_of(config) == MLP


def test_tf_keras_config_gives_the_same_shapes():
    config = logged_config("tf_keras_histograms_healthy")
    assert "batch_input_shape" in json.loads(config)["config"]["layers"][1]["config"]  # the Keras 2 dialect
    assert keras_config.kernel_shapes_of(config) == MLP


def test_without_build_config_shapes_chain_from_batch_input_shape_through_the_sequential():
    """Older tf-keras wrote no build_config: the first layer's batch_input_shape, then each Dense's units."""
    config = json.loads(logged_config("tf_keras_histograms_healthy"))
    for layer in config["config"]["layers"]:
        layer.pop("build_config", None)
    config["config"]["layers"].insert(2, {"class_name": "Dropout", "config": {"name": "dropout", "rate": 0.1}})
    assert keras_config.kernel_shapes_of(json.dumps(config)) == MLP


@pytest.mark.parametrize("data_format, input_shape", [(None, [None, 8, 8, 3]), ("channels_last", [None, 8, 8, 3]),
                                                       ("channels_first", [None, 3, 8, 8])])
def test_conv_kernels_are_filters_in_then_kernel_size(data_format, input_shape):
    config = json.loads(logged_config("wide_init"))
    layer = config["config"]["layers"][1]
    layer["class_name"] = "Conv2D"
    layer["config"].update(filters=6, kernel_size=[3, 5], data_format=data_format)
    layer["build_config"]["input_shape"] = input_shape
    conv1d = copy.deepcopy(layer)
    conv1d["class_name"] = "Conv1D"
    conv1d["config"].update(name="conv1d", filters=4, kernel_size=[7], data_format=None, groups=2)
    conv1d["build_config"]["input_shape"] = [None, 50, 8]
    config["config"]["layers"].append(conv1d)
    shapes = keras_config.kernel_shapes_of(json.dumps(config))
    assert shapes["dense"] == (6, 3, 3, 5)  # fan-in 3 x 3 x 5 = 45, as torch computes it
    assert shapes["conv1d"] == (4, 4, 7)  # 8 channels in 2 groups


def test_unusable_dimensions_leave_that_layer_out_and_keep_the_others():
    config = json.loads(logged_config("wide_init"))
    layers = config["config"]["layers"]
    layers[1]["config"]["units"] = True
    layers[2]["config"]["units"] = 2 ** 40
    layers[3]["build_config"]["input_shape"] = [None, -3]
    assert keras_config.kernel_shapes_of(json.dumps(config)) == {}
    layers[2]["config"]["units"] = 32
    assert keras_config.kernel_shapes_of(json.dumps(config)) == {"dense_1": (32, 32)}


def test_a_layer_name_found_twice_is_ambiguous_and_left_out():
    config = json.loads(logged_config("wide_init"))
    inner = copy.deepcopy(config)
    config["config"]["layers"].append(inner)  # a nested model whose layers have the same names
    assert keras_config.kernel_shapes_of(json.dumps(config)) == {}


@pytest.mark.parametrize("name, key, shape", [
    ("wide_init", "train/sequential_2/dense_1/kernel/histogram", (32, 32)),
    ("histograms_healthy", "train/sequential/dense/kernel/histogram", (32, 16)),
    ("tf_keras_histograms_healthy", "train/dense_2/kernel_0/histogram", (2, 32)),
])
def test_the_run_log_maps_kernel_histograms_to_their_shapes(name, key, shape):
    folder = realfix.case("keras", name) / "logs"
    files = [(str(p), p.parent.name) for p in sorted(folder.glob("*/*tfevents*"))]
    log = read_events(files)
    assert set(log.weight_shapes) == {k for k in log.histograms if "/kernel" in k}
    assert log.weight_shapes[key] == shape
    signals = build_signals(log)
    assert set(signals.weight_shapes) <= set(signals.weight_hist) and len(signals.weight_shapes) == 3


def test_a_run_without_histograms_keeps_no_shapes():
    folder = realfix.case("keras", "defaults_healthy") / "logs"
    log = read_events([(str(p), p.parent.name) for p in sorted(folder.glob("*/*tfevents*"))])
    assert log.weight_shapes == {}


@pytest.mark.parametrize("config, why", [
    ("{not json", "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
    ("[" * 200_000 + "]" * 200_000, "not valid JSON"),  # deeper than the parser's recursion limit
    ('["a", "list"]', "not a JSON object"),
])
def test_a_malformed_config_is_a_notice_and_the_rest_of_the_file_is_read(tmp_path, config, why):
    log = keras_run(tmp_path, config)
    assert log.weight_shapes == {}
    assert len(log.histograms) == 1 and len(log.scalars) == 1
    [p] = log.problems
    assert p.kind == "bad-json" and p.severity == "info" and why in p.message
    assert p.file.endswith("events.out.tfevents.1.host") and p.file in p.message


def test_a_config_above_the_size_limit_is_not_parsed(tmp_path):
    valid = logged_config("wide_init")
    huge = valid + " " * (keras_config.MAX_CONFIG_BYTES + 1 - len(valid))  # valid JSON, just too big
    log = keras_run(tmp_path, huge)
    assert log.weight_shapes == {} and len(log.histograms) == 1
    [p] = log.problems
    assert p.kind == "too-large" and p.severity == "info" and str(keras_config.MAX_CONFIG_BYTES) in p.message


def test_a_valid_config_maps_the_histogram_of_the_synthetic_run(tmp_path):
    """The control for the two tests above: the same file with the real config gives the shape."""
    log = keras_run(tmp_path, logged_config("histograms_healthy"))
    assert log.problems == [] and log.weight_shapes == {"train/sequential/dense/kernel/histogram": (32, 16)}


def test_a_config_tensor_of_two_strings_is_ignored(tmp_path):
    tensor = raw_tensor("DT_STRING", [2], string_val=[b"{}", b"{}"])
    log = keras_run(tmp_path, "{}", extra=[make_tensor_event("keras", 0, tensor, plugin="graph_keras_model"),
                                           make_text_event("notes", 0, "hello")])
    assert log.weight_shapes == {} and [p.kind for p in log.problems] == []


def test_merging_logs_keeps_the_shapes_of_the_histograms_kept(tmp_path):
    from report_gen.readers.registry import merge_logs

    shaped = keras_run(tmp_path / "a", logged_config("histograms_healthy"))
    other = keras_run(tmp_path / "b", "{}")  # the same histogram key, no shapes
    for logs in ([shaped, other], [other, shaped]):  # whichever copy of the histogram is kept
        assert merge_logs(logs).weight_shapes == {"train/sequential/dense/kernel/histogram": (32, 16)}
