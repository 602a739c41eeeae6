"""Layer 3b: optimizer state -> gradient RMS per parameter name (a post-hoc window onto gradients).

Ids of a torch optimizer state_dict map back to the model's parameters by order, verified by the
shapes of their state; see `optimizer_facts`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from report_gen.core import Problem, ProblemKind
from report_gen.numeric import float64_sum
from report_gen.readers.checkpoint.errors import CheckpointError, one_line
from report_gen.readers.checkpoint.order import OrderResult
from report_gen.readers.checkpoint.tree import Leaf, as_mapping, is_leaf
from report_gen.readers.types import TensorInfo

#: recovers the parameter order from the architecture: per-group state shapes -> OrderResult or None
Recovery = Callable[[list[list[tuple[int, ...] | None]]], OrderResult | None]


OPTIMIZER_KEYS = ("optimizer", "optimizer_state_dict", "optimizer_states", "optim", "opt",
                  "optimizer_state")


def find_optimizer_state(root: Any) -> Mapping | None:
    mapping = as_mapping(root) or {}
    for key in OPTIMIZER_KEYS:
        value = mapping.get(key)
        if isinstance(value, (list, tuple)) and value:
            value = value[0]
        value = as_mapping(value)
        if value is not None and "state" in value and "param_groups" in value:
            return value
    return None


def safe_optimizer_facts(path: str, opt_state: Mapping, tensors: Mapping[str, TensorInfo],
                         materialise: Callable[[Leaf], torch.Tensor], problems: list[Problem],
                         ordered: bool = True, recover: Recovery | None = None) -> dict[str, Any] | None:
    """optimizer_facts, where a malformed optimizer state becomes a Problem instead of an error."""
    try:
        return optimizer_facts(opt_state, tensors, materialise, ordered=ordered, recover=recover)
    except Exception as exc:  # noqa: BLE001 - optional facts: the weights are still usable
        problems.append(Problem(file=path, kind=ProblemKind.UNREADABLE_OPTIMIZER_STATE, severity="warning",
                                message=f"optimizer state ignored: {one_line(exc)}"))
        return None


def safe_optimizer_groups(path: str, opt_state: Mapping, problems: list[Problem]) -> dict[str, Any] | None:
    """optimizer_groups, where a malformed optimizer state becomes a Problem instead of an error."""
    try:
        return optimizer_groups(opt_state)
    except Exception as exc:  # noqa: BLE001 - optional facts: the weights are still usable
        problems.append(Problem(file=path, kind=ProblemKind.UNREADABLE_OPTIMIZER_STATE, severity="warning",
                                message=f"optimizer state ignored: {one_line(exc)}"))
        return None


def _scalar(value: Any, materialise: Callable[[Leaf], torch.Tensor]) -> float | None:
    """A finite number from a plain value or a one-element tensor, else None."""
    try:
        if is_leaf(value):
            number = float(materialise(value).reshape(-1)[0]) if math.prod(value.shape) >= 1 else None
        elif isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_)):
            number = float(value)
        else:
            return None
    except (CheckpointError, ValueError, TypeError, OverflowError, RuntimeError):
        return None
    return number if number is not None and math.isfinite(number) else None


def _number(value: Any, default: float) -> float:
    """float(value) for plain numbers (not strings), else `default` (metadata from untrusted files)."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_)):
        try:
            number = float(value)
        except (ValueError, TypeError, OverflowError):
            return default
        return number if math.isfinite(number) else default
    return default


def _grad_rms(state: Mapping, group: Mapping, materialise: Callable[[Leaf], torch.Tensor]
              ) -> tuple[tuple[int, ...], float | None] | None:
    """(shape, gradient-RMS estimate) from one parameter's optimizer state, or None without state; the
    estimate is None when the state cannot be read or is not finite.

    Adam/AdamW: sqrt(mean(exp_avg_sq) / (1 - beta2**step)); RMSprop: sqrt(mean(square_avg));
    SGD: rms(momentum_buffer) * (1 - momentum) / (1 - dampening), the steady-state gain of the
    momentum average (exact for a slowly varying gradient; for pure noise it underestimates the
    gradient RMS by sqrt((1 + momentum) / (1 - momentum))).
    """
    for key in ("exp_avg_sq", "square_avg", "momentum_buffer"):
        leaf = state.get(key)
        if is_leaf(leaf):
            break
    else:
        return None
    try:
        tensor = materialise(leaf)
    except CheckpointError:
        return tuple(leaf.shape), None  # this parameter's state cannot be read; the others still can
    holds_squares = key != "momentum_buffer"  # exp_avg_sq / square_avg already average g²
    mean_sq = float64_sum(tensor, power=1 if holds_squares else 2) / max(tensor.numel(), 1)
    if key == "exp_avg_sq":
        step = _scalar(state.get("step"), materialise)
        betas = group.get("betas")
        beta2 = _number(betas[1], math.nan) if isinstance(betas, (list, tuple)) and len(betas) > 1 else math.nan
        if step and step > 0 and 0.0 <= beta2 < 1.0:
            correction = 1.0 - beta2 ** step
            if correction > 0.0:
                mean_sq /= correction
    scale = 1.0
    if key == "momentum_buffer":
        momentum, dampening = _number(group.get("momentum", 0.0), 0.0), _number(group.get("dampening", 0.0), 0.0)
        scale = (1.0 - momentum) / (1.0 - dampening) if dampening < 1.0 else 1.0
    if not math.isfinite(mean_sq) or mean_sq < 0.0 or not math.isfinite(scale):
        return tuple(leaf.shape), None  # the shape still places the entry; the value is unusable
    return tuple(leaf.shape), math.sqrt(mean_sq) * scale


def _optimizer_kind(groups: list[Mapping], states: Iterable[Mapping]) -> str:
    keys = set().union(*({k for k in s if isinstance(k, str)} for s in states)) if states else set()
    group = groups[0] if groups else {}
    if "exp_avg_sq" in keys or "betas" in group:
        return "adamw" if group.get("decoupled_weight_decay") else "adam"
    if "momentum_buffer" in keys or ("momentum" in group and "dampening" in group):
        return "sgd"
    if "square_avg" in keys:
        return "rmsprop"
    if "sum" in keys:
        return "adagrad"
    return "unknown"


def _map_by_unique_shape(shapes: list[tuple[int, ...] | None], params: list[TensorInfo]
                         ) -> tuple[list[str | None], str, str]:
    """Map only the ids whose shape belongs to exactly one parameter (file order unknown)."""
    owners: dict[tuple[int, ...], list[str]] = {}
    for p in params:
        owners.setdefault(p.shape, []).append(p.name)
    names = [owners[s][0] if s is not None and len(owners.get(s, [])) == 1 else None for s in shapes]
    mapped = sum(n is not None for n in names)
    kind = "unique-shapes" if mapped == len(shapes) else ("ambiguous" if mapped else "unmapped")
    return names, kind, (f"{mapped} of {len(shapes)} optimizer entries mapped by a shape unique "
                         f"in the model")


def _map_ids(ids: list[Any], shapes: list[tuple[int, ...] | None], names_in_file: list[str],
             params: list[TensorInfo], ordered: bool) -> tuple[list[str | None] | None, str, str]:
    """(names for ids or None, mapping kind, note). A None name leaves that id unmapped."""
    by_name = {p.name: p for p in params}
    if len(names_in_file) == len(ids) and all(n in by_name for n in names_in_file):
        return names_in_file, "names-in-file", "param_names stored in the optimizer state"
    if not ordered:
        names, kind, note = _map_by_unique_shape(shapes, params)
        return names, kind, "weights file does not keep parameter order; " + note
    if len(ids) == len(params) and all(s is None or s == p.shape for s, p in zip(shapes, params)):
        return [p.name for p in params], "shapes-verified", (
            f"{len(ids)} optimizer entries matched the model parameters in order, shapes agree")
    names, kind, note = _map_by_unique_shape(shapes, params)
    return names, kind, (f"{len(ids)} optimizer entries for {len(params)} model parameters (frozen, "
                         f"shared or missing parameters?); " + note)


def optimizer_facts(opt_state: Mapping, tensors: Mapping[str, TensorInfo],
                    materialise: Callable[[Leaf], torch.Tensor], *, ordered: bool = True,
                    recover: Recovery | None = None) -> dict[str, Any]:
    """The `CheckpointData.optimizer` dict for a torch optimizer state_dict (see types.py).

    Optimizer state is keyed by integer ids in param_groups order; ids map back to the model's
    parameters (role "param", state_dict order) by order, verified by the shapes of their state.
    ordered=False (safetensors weights, stored sorted by name): `recover` (see `order.py`), given the
    state shapes per param group, places what the architecture settles; shapes unique in the model
    fill the rest. mapping: "names-in-file" | "shapes-verified" | "ambiguous" | "unique-shapes" |
    "unmapped"; "order" says where the order came from: "file" | "structure" | "architecture".
    """
    groups, state, ids, id_group, names_in_file, group_ids = _param_ids(opt_state)
    estimates = {pid: _grad_rms(as_mapping(state.get(pid)) or {}, id_group[pid], materialise)
                 for pid in ids}
    shapes = [est[0] if est else None for est in estimates.values()]
    params = [t for t in tensors.values() if t.role == "param"]
    names, mapping, note = _map_ids(ids, shapes, names_in_file, params, ordered)
    how = "file" if mapping in ("names-in-file", "shapes-verified") else None
    if recover is not None and mapping != "names-in-file" and ids:
        # the trainer's own grouping comes first: a model-order match of the shapes can be a coincidence
        by_id = dict(zip(ids, shapes))
        found = recover([[by_id[pid] for pid in g] for g in group_ids])
        if found is not None and (found.complete or (how is None and any(found.names))):
            by_shape = names if how is None and names else [None] * len(ids)
            names, mapping, note, how = _merge_recovered(found, by_shape)
    grad_rms = {}
    if names is not None:
        grad_rms = {name: est[1] for name, est in zip(names, estimates.values())
                    if est and est[1] is not None and name}
    steps = [_scalar((as_mapping(state.get(pid)) or {}).get("step"), materialise) for pid in ids[:1]]
    step = int(steps[0]) if steps and steps[0] is not None and abs(steps[0]) < 2 ** 62 else None
    states = [s for s in (as_mapping(v) for v in state.values()) if s]
    facts = {"kind": _optimizer_kind(groups, states), "grad_rms": grad_rms, "mapping": mapping,
             "note": note, "step": step, "order": how}
    facts.update(_group_facts(groups, ids, states))
    return facts


def optimizer_groups(opt_state: Mapping) -> dict[str, Any]:
    """The `CheckpointData.optimizer` dict without reading any tensor data: the kind (from the state's
    key names), the param groups' learning rates and how many parameters hold state, for a caller that
    needs no checkpoint tensor facts. No gradient estimates ("grad_rms" empty, "mapping" "not-read"), and
    no "step" (torch keeps it as a tensor)."""
    groups, state, ids, _, _, _ = _param_ids(opt_state)
    states = [s for s in (as_mapping(v) for v in state.values()) if s]
    facts = {"kind": _optimizer_kind(groups, states), "grad_rms": {}, "mapping": "not-read",
             "note": "optimizer state tensors not read: no selected rule needs them", "step": None, "order": None}
    facts.update(_group_facts(groups, ids, states))
    return facts


def _param_ids(opt_state: Mapping) -> tuple[list[Mapping], Mapping, list[Any], dict[Any, Mapping], list[str],
                                            list[list[Any]]]:
    """(param groups, state, parameter ids in group order, id -> its group, param_names stored in the
    groups, the ids of each group)."""
    groups = [g for g in (opt_state.get("param_groups") or []) if isinstance(g, Mapping)]
    state = as_mapping(opt_state.get("state")) or {}
    ids, id_group, names_in_file, group_ids = [], {}, [], []
    for group in groups:
        params = group.get("params", [])
        group_ids.append([])
        for pid in params if isinstance(params, (list, tuple)) else []:
            if isinstance(pid, (int, str)) and not isinstance(pid, bool) and pid not in id_group:
                ids.append(pid)
                id_group[pid] = group
                group_ids[-1].append(pid)
        names = group.get("param_names", [])
        if isinstance(names, (list, tuple)):
            names_in_file.extend(n for n in names if isinstance(n, str))
    return groups, state, ids, id_group, names_in_file, group_ids


def _merge_recovered(found: OrderResult, by_shape: list[str | None]) -> tuple[list[str | None], str, str, str]:
    """The recovered names, with entries it left open filled by shapes unique in the model."""
    names = list(found.names)
    taken = {n for n in names if n}
    filled = 0
    for i, n in enumerate(by_shape):
        if names[i] is None and n is not None and n not in taken:
            names[i], filled = n, filled + 1
            taken.add(n)
    mapped = sum(n is not None for n in names)
    note = found.note + (f"; {filled} more by a shape unique in the model" if filled else "")
    mapping = "shapes-verified" if mapped == len(names) else "ambiguous"
    return names, mapping, note, found.how


def _group_facts(groups: list[Mapping], ids: list[Any], states: list[Mapping]) -> dict[str, Any]:
    """The param groups' learning rates (finite numbers only), how many parameters they hold and how many
    of those have state: what tells "lr 0" and "no parameter ever got a gradient" apart after the fact."""
    lrs = [float(g["lr"]) for g in groups if isinstance(g.get("lr"), (int, float)) and not isinstance(g.get("lr"), bool)
           and math.isfinite(float(g["lr"]))]
    return {"lrs": lrs, "group_params": len(ids), "state_entries": len(states)}
