"""Post-hoc activation probe: build the model, load a checkpoint, run one batch, keep statistics.

The probe registers forward hooks on activation modules, Conv/Linear layers and
nn.MultiheadAttention, runs one forward pass in eval mode under torch.no_grad, and reduces every
captured output to an ActivationStats / AttentionStats inside the hook, so memory stays bounded by
one layer output at a time. Hooks and patches are removed in a `finally`, also when forward raises.

Only modules are seen: functional activations (`F.relu(x)`) inside a forward are invisible.
A module called several times in one forward (torchvision's BasicBlock reuses its `relu`) is
reported once per call: `layer1.0.relu`, then `layer1.0.relu#2`.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import math
import os
import re
import sys
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from report_gen.core import InputError, Problem, ProblemKind
from report_gen.readers.pickle_guard import scan_torch_file
from report_gen.facts.activations import (ProbeResult, activation_kind, activation_stats,
                                          attention_stats, even_indices)

_STRIPPABLE_PREFIXES = ("module.", "model.")
_MAX_SYNTHETIC_ELEMENTS = 1 << 26  # refuse --probe-shape batches above ~256 MB of float32


def _one_line(exc: BaseException) -> str:
    """`Type: message` on one line, shortened for an error message."""
    text = re.sub(r"\s+", " ", f"{type(exc).__name__}: {exc}").strip()
    return text if len(text) <= 300 else text[:297] + "..."


# --------------------------------------------------------------------------- model factory

def load_factory(spec: str, kwargs: dict | None = None) -> nn.Module:
    """Build a model from "pkg.module:factory" or "path/to/file.py:factory" called with kwargs.

    Never downloads weights: a factory with a `weights` parameter is called with weights=None unless
    given, and non-empty `weights` or a true `pretrained` kwarg is refused. Raises InputError (one
    line) when the spec is malformed, cannot be imported, or the call fails or returns no nn.Module.
    """
    return resolve_factory(spec, kwargs)()


def resolve_factory(spec: str, kwargs: dict | None = None) -> Callable[[], nn.Module]:
    """Import the factory ONCE and return a zero-argument builder (the model file is executed once,
    however many checkpoints are probed)."""
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise InputError(f"--model {spec}: expected MODULE:FACTORY or path/to/file.py:FACTORY")
    factory = getattr(_import_module(spec, module_part), attr, None)
    if not callable(factory):
        raise InputError(f"--model {spec}: {module_part} has no callable {attr!r}")
    call_kwargs = _no_download_kwargs(spec, factory, dict(kwargs or {}))
    return lambda: _build(spec, factory, call_kwargs)


def _build(spec: str, factory: Callable, call_kwargs: dict) -> nn.Module:
    try:
        model = factory(**call_kwargs)
    except Exception as exc:  # any failure of user code becomes one line
        raise InputError(f"--model {spec}: calling the factory failed: {_one_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise InputError(f"--model {spec}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _import_module(spec: str, module_part: str) -> Any:
    """Import a dotted module or execute a .py file (its folder temporarily on sys.path)."""
    try:
        if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
            return _import_file(module_part)
        return importlib.import_module(module_part)
    except InputError:
        raise
    except Exception as exc:  # ImportError, SyntaxError, errors raised while importing
        raise InputError(f"--model {spec}: cannot import {module_part}: {_one_line(exc)}") from exc


def _import_file(path: str) -> Any:
    if not os.path.isfile(path):
        raise InputError(f"--model {path}: file not found")
    name = "_report_gen_model_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(folder)
    return module


def _no_download_kwargs(spec: str, factory: Callable, kwargs: dict) -> dict:
    """Force weights=None where the factory takes it; refuse kwargs that would fetch weights."""
    if kwargs.get("weights") is not None or kwargs.get("pretrained"):
        raise InputError(f"--model {spec}: pretrained weights are never downloaded; "
                         "drop weights/pretrained from --model-kwargs (the checkpoint supplies the weights)")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins / C extensions without a signature
        return kwargs
    if "weights" in params:
        kwargs["weights"] = None
    return kwargs


# --------------------------------------------------------------------------- probe input

def load_probe_input(path: str | None, shape: str | None, *, seed: int = 0) -> tuple[Any, str]:
    """The probe batch and a one-line description of it.

    path: a tensor saved with torch.save (read with weights_only=True), a dict of tensors (passed as
    keyword arguments when the model's forward accepts them, else its first tensor), a list/tuple of
    tensors (positional arguments), or a .npy array. shape: "8,3,32,32" gives a seeded
    standard-normal batch described as synthetic. Floating inputs become float32.
    Raises InputError unless exactly one of path/shape is given and it can be used.
    """
    if (path is None) == (shape is None):
        raise InputError("probe input: give exactly one of --probe FILE or --probe-shape N,C,H,W")
    if shape is not None:
        return _synthetic_input(shape, seed)
    return _file_input(path)


def _synthetic_input(shape: str, seed: int) -> tuple[torch.Tensor, str]:
    parts = [p for p in re.split(r"[,x×\s]+", shape.strip()) if p]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise InputError(f"--probe-shape {shape!r}: expected positive integers such as 8,3,32,32")
    dims = [int(p) for p in parts]
    if int(np.prod(dims)) > _MAX_SYNTHETIC_ELEMENTS:
        raise InputError(f"--probe-shape {shape!r}: {int(np.prod(dims))} elements is too large for a probe batch")
    generator = torch.Generator().manual_seed(seed)
    batch = torch.randn(*dims, generator=generator)
    return batch, f"synthetic standard-normal batch {'×'.join(parts)} (seed {seed})"


def _file_input(path: str) -> tuple[Any, str]:
    if not os.path.isfile(path):
        raise InputError(f"{path}: probe input file not found")
    try:
        if path.endswith(".npy"):
            obj: Any = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            scan_torch_file(path)  # a hostile pickle is refused before torch's unpickler runs
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unsafe pickle, corrupt zip, wrong format...
        raise InputError(f"{path}: cannot read probe input: {_one_line(exc)}") from exc
    inputs = _as_model_input(path, obj)
    return inputs, f"{os.path.basename(path)}: {_describe(inputs)}"


def _as_model_input(path: str, obj: Any) -> Any:
    """Tensor, dict of tensors or tuple of tensors with floating values cast to float32."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, dict) and any(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): _as_model_input(path, v) if isinstance(v, torch.Tensor) else v for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(v, torch.Tensor) for v in obj):
        return tuple(_as_model_input(path, v) for v in obj)
    raise InputError(f"{path}: probe input holds {type(obj).__name__}, expected a tensor, "
                     "a dict of tensors or a list of tensors")


def _describe(inputs: Any) -> str:
    if isinstance(inputs, torch.Tensor):
        return f"tensor {'×'.join(map(str, inputs.shape))} {str(inputs.dtype).removeprefix('torch.')}"
    if isinstance(inputs, dict):
        return "dict " + ", ".join(f"{k}={_describe(v)}" for k, v in inputs.items() if isinstance(v, torch.Tensor))
    return "tuple " + ", ".join(_describe(v) for v in inputs)


# --------------------------------------------------------------------------- state dict

def apply_state_dict(model: nn.Module, state_dict: dict[str, Any]) -> dict[str, list[str]]:
    """Load tensors non-strictly; returns {"missing": [...], "unexpected": [...], "mismatched": [...]}.

    "module."/"model." prefixes (DataParallel, Lightning) are stripped when that makes more keys
    match the model. Tensors whose shape differs from the model's are not loaded and are listed under
    "mismatched" (they also count as missing); non-tensor entries are ignored.
    """
    expected = model.state_dict()
    tensors = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    tensors = _strip_prefixes(tensors, set(expected))
    mismatched = sorted(k for k, v in tensors.items()
                        if k in expected and tuple(v.shape) != tuple(expected[k].shape))
    result = model.load_state_dict({k: v for k, v in tensors.items() if k not in mismatched}, strict=False)
    return {"missing": sorted(result.missing_keys), "unexpected": sorted(result.unexpected_keys),
            "mismatched": mismatched}


def _strip_prefixes(tensors: dict[str, Any], expected: set[str]) -> dict[str, Any]:
    """Repeatedly strip the known prefix that most increases the overlap with the model's keys."""
    def overlap(d: dict[str, Any]) -> int:
        return len(expected.intersection(d))

    while True:
        candidates = [{(k[len(p):] if k.startswith(p) else k): v for k, v in tensors.items()}
                      for p in _STRIPPABLE_PREFIXES]
        best = max(candidates, key=overlap)
        if overlap(best) <= overlap(tensors):
            return tensors
        tensors = best


# --------------------------------------------------------------------------- probing

def _probed(module: nn.Module) -> bool:
    """Modules captured by default: activations, Conv/Linear, multi-head attention."""
    return isinstance(module, nn.MultiheadAttention) or activation_kind(type(module).__name__) != "other"


def _select_modules(model: nn.Module, layers: list[str] | None) -> dict[str, nn.Module]:
    named = dict(model.named_modules())
    if layers is None:
        return {name: m for name, m in named.items() if name and _probed(m)}
    unknown = [name for name in layers if name not in named]
    if unknown:
        raise InputError(f"probe: layer(s) not in the model: {', '.join(unknown[:5])}")
    return {name: named[name] for name in layers}


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        return next((v for v in value if isinstance(v, torch.Tensor)), None)
    if isinstance(value, dict):
        return next((v for v in value.values() if isinstance(v, torch.Tensor)), None)
    return None


class _Recorder:
    """Forward hooks that reduce each output to statistics right away."""

    def __init__(self, max_maps: int) -> None:
        self.max_maps = max_maps
        self.result = ProbeResult()
        self._calls: Counter[str] = Counter()
        self._attention_calls: Counter[str] = Counter()
        self._seen: dict[int, weakref.ref] = {}  # attention tensors already recorded
        self.stack: list[str] = []  # modules whose forward is running (innermost last)

    def hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def record(module: nn.Module, _args: Any, output: Any) -> None:
            self._calls[name] += 1
            key = name if self._calls[name] == 1 else f"{name}#{self._calls[name]}"
            if isinstance(module, nn.MultiheadAttention):
                self._record_attention(key, output)
            else:
                self._record_activation(key, type(module).__name__, _first_tensor(output))
        return record

    def _record_attention(self, key: str, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if isinstance(weights, torch.Tensor):
            # average_attn_weights=False is forced: a 3-d result comes from an unbatched query
            batched = weights.unsqueeze(0) if weights.ndim == 3 else weights
            self.record_probabilities(key, batched, counted=False)

    def record_probabilities(self, name: str, probs: torch.Tensor, *, counted: bool = True) -> None:
        """Attention probabilities (N, heads, L, S) captured in `name`; the same tensor seen again by an
        enclosing module (HF attention blocks pass the weights up) is recorded once, innermost."""
        seen = self._seen.get(id(probs))
        if seen is not None and seen() is probs:  # the very tensor, still alive (ids of dead ones are reused)
            return
        self._seen[id(probs)] = weakref.ref(probs)
        key = name
        if counted:
            self._attention_calls[name] += 1
            calls = self._attention_calls[name]
            key = name if calls == 1 else f"{name}#{calls}"
        self.result.attention[key] = attention_stats(key, probs)

    def enter(self, name: str) -> Callable[..., None]:
        def push(_module: nn.Module, _args: Any) -> None:
            self.stack.append(name)
        return push

    def leave(self, name: str) -> Callable[..., None]:
        def pop(_module: nn.Module, _args: Any, output: Any) -> None:
            if self.stack and self.stack[-1] == name:
                self.stack.pop()
            for item in output[1:] if isinstance(output, tuple) else ():
                if _looks_like_attention(item):
                    self.record_probabilities(name, item)
        return pop

    def _record_activation(self, key: str, module_type: str, output: torch.Tensor | None) -> None:
        if output is not None and output.ndim >= 2 and output.numel() and output.is_floating_point():
            self.result.activations[key] = activation_stats(key, module_type, output, max_maps=self.max_maps)


def _looks_like_attention(value: Any) -> bool:
    """A (N, heads, L, S) float tensor of probabilities: non-negative, rows summing to 1 (HF eager
    attention modules return them beside their output)."""
    if not isinstance(value, torch.Tensor) or value.ndim != 4 or not value.is_floating_point() or not value.numel():
        return False
    rows = value.detach().reshape(-1, value.shape[-1])[:: max(1, value.numel() // value.shape[-1] // 64)]
    rows = rows.float()
    return bool((rows >= 0).all()) and bool(torch.allclose(rows.sum(-1), torch.ones(len(rows)), atol=1e-3))


_MAX_ATTENTION_ELEMENTS = 1 << 24  # probabilities computed for at most this many (N, heads, row, key) cells
_MAX_ATTENTION_ROWS = 256


def _sdpa_probabilities(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """softmax(q k^T * scale + mask) of one F.scaled_dot_product_attention call, as torch defines it
    (boolean mask: True takes part; is_causal: lower-triangular; enable_gqa: key heads repeated), on at
    most 256 evenly spaced query rows and 2**24 cells."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    bound = dict(zip(names, args))
    bound.update({k: v for k, v in kwargs.items() if k in names})
    q, k = bound.get("query"), bound.get("key")
    if not isinstance(q, torch.Tensor) or not isinstance(k, torch.Tensor) or q.ndim < 3 or k.ndim != q.ndim:
        return None
    q, k = q.detach().float(), k.detach().float()
    if q.ndim == 3:
        q, k = q.unsqueeze(1), k.unsqueeze(1)
    q, k = q.reshape(-1, *q.shape[-3:]), k.reshape(-1, *k.shape[-3:])  # (N, H, L, E)
    if bound.get("enable_gqa") and k.shape[1] != q.shape[1] and q.shape[1] % k.shape[1] == 0:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    length, keys = q.shape[-2], k.shape[-2]
    rows = torch.from_numpy(even_indices(length, _MAX_ATTENTION_ROWS))
    batch = max(1, min(q.shape[0], _MAX_ATTENTION_ELEMENTS // max(q.shape[1] * len(rows) * keys, 1)))
    q, k = q[:batch, :, rows], k[:batch]
    scale = bound.get("scale") or 1.0 / math.sqrt(q.shape[-1])
    logits = (q @ k.transpose(-2, -1)) * scale
    mask = bound.get("attn_mask")
    if isinstance(mask, torch.Tensor):
        mask = mask.detach()
        mask = mask.reshape(-1, *mask.shape[-3:]) if mask.ndim >= 3 else mask
        mask = mask[..., rows, :] if mask.shape[-2] == length else mask
        if mask.ndim == 4 and mask.shape[0] > batch:
            mask = mask[:batch]
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask.float()
    if bound.get("is_causal"):
        causal = torch.ones(length, keys, dtype=torch.bool).tril()[rows]
        logits = logits.masked_fill(~causal, float("-inf"))
    return torch.softmax(logits, dim=-1)


@contextlib.contextmanager
def _sdpa_captured(recorder: _Recorder) -> Iterator[None]:
    """F.scaled_dot_product_attention records its probabilities in the innermost running module while
    the probe runs; the original is always restored. Code that bound the function to another name
    before the probe (`from torch.nn.functional import scaled_dot_product_attention`) is not seen."""
    original = F.scaled_dot_product_attention

    def scaled_dot_product_attention(*args: Any, **kwargs: Any) -> Any:
        try:
            probs = _sdpa_probabilities(args, kwargs)
            if probs is not None:
                recorder.record_probabilities(recorder.stack[-1] if recorder.stack else "scaled_dot_product_attention",
                                              probs)
        except Exception:  # noqa: BLE001 - capturing must never change what the model computes
            pass
        return original(*args, **kwargs)

    F.scaled_dot_product_attention = scaled_dot_product_attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def _force_attention_weights(mha: nn.MultiheadAttention) -> None:
    """Make this instance return per-head weights whatever its caller asked for."""
    original = mha.forward
    signature = inspect.signature(original)

    def forward(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.arguments["need_weights"] = True
        bound.arguments["average_attn_weights"] = False
        return original(*bound.args, **bound.kwargs)

    mha.forward = forward  # type: ignore[method-assign]


@contextlib.contextmanager
def _hooked(model: nn.Module, modules: dict[str, nn.Module], recorder: _Recorder) -> Iterator[None]:
    """Hooks, attention patches, eval mode and no MHA fast path; all undone on exit, even on error.

    Attention is captured whatever computes it: nn.MultiheadAttention (weights forced), any module
    returning probabilities beside its output (HF eager attention), and F.scaled_dot_product_attention
    (patched for the forward pass, named after the module that calls it).
    """
    handles = []
    every = [(name, m) for name, m in model.named_modules()]
    patched = [m for _, m in every if isinstance(m, nn.MultiheadAttention)]
    was_training = model.training
    mha_backend = getattr(torch.backends, "mha", None)
    fastpath = mha_backend.get_fastpath_enabled() if mha_backend else None
    try:
        if mha_backend:
            mha_backend.set_fastpath_enabled(False)  # the fused encoder path bypasses self_attn
        for m in patched:
            _force_attention_weights(m)
        handles = [m.register_forward_hook(recorder.hook(name)) for name, m in modules.items()]
        for name, m in every:
            handles.append(m.register_forward_pre_hook(recorder.enter(name or type(model).__name__)))
            handles.append(m.register_forward_hook(recorder.leave(name or type(model).__name__)))
        model.eval()
        with _sdpa_captured(recorder):
            yield
    finally:
        for handle in handles:
            handle.remove()
        for m in patched:
            m.__dict__.pop("forward", None)
        model.train(was_training)
        if mha_backend:
            mha_backend.set_fastpath_enabled(fastpath)


def _never_updated_batchnorms(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """BatchNorm layers still at their initial running statistics: no batch tracked, mean 0, var 1."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            and m.num_batches_tracked is not None and int(m.num_batches_tracked) == 0
            and not m.running_mean.any() and bool((m.running_var == 1).all())}


@contextlib.contextmanager
def _batch_statistics(norms: dict[str, nn.modules.batchnorm._BatchNorm]) -> Iterator[None]:
    """Run these BatchNorm layers in training mode, restoring their buffers and mode on exit.

    A fresh model (or a checkpoint without BN buffers) in eval mode normalises with mean 0 / var 1,
    which no real forward ever used and which makes whole channels look dead.
    """
    saved = {name: (m.training, [b.clone() for b in m.buffers()]) for name, m in norms.items()}
    try:
        for m in norms.values():
            m.train()
        yield
    finally:
        for name, m in norms.items():
            training, buffers = saved[name]
            for buffer, original in zip(m.buffers(), buffers):
                buffer.copy_(original)
            m.train(training)


def _forward(model: nn.Module, inputs: Any) -> Any:
    """Call the model with a tensor, a tuple (positional) or a dict (kwargs when accepted)."""
    if isinstance(inputs, tuple):
        return model(*inputs)
    if isinstance(inputs, dict):
        params = inspect.signature(model.forward).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        if takes_any or set(inputs) <= set(params):
            return model(**inputs)
        return model(_first_tensor(inputs))
    return model(inputs)


def probe(model: nn.Module, inputs: Any, *, layers: list[str] | None = None, max_maps: int = 4,
          description: str = "") -> ProbeResult:
    """Run `inputs` through `model` once (eval, no_grad) and return per-layer statistics.

    layers: module names from named_modules() to capture (default: every activation module,
    Conv/Linear layer and nn.MultiheadAttention). max_maps: channel maps of sample 0 kept per 4-d
    output. description: copied into the result (e.g. from load_probe_input).
    BatchNorm layers whose running statistics were never updated normalise with the batch's own
    statistics (batch size > 1; buffers restored afterwards) and are listed in
    `batchnorm_batch_stats`. Raises InputError for an unknown layer name or when the forward pass
    fails (hooks removed).
    """
    recorder = _Recorder(max_maps)
    modules = _select_modules(model, layers)
    first = _first_tensor(inputs) if not isinstance(inputs, torch.Tensor) else inputs
    fresh_norms = _never_updated_batchnorms(model) if first is not None and first.ndim and len(first) > 1 else {}
    with _hooked(model, modules, recorder), _batch_statistics(fresh_norms):
        try:
            with torch.no_grad():
                _forward(model, inputs)
        except Exception as exc:  # a shape mismatch between probe input and model, mostly
            where = description or "the probe input"
            raise InputError(f"probe: forward pass of {type(model).__name__} failed on {where}: "
                             f"{_one_line(exc)}") from exc
    recorder.result.input_description = description
    recorder.result.batchnorm_batch_stats = sorted(fresh_norms)
    return recorder.result


def probe_series(model_factory: Callable[[], nn.Module],
                 checkpoints: list[tuple[int | None, dict[str, Any] | Callable[[], dict[str, Any]]]],
                 inputs: Any, *, max_checkpoints: int = 6, **kw: Any) -> list[tuple[int | None, ProbeResult]]:
    """Probe the same batch through an evenly spaced subset of checkpoints (first and last kept).

    checkpoints: (step, state_dict) pairs in training order; the state_dict may also be a
    zero-argument callable returning it, so only the chosen checkpoints are ever loaded.
    A fresh model from `model_factory` is used per checkpoint; each result carries its load_report.
    Extra keyword arguments go to probe().
    """
    results = []
    for index in even_indices(len(checkpoints), max_checkpoints):
        step, state = checkpoints[int(index)]
        model = model_factory()
        report = apply_state_dict(model, state() if callable(state) else state)
        result = probe(model, inputs, **kw)
        result.load_report = report
        results.append((step, result))
    return results


# --------------------------------------------------------------------------- one run

@dataclass
class ProbeOutcome:
    """What probing one run gives the engine: results per probed step, the run card's info, problems."""

    results: list[tuple[int | None, ProbeResult]]
    info: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)


def probe_run(checkpoints: list[Any], *, model: str, model_kwargs: dict[str, Any] | None = None,
              probe_file: str | None = None, probe_shape: str | None = None,
              max_checkpoints: int = 6) -> ProbeOutcome:
    """Probe one run: import the factory once, then probe its checkpoints (or the initial weights).

    checkpoints: the run's ordered CheckpointData; only the evenly spaced subset probe_series picks is
    ever loaded. Raises InputError when the model cannot be built or the forward pass fails.
    """
    inputs, description = load_probe_input(probe_file, probe_shape)
    build = resolve_factory(model, model_kwargs)  # the model file is imported once
    initial = build()  # fails early, before any checkpoint is read
    if not checkpoints:
        return ProbeOutcome([(None, probe(initial, inputs, description=description))],
                            {"model": model, "input": description, "checkpoints": 0,
                             "note": "no checkpoint: the model's initial weights were probed"})
    states = [(c.step, lambda c=c: {n: c.load(n) for n in c.tensors}) for c in checkpoints]
    results = probe_series(build, states, inputs, max_checkpoints=max_checkpoints, description=description)
    load_report = results[-1][1].load_report if results else None
    info = {"model": model, "input": description, "checkpoints": len(results), "load_report": load_report}
    problems = []
    if load_report and (load_report.get("missing") or load_report.get("unexpected")):
        missing, unexpected = load_report.get("missing", []), load_report.get("unexpected", [])
        problems.append(Problem(file=checkpoints[-1].path, kind=ProblemKind.STATE_DICT_MISMATCH, severity="warning",
                                message=f"loading into {model}: {len(missing)} missing, {len(unexpected)} "
                                        f"unexpected keys (e.g. {(missing or unexpected)[:3]})"))
    return ProbeOutcome(results, info, problems)
