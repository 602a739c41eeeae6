"""Layer 3: a tree -> `CheckpointData`.

Find the model weights by structure, strip prefixes, split params from buffers, drop tensors whose data
cannot be read, pick metadata and the training step (in the file, else in its name), and hand the
optimizer state to `optimizer`.

Weights by structure, not by key name: the weights are the largest mapping of parameter names to
tensors anywhere in the saved object (a plain state_dict, one nested under any key at any depth up to
`_MAX_SEARCH_DEPTH`: `model`, `state_dict`, `model_state`, `net`, `nets/generator`, inside a list), or a
pickled or scripted module, that is not optimizer-shaped: an optimizer's `state_dict()` (`state` +
`param_groups`) is never searched, and a mapping whose every key is an optimizer-state name (Adam's
`exp_avg`/`exp_avg_sq`/`step`, SGD's `momentum_buffer`) is not a model. "Largest" counts tensors, then
their elements; on a tie the conventional keys (`_WEIGHT_KEYS`, in that order) win, then the first
found. The key path used (`model_state`, `nets/generator`, "" for the file itself) is
`CheckpointData.weights_at`, shown in the run card.
"""
from __future__ import annotations

import math
import os
import re
import reprlib
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from report_gen.core import Problem, ProblemKind, clamp_int64
from report_gen.readers.checkpoint.errors import CheckpointError, SavedTensor, clean, one_line
from report_gen.readers.checkpoint.optimizer import (OPTIMIZER_KEYS, find_optimizer_state, safe_optimizer_facts,
                                                     safe_optimizer_groups)
from report_gen.readers.checkpoint.tree import Leaf, TorchTree, as_mapping, is_leaf
from report_gen.readers.safe_unpickle import MAX_FREE_ELEMENTS, Placeholder, TensorRef
from report_gen.readers.types import BUFFER_SUFFIXES, CheckpointData, TensorInfo


_WEIGHT_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "network",
                "ema", "state_dict_ema", "model_ema")
_STEP_KEYS = ("global_step", "step", "iteration", "iter", "epoch")
_HPARAM_KEYS = ("hyper_parameters", "hparams", "args", "config", "cfg")
_STRIP_PREFIXES = ("module.", "model.", "_orig_mod.")


def _is_module_like(obj: Any) -> bool:
    return isinstance(obj, torch.nn.Module) or (isinstance(obj, Placeholder) and bool(obj.attributes))


def role_by_name(name: str, floating: bool) -> str:
    """"buffer" for BatchNorm statistics and non-float tensors (never trainable), else "param"."""
    return "param" if floating and not name.endswith(BUFFER_SUFFIXES) else "buffer"


def _is_floating(leaf: Leaf) -> bool:
    return leaf.dtype.is_floating_point or leaf.dtype.is_complex


_MAX_MODULE_DEPTH = 100


def _name_set(value: Any) -> set[str]:
    """A set of names from a pickled set/list (anything else: empty)."""
    if isinstance(value, (set, frozenset, list, tuple)):
        return {v for v in value if isinstance(v, str)}
    return set()


def _walk_module(obj: Any, prefix: str, out: dict[str, tuple[Leaf, str]], seen: set[int],
                 depth: int = 0) -> None:
    """Collect (leaf, role) by dotted name from a real or placeholder module tree."""
    if id(obj) in seen or depth > _MAX_MODULE_DEPTH:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.nn.Module):
        params = {n for n, _ in obj.named_parameters()}
        for name, value in obj.state_dict().items():
            out[prefix + name] = (value, "param" if name in params else "buffer")
        return
    attrs = obj.attributes
    if "_parameters" in attrs or "_modules" in attrs:
        skip = _name_set(attrs.get("_non_persistent_buffers_set"))
        for name, value in (as_mapping(attrs.get("_parameters")) or {}).items():
            if is_leaf(value):
                out[f"{prefix}{name}"] = (value, "param")
        for name, value in (as_mapping(attrs.get("_buffers")) or {}).items():
            if is_leaf(value) and name not in skip:
                out[f"{prefix}{name}"] = (value, "buffer")
        children = (as_mapping(attrs.get("_modules")) or {}).items()
    else:  # TorchScript objects and plain classes: tensors are attributes
        for name, value in attrs.items():
            if is_leaf(value):
                out[f"{prefix}{name}"] = (value, role_by_name(str(name), _is_floating(value)))
        children = ((n, v) for n, v in attrs.items() if isinstance(v, Placeholder))
    for name, child in children:
        if _is_module_like(child):
            _walk_module(child, f"{prefix}{name}.", out, seen, depth + 1)


def _is_state_dict(mapping: Mapping) -> bool:
    values = list(mapping.values())
    return bool(values) and all(isinstance(k, str) for k in mapping) and all(is_leaf(v) for v in values)


#: keys of an optimizer's per-parameter state: a mapping of only these is not a model
_OPTIMIZER_STATE_NAMES = frozenset({"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step", "momentum_buffer",
                                    "square_avg", "acc_delta", "sum", "grad_avg", "mu_product", "eta", "prev",
                                    "step_size", "ax", "exp_inf"})
_MAX_SEARCH_DEPTH = 6
_MAX_SEARCH_NODES = 20_000  # containers visited per file: a hostile tree cannot make the search quadratic


def _is_optimizer_shaped(mapping: Mapping) -> bool:
    keys = {str(k) for k in mapping}
    return {"state", "param_groups"} <= keys or (bool(keys) and keys <= _OPTIMIZER_STATE_NAMES)


def _as_weights(mapping: Mapping) -> dict[str, tuple[Leaf, str]]:
    return {k: (v, "param" if isinstance(v, TensorRef) and v.is_param else role_by_name(k, _is_floating(v)))
            for k, v in mapping.items()}


def _size(weights: dict[str, tuple[Leaf, str]]) -> tuple[int, int]:
    return len(weights), sum(math.prod(tuple(leaf.shape)) for leaf, _ in weights.values())


def _candidates(root: Any):
    """(key path, weights) of every model-shaped object in the tree, breadth first."""
    queue: list[tuple[Any, tuple[str, ...]]] = [(root, ())]
    seen: set[int] = set()
    visited = 0
    while queue and visited < _MAX_SEARCH_NODES:
        obj, path = queue.pop(0)
        if id(obj) in seen or len(path) > _MAX_SEARCH_DEPTH:
            continue
        seen.add(id(obj))
        visited += 1
        if _is_module_like(obj) and as_mapping(obj) is None:
            out: dict[str, tuple[Leaf, str]] = {}
            _walk_module(obj, "", out, set())
            if out:
                yield path, out
            continue
        mapping = as_mapping(obj)
        if mapping is not None:
            if _is_optimizer_shaped(mapping):
                continue
            if _is_state_dict(mapping):
                yield path, _as_weights(mapping)
                continue
            children = sorted(mapping.items(), key=lambda kv: _key_rank(kv[0]))
            queue.extend((v, (*path, str(k))) for k, v in children if not is_leaf(v))
        elif isinstance(obj, (list, tuple)):
            queue.extend((v, (*path, f"[{i}]")) for i, v in enumerate(obj[:64]) if not is_leaf(v))


def _key_rank(key: Any) -> int:
    return _WEIGHT_KEYS.index(key) if key in _WEIGHT_KEYS else len(_WEIGHT_KEYS)


def _find_weights(obj: Any) -> tuple[dict[str, tuple[Leaf, str]] | None, str]:
    """(name -> (leaf, role) of the model weights inside `obj`, the key path to them), or (None, "")."""
    best, best_path, best_size = None, "", (0, 0)
    for path, weights in _candidates(obj):
        size = _size(weights)
        if size > best_size:  # strictly larger: on a tie the earlier (conventional keys first) stays
            best, best_path, best_size = weights, "/".join(path), size
    return best, best_path


def strip_prefixes(names: Iterable[str]) -> dict[str, str]:
    """original -> stripped name, removing `module.` / `model.` / `_orig_mod.` shared by all names."""
    mapping = {n: n for n in names}
    changed = True
    while changed and mapping:
        changed = False
        for prefix in _STRIP_PREFIXES:
            if all(v.startswith(prefix) and len(v) > len(prefix) for v in mapping.values()):
                mapping = {k: v[len(prefix):] for k, v in mapping.items()}
                changed = True
    return mapping


def _plain(value: Any, depth: int = 0) -> Any:
    """A small JSON-friendly copy of metadata (placeholders become their attributes or name)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if depth > 3:
        return _short_repr(value)
    if isinstance(value, Placeholder):
        return _plain(value.attributes, depth + 1) if value.attributes else value.global_name
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in list(value.items())[:100] if not is_leaf(v)}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value[:50] if not is_leaf(v)]
    if hasattr(value, "__dict__") and not isinstance(value, torch.nn.Module):  # trusted Namespace etc.
        return _plain(vars(value), depth + 1)
    return _short_repr(value)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 80, 80


def _short_repr(value: Any) -> str:
    """At most 80 characters, without building the repr of a huge or deeply nested value."""
    try:
        text = value if isinstance(value, str) else _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ of a trusted object
        text = f"<{type(value).__name__}>"
    return clean(text, 80)


def _metadata(root: Any) -> dict[str, Any]:
    mapping = as_mapping(root) or {}
    meta = {str(k): _plain(v) for k, v in mapping.items()
            if isinstance(v, (bool, int, float, str, np.generic))}
    for key in _HPARAM_KEYS:
        if key in mapping and not is_leaf(mapping[key]):
            meta[key] = _plain(mapping[key])
    return meta


def _int_or_none(value: Any) -> int | None:
    """An integer step from metadata, bounded to int64 (a step of 10**5000 or 1e308 in a file
    becomes 2**63 - 1: it still sorts last, and every int64 array and formatter accepts it)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return clamp_int64(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return clamp_int64(int(value))
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        return int(value.strip())  # ASCII digits only: '²'.isdigit() is True, int('²') fails
    return None


_DECIMAL = re.compile(r"[0-9]{1,18}", re.ASCII)


def step_from_metadata(meta: Mapping[str, Any]) -> int | None:
    """The first non-negative step/epoch found (Ultralytics' stripped final weights say `epoch: -1`: unknown)."""
    for key in _STEP_KEYS:
        step = _int_or_none(meta.get(key))
        if step is not None and step >= 0:
            return step
    return None


_NAME_STEP_PATTERNS = [re.compile(p, re.IGNORECASE | re.ASCII) for p in (
    r"(?:global_step|step|checkpoint|ckpt|iter(?:ation)?|it)[=_\-]?(\d+)",
    r"epoch[=_\-]?(\d+)",
    r"(\d+)(?!.*\d)",
)]


def step_from_name(path: str) -> int | None:
    """Training step in a file or folder name: `ckpt-1200.pth`, `epoch=3-step=120.ckpt` (120),
    `epoch_3.pt` (3), `checkpoint-500/`; else the last number in the name; else None."""
    name = os.path.basename(os.path.normpath(path))
    stem = re.sub(r"\.(safetensors\.index\.json|bin\.index\.json|[A-Za-z]+)$", "", name)
    for pattern in _NAME_STEP_PATTERNS:
        match = pattern.search(stem)
        if match:
            return int(match.group(1)[-18:])
    return None


def _no_weights_error(path: str, root: Any) -> CheckpointError:
    mapping = as_mapping(root)
    if isinstance(root, Placeholder) and not root.attributes and not root.items:
        return CheckpointError(path, ProblemKind.UNSAFE_PICKLE, f"the pickle holds only {root.global_name}(...) "
                                                                f"and no tensors; nothing was executed")
    if mapping is None:
        if is_leaf(root) or (isinstance(root, (list, tuple)) and root and all(is_leaf(v) for v in root)):
            held = "Tensor" if is_leaf(root) else f"{type(root).__name__} of {len(root)} tensors"
            return SavedTensor(path, f"no model weights found (the file holds a {held}: data such as a probe "
                                     f"batch, not a checkpoint)")
        return CheckpointError(path, ProblemKind.NO_WEIGHTS,
                               f"no model weights found (the file holds a {type(root).__name__})")
    keys = set(map(str, mapping))
    if {"state", "param_groups"} <= keys or (keys & set(OPTIMIZER_KEYS) and not keys & set(_WEIGHT_KEYS)):
        return CheckpointError(path, ProblemKind.OPTIMIZER_ONLY, "optimizer state only, no model weights")
    if "last_epoch" in keys and keys & {"base_lrs", "_step_count"}:
        return CheckpointError(path, ProblemKind.SCHEDULER_ONLY, "learning-rate scheduler state only, no model weights")
    shown = ", ".join(sorted(keys)[:12])
    return CheckpointError(path, ProblemKind.NO_WEIGHTS, f"no model weights found (top-level keys: {shown})")


def _with_neutralised(path: str, error: CheckpointError, problems: list[Problem]) -> CheckpointError:
    """A file without weights whose pickle tries to run code (a neutralised `os.system` payload
    and nothing else) is an "unsafe-pickle" warning naming what was neutralised, not an info-level
    "no-weights": the file's one problem must not hide that it is hostile."""
    dangerous = [p for p in problems if p.kind == ProblemKind.UNSAFE_PICKLE_NEUTRALISED and p.severity == "warning"]
    if not dangerous or error.kind == ProblemKind.UNSAFE_PICKLE:
        return error
    return CheckpointError(path, ProblemKind.UNSAFE_PICKLE,
                           f"{error.problem}; {dangerous[0].message}; nothing was executed")


def _dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


#: each view may repeat up to MAX_FREE_ELEMENTS stored values; a whole file at most this many, so a
#: tiny file with hundreds of such views cannot cost minutes of CPU
_MAX_REPEATED_PER_FILE = 8 * MAX_FREE_ELEMENTS


def _repeated_elements(leaf: Leaf) -> int:
    """numel minus the storage span a view covers (> 0 only for views that repeat values)."""
    if isinstance(leaf, TensorRef):
        shape, stride = leaf.shape, leaf.stride
    elif isinstance(leaf, torch.Tensor):
        shape, stride = tuple(leaf.shape), tuple(leaf.stride())
    else:
        return 0
    numel = math.prod(shape)
    span = 0 if numel == 0 else sum((n - 1) * st for n, st in zip(shape, stride)) + 1
    return max(numel - span, 0)


def _drop_unreadable(path: str, tree: TorchTree, weights: dict[str, tuple[Leaf, str]],
                     problems: list[Problem]) -> dict[str, tuple[Leaf, str]]:
    """The weights whose data can be read; the others become one Problem (or, when none is
    left, a CheckpointError: the whole file is unusable)."""
    bad = {}
    repeated = 0  # elements that repeat stored ones (stride 0), summed over the file
    for name, (leaf, _) in weights.items():
        reason = tree.leaf_problem(leaf)
        if not reason:
            repeated += _repeated_elements(leaf)
            if repeated > _MAX_REPEATED_PER_FILE:
                reason = (f"the file's stride-0 views repeat more than {_MAX_REPEATED_PER_FILE:,} elements in all; "
                          f"not materialised")
        if reason:
            bad[name] = reason
    if not bad:
        return weights
    first, reason = next(iter(bad.items()))
    if len(bad) == len(weights):
        raise CheckpointError(path, ProblemKind.CORRUPT, f"no readable tensor ({len(bad)} skipped; first: "
                                                         f"{first}: {reason})")
    problems.append(Problem(file=path, kind=ProblemKind.UNREADABLE_TENSOR, severity="warning", count=len(bad),
                            message=clean(f"{len(bad)} of {len(weights)} tensors skipped, their data "
                                          f"cannot be read (first: {first}: {reason})", 600)))
    return {n: v for n, v in weights.items() if n not in bad}


def _view_key(leaf: Leaf) -> tuple | None:
    """What makes two leaves the same tensor: one storage, offset, shape, stride and dtype (None for
    views that repeat values: an expanded view is not a parameter saved twice)."""
    if _repeated_elements(leaf):
        return None
    if isinstance(leaf, TensorRef):
        return (leaf.storage.key, leaf.storage.view_offset, leaf.offset, leaf.shape, leaf.stride, leaf.dtype)
    if isinstance(leaf, torch.Tensor) and leaf.numel() and leaf.device.type != "meta":
        return (leaf.untyped_storage().data_ptr(), leaf.storage_offset(), tuple(leaf.shape), tuple(leaf.stride()),
                leaf.dtype)
    return None


def _without_aliases(weights: dict[str, tuple[Leaf, str]]) -> tuple[dict[str, tuple[Leaf, str]], dict[str, str]]:
    """The first name of each tensor stored under several names (a module registered twice, tied
    weights saved twice), as named_parameters() lists it, and the other names (alias -> first)."""
    seen: dict[tuple, str] = {}
    aliases: dict[str, str] = {}
    for name, (leaf, _) in weights.items():
        key = _view_key(leaf)
        if key is None:
            continue
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
    return {n: v for n, v in weights.items() if n not in aliases}, aliases


def checkpoint_from_tree(path: str, tree: TorchTree, *, optimizer: bool = True) -> CheckpointData:
    """The CheckpointData of one unpickled file. optimizer=False: of the optimizer state only the param
    groups are read (`optimizer_groups`: its tensors are data, and a caller that needs no checkpoint facts
    reads none)."""
    root = tree.root
    weights, weights_at = _find_weights(root)
    if not weights:
        raise _with_neutralised(path, _no_weights_error(path, root), tree.problems)
    problems = list(tree.problems)
    meta = _metadata(root)
    weights, aliases = _without_aliases(weights)
    weights = _drop_unreadable(path, tree, weights, problems)
    renamed = strip_prefixes(list(weights) + list(aliases))
    if aliases:
        meta["aliases"] = {renamed[a]: renamed[b] for a, b in list(aliases.items())[:50]}
        meta["alias_count"] = len(aliases)
    leaves = {renamed[n]: leaf for n, (leaf, _) in weights.items()}
    tensors = {renamed[n]: TensorInfo(renamed[n], tuple(leaf.shape), _dtype_name(leaf.dtype), role)
               for n, (leaf, role) in weights.items()}
    step = step_from_metadata(meta)
    optimizer_sd = find_optimizer_state(root)
    facts = None
    if optimizer_sd is not None:
        facts = (safe_optimizer_facts(path, optimizer_sd, tensors, tree.checked_materialiser(path), problems)
                 if optimizer else safe_optimizer_groups(path, optimizer_sd, problems))
    data = finish(path, tree.format, tensors, lambda name: tree.materialise(leaves[name]),
                  step, meta, facts, problems)
    data.weights_at = weights_at
    return data


def finish(path: str, fmt: str, tensors: dict[str, TensorInfo], load: Callable[[str], torch.Tensor],
           step: int | None, meta: dict[str, Any], optimizer: dict[str, Any] | None,
           problems: list[Problem]) -> CheckpointData:
    """Build CheckpointData, falling back to a step in the name when the content has none."""
    source = "content"
    if step is None:
        step = step_from_name(path)
        source = "filename" if step is not None else "mtime"

    def checked_load(name: str) -> torch.Tensor:
        """One tensor as float32; any failure is a CheckpointError (the caller skips the tensor)."""
        if name not in tensors:
            raise CheckpointError(path, ProblemKind.MISSING_TENSOR, f"no tensor named {name!r}")
        try:
            return load(name)
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - I/O errors, torch errors, a file changed on disk
            raise CheckpointError(path, ProblemKind.UNREADABLE_TENSOR, f"tensor {name!r} cannot be read: "
                                                                       f"{one_line(exc)}") from None

    return CheckpointData(path=path, step=step, step_source=source, format=fmt, tensors=tensors,
                          load=checked_load, optimizer=optimizer, metadata=meta, problems=problems,
                          mtime=os.path.getmtime(path))
