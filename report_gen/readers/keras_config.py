"""The model config a Keras TensorBoard callback logs -> the shape of each layer's kernel, so a kernel
histogram (which carries no shape) gets its fan-in.

Where it comes from
    `keras.callbacks.TensorBoard(write_graph=True)` (its default) writes, in the `train/` run folder, one
    summary value tagged `keras` with plugin `graph_keras_model`: a string tensor holding `model.to_json()`.
    Keras 3 and tf-keras (Keras 2) both give, per layer, `class_name`, `config` (`name`, `units` /
    `filters`, `kernel_size`, `data_format`, `groups`) and `build_config.input_shape` (`[null, 16]`);
    tf-keras' first layer also has `config.batch_input_shape`, Keras 3's `InputLayer` `config.batch_shape`.
    A layer without `build_config` (older tf-keras) takes the output of the layer before it in a
    Sequential model, for the layers whose output width is known from their config (Dense, Conv,
    InputLayer; shape-preserving layers pass it on).

What comes out
    Kernel shapes in torch's layout, `(out, in, *kernel)`, so fan-in and fan-out follow as
    `torch.nn.init._calculate_fan_in_and_fan_out` computes them (facts/init_scale.py):
    * `Dense`: Keras kernel `(in, units)` -> `(units, in)`, in = the input shape's last dimension;
    * `Conv1D/2D/3D`: Keras kernel `kernel_size + (in / groups, filters)` -> `(filters, in / groups,
      *kernel_size)`, in = the channel dimension of the input (last for `channels_last`, Keras' default,
      second for `channels_first`).
    Other layers (embeddings, recurrent, depthwise, transposed convolutions) are left out. The layer type
    is the config's `class_name` (what the layer computes); nothing is decided from a layer's or an
    initializer's own name, and nothing in the JSON is ever evaluated or imported (json.loads only).

    A kernel histogram is mapped to its layer by structure: Keras 3 names it `<model>/<layer>/kernel/
    histogram`, tf-keras `<layer>/kernel_0/histogram`; the path component before `kernel` is the layer's
    `name`. A name found twice in the config (nested models) is ambiguous and left out.

Hostile or malformed configs
    A config above `MAX_CONFIG_BYTES`, one that is not a JSON object (or nests deeper than Python's parser
    allows) gives no shapes and one info `Problem` naming the file; the rest of the log is read as before.
    A layer whose dimensions are not positive integers below `MAX_DIM` (null, floats, booleans, huge
    numbers) gives no kernel shape; the other layers still do.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from report_gen.core import Problem, ProblemKind

TAG = "keras"
PLUGIN = "graph_keras_model"
MAX_CONFIG_BYTES = 8 << 20  # a ResNet-152 functional config is about 0.5 MB
MAX_DIM = 1 << 31

_DENSE = {"Dense"}
_CONV = {"Conv1D": 1, "Conv2D": 2, "Conv3D": 3, "Convolution1D": 1, "Convolution2D": 2, "Convolution3D": 3}
# layers whose output has the shape of their input (only used to chain shapes without build_config)
_SAME_SHAPE = {"Activation", "Dropout", "BatchNormalization", "LayerNormalization", "ReLU", "LeakyReLU", "ELU",
               "Softmax", "GaussianNoise", "GaussianDropout", "AlphaDropout", "SpatialDropout1D", "SpatialDropout2D",
               "SpatialDropout3D", "UnitNormalization", "GroupNormalization", "PReLU"}


class ConfigError(ValueError):
    """The logged config cannot give shapes (the message says why)."""


def kernel_shapes_of(raw: bytes | str) -> dict[str, tuple[int, ...]]:
    """layer name -> kernel shape in torch's layout, from one logged config; raises ConfigError.

    A name that two layers share is left out (its histogram could be either's).
    """
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{len(raw)} bytes, above the {MAX_CONFIG_BYTES}-byte limit")
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"not valid JSON ({type(e).__name__})") from None
    if not isinstance(config, dict):
        raise ConfigError("not a JSON object")
    found: dict[str, list[tuple[int, ...] | None]] = {}
    _walk(config, found, depth=0)
    return {name: shapes[0] for name, shapes in found.items() if len(shapes) == 1 and shapes[0] is not None}


def _walk(model: Mapping[str, Any], found: dict[str, list], depth: int) -> None:
    """Collect the kernels of a model's layers (and of the models nested in it)."""
    if depth > 32:
        raise ConfigError("nested more than 32 models deep")
    layers = _get(model, "config", "layers")
    if not isinstance(layers, list):
        return
    previous: list | None = None  # output shape of the layer before, for Sequential chaining
    for layer in layers:
        if not isinstance(layer, dict):
            previous = None
            continue
        cls, cfg = layer.get("class_name"), layer.get("config")
        if not isinstance(cfg, dict):
            previous = None
            continue
        if isinstance(cfg.get("layers"), list):  # a nested model
            _walk(layer, found, depth + 1)
            previous = None
            continue
        stated = [v for v in (_get(layer, "build_config", "input_shape"), cfg.get("batch_input_shape"),
                              cfg.get("batch_shape")) if v is not None]
        # the shape the layer states (a bogus one stays unknown), else the output of the layer before
        in_shape = _shape(stated[0]) if stated else previous
        kernel, previous = _kernel(cls, cfg, in_shape)
        name = cfg.get("name")
        if isinstance(name, str) and (cls in _DENSE or cls in _CONV):
            found.setdefault(name, []).append(kernel)


def _kernel(cls: Any, cfg: Mapping[str, Any], in_shape: list | None) -> tuple[tuple[int, ...] | None, list | None]:
    """(kernel shape in torch's layout or None, output shape or None) of one layer."""
    if cls == "InputLayer":
        return None, in_shape
    if cls in _SAME_SHAPE:
        return None, in_shape
    if cls in _DENSE:
        units = _dim(cfg.get("units"))
        n_in = _dim(in_shape[-1]) if in_shape else None
        out = None if in_shape is None or units is None else [*in_shape[:-1], units]
        return ((units, n_in) if units and n_in else None), out
    if cls in _CONV:
        rank = _CONV[cls]
        filters = _dim(cfg.get("filters"))
        size = cfg.get("kernel_size")
        size = [size] * rank if isinstance(size, int) and not isinstance(size, bool) else size
        ks = [_dim(k) for k in size] if isinstance(size, list) and len(size) == rank else None
        groups = _dim(cfg.get("groups", 1))
        first = cfg.get("data_format") == "channels_first"
        channel = 1 if first else -1
        n_in = _dim(in_shape[channel]) if in_shape and len(in_shape) == rank + 2 else None
        out = None
        if in_shape is not None and len(in_shape) == rank + 2 and filters:
            out = [in_shape[0], filters, *[None] * rank] if first else [in_shape[0], *[None] * rank, filters]
        if not filters or not groups or not n_in or not ks or not all(ks) or n_in % groups:
            return None, out
        return (filters, n_in // groups, *ks), out
    return None, None


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _dim(v: Any) -> int | None:
    """A positive integer dimension below MAX_DIM, else None (unknown: null, bool, float, huge)."""
    if isinstance(v, int) and not isinstance(v, bool) and 0 < v < MAX_DIM:
        return v
    return None


def _shape(v: Any) -> list | None:
    """A shape list (`[null, 16]`): dimensions are known ints or None; anything else (several inputs) is None."""
    if not isinstance(v, list) or not v or len(v) > 16:
        return None
    if not all(d is None or _dim(d) is not None for d in v):
        return None
    return list(v)


def _layer_of(key: str) -> str | None:
    """The layer name of a kernel histogram key (`train/sequential/dense/kernel/histogram`,
    `train/dense/kernel_0/histogram`), else None."""
    parts = key.split("/")
    if parts and parts[-1] == "histogram":
        parts = parts[:-1]
    if len(parts) < 2:
        return None
    last = parts[-1]
    if last != "kernel" and not (last.startswith("kernel_") and last[7:].isdigit()):
        return None
    return parts[-2]


def histogram_shapes(configs: Sequence[tuple[str, bytes]], histogram_keys: Iterable[str]
                     ) -> tuple[dict[str, tuple[int, ...]], list[Problem]]:
    """(histogram key -> kernel shape in torch's layout, problems) from the configs a run logged
    (`(file, raw JSON)` in merge order; a later one wins for the same layer name, as a later file's
    histograms do)."""
    problems: list[Problem] = []
    layers: dict[str, tuple[int, ...]] = {}
    for path, raw in configs:
        try:
            layers.update(kernel_shapes_of(raw))
        except ConfigError as e:
            kind = ProblemKind.TOO_LARGE if len(raw) > MAX_CONFIG_BYTES else ProblemKind.BAD_JSON
            problems.append(Problem(path, kind, f"{path}: the Keras model config (tag '{TAG}') is {e}; "
                                                "layer shapes not read", severity="info"))
    if not layers:
        return {}, problems
    out = {}
    for key in histogram_keys:
        layer = _layer_of(key)
        if layer is not None and layer in layers:
            out[key] = layers[layer]
    return out, problems
