"""Layer 3c: which parameter each optimizer entry belongs to, when the weights file does not keep the order.

A torch optimizer state_dict keys its state by integers in param_groups order. When the weights keep
the model's `named_parameters()` order (torch pickles: plain state dicts, Lightning `.ckpt`,
`pytorch_model.bin`), `optimizer.py` maps them by order. safetensors files store names sorted, so the
order has to come from the architecture. This module does that for the Hugging Face Trainer:

    Trainer.create_optimizer: group 0 = the decay parameters, group 1 = the others, each in
    named_parameters() order (requires_grad, a tied weight once); optimizer.pt's state index i is the
    i-th name of the two groups concatenated.

Decay parameters (`Trainer.get_decay_parameter_names`), by the Trainer's own rule, read in the source of
transformers 5.24.0 (the fixtures were written by 5.23.0, same code): not inside an `nn.LayerNorm`, and
the lower-cased name matches none of `bias`, `layernorm`, `rmsnorm`, `(?:^|\\.)norm(?:$|\\.)`,
`_norm(?:$|\\.)` (the patterns came with huggingface/transformers PR #35927, Jan 2025, and PR #38922,
June 2025, which dropped ALL_LAYERNORM_LAYERS for them). Earlier versions decayed every parameter not
inside ALL_LAYERNORM_LAYERS whose name does not contain "bias"; between the two PRs the patterns were
`bias`, `layernorm`, `rmsnorm`. All three rules are tried, and a mapping is kept only where the rules
that fit the optimizer state agree.

Two ways to the order, each verified against the optimizer state (the number of entries per group, and
the shape of every entry's state) before anything is mapped:

1. structure (no transformers needed): named_parameters() is a pre-order walk of the module tree, each
   module's own parameters first (`weight` before `bias`, as every torch.nn layer and HF's Conv1D
   register them), children in registration order. Numbered children (`layer.0`, `layer.1`) are in
   numeric order; the order of named siblings is unknown, so every order of them is tried and a name is
   mapped only when it lands on the same entry in every order that fits the shapes. "inside an
   nn.LayerNorm" is read from structure: a module holding only a 1-d `weight` (and a `bias` of the
   same shape), without buffers or children.
2. architecture (transformers installed): the model is built from config.json on the meta device
   (hfarch; nothing is downloaded, no remote code) and its own named_parameters() and module types
   give the exact order.

A name that cannot be placed with certainty stays unmapped ("ambiguous"): never guessed.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Shape = tuple[int, ...]

_PATTERNS_538922 = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")
_PATTERNS_535927 = (r"bias", r"layernorm", r"rmsnorm")
TRAINER_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("transformers >= PR #38922 (5.x)", _PATTERNS_538922),
    ("transformers PR #35927 .. #38922", _PATTERNS_535927),
    ("transformers before PR #35927", (r"bias",)),
)
_MAX_SIBLINGS = 7  # orders of at most 7! = 5040 named siblings are tried per module


@dataclass
class OrderResult:
    """names[i]: the parameter of optimizer entry i (groups concatenated), None where not certain."""

    names: list[str | None]
    how: str  # "structure" | "architecture"
    note: str

    @property
    def complete(self) -> bool:
        return bool(self.names) and all(n is not None for n in self.names)


def decayed(name: str, in_layernorm: bool, patterns: Sequence[str]) -> bool:
    """The Trainer's rule for one parameter (see the module docstring)."""
    low = name.lower()
    return not in_layernorm and not any(re.search(p, low) for p in patterns)


@dataclass
class _Node:
    own: list[str] = field(default_factory=list)  # full names of the module's own parameters
    children: dict[str, "_Node"] = field(default_factory=dict)


def _tree(names: Sequence[str]) -> _Node:
    root = _Node()
    for name in names:
        node = root
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.children.setdefault(part, _Node())
        node.own.append(name)
    return root


def _own_orders(own: list[str]) -> list[tuple[str, ...]]:
    """Orders of a module's own parameters: weight before bias when both are there (torch.nn's order)."""
    leaves = {n.rsplit(".", 1)[-1]: n for n in own}
    if set(leaves) <= {"weight", "bias"}:
        return [tuple(leaves[k] for k in ("weight", "bias") if k in leaves)]
    if len(own) > _MAX_SIBLINGS:
        return []
    orders = []
    for perm in itertools.permutations(own):
        leaf = [p.rsplit(".", 1)[-1] for p in perm]
        if "weight" in leaf and "bias" in leaf and leaf.index("bias") < leaf.index("weight"):
            continue
        orders.append(perm)
    return orders


def _child_orders(children: dict[str, _Node]) -> list[tuple[str, ...]]:
    keys = list(children)
    if all(k.isdigit() for k in keys):
        return [tuple(sorted(keys, key=int))]
    if len(keys) > _MAX_SIBLINGS:
        return []
    return list(itertools.permutations(keys))


class _Solver:
    """Positions (group, index) every parameter can take in the orders that fit the optimizer state."""

    def __init__(self, group_of: Mapping[str, int], shape_of: Mapping[str, Shape],
                 targets: Sequence[Sequence[Shape | None]]) -> None:
        self.group_of, self.shape_of, self.targets = group_of, shape_of, targets
        self.memo: dict[tuple[int, tuple[int, ...]], dict[str, set[tuple[int, int]]] | None] = {}
        self.groups = len(targets)
        self._sizes: dict[int, tuple[int, ...]] = {}

    def sizes(self, node: _Node) -> tuple[int, ...]:
        if id(node) in self._sizes:
            return self._sizes[id(node)]
        counts = [0] * self.groups
        for name in node.own:
            counts[self.group_of[name]] += 1
        for child in node.children.values():
            for g, n in enumerate(self.sizes(child)):
                counts[g] += n
        self._sizes[id(node)] = tuple(counts)
        return self._sizes[id(node)]

    def fits(self, name: str, pos: list[int]) -> bool:
        g = self.group_of[name]
        if pos[g] >= len(self.targets[g]):
            return False
        want = self.targets[g][pos[g]]
        return want is None or tuple(want) == tuple(self.shape_of[name])

    def solve(self, node: _Node, start: tuple[int, ...]) -> dict[str, set[tuple[int, int]]] | None:
        key = (id(node), start)
        if key in self.memo:
            return self.memo[key]
        self.memo[key] = None  # no cycles in a tree; guards re-entry while computing
        found: dict[str, set[tuple[int, int]]] = {}
        ok = False
        sizes = {k: self.sizes(c) for k, c in node.children.items()}
        for own in _own_orders(node.own):
            pos = list(start)
            placed = {}
            good = True
            for name in own:
                if not self.fits(name, pos):
                    good = False
                    break
                g = self.group_of[name]
                placed[name] = (g, pos[g])
                pos[g] += 1
            if not good:
                continue
            after_own = tuple(pos)
            for order in _child_orders(node.children):
                cursor = list(after_own)
                parts = []
                for key_ in order:
                    sub = self.solve(node.children[key_], tuple(cursor))
                    if sub is None:
                        break
                    parts.append(sub)
                    cursor = [c + n for c, n in zip(cursor, sizes[key_])]
                else:
                    ok = True
                    for name, at in placed.items():
                        found.setdefault(name, set()).add(at)
                    for sub in parts:
                        for name, ats in sub.items():
                            found.setdefault(name, set()).update(ats)
        result = found if ok else None
        self.memo[key] = result
        return result


def _layernorm_like(names: Sequence[str], shapes: Mapping[str, Shape], buffers: set[str]) -> set[str]:
    """Modules holding only a 1-d weight (and a same-shape bias), no buffers and no sub-modules."""
    by_module: dict[str, dict[str, Shape]] = {}
    for n in names:
        module, _, leaf = n.rpartition(".")
        by_module.setdefault(module, {})[leaf] = shapes[n]
    modules = {n.rpartition(".")[0] for n in list(names) + list(buffers)}
    nested = {m.rsplit(".", k)[0] for m in modules for k in range(1, m.count(".") + 1)}  # modules with sub-modules
    out = set()
    for module, leaves in by_module.items():
        if module in nested or any(b.rpartition(".")[0] == module for b in buffers):
            continue
        if "weight" in leaves and set(leaves) <= {"weight", "bias"} and len(leaves["weight"]) == 1 \
                and all(s == leaves["weight"] for s in leaves.values()):
            out.add(module)
    return out


def _place(names: Sequence[str], shapes: Mapping[str, Shape], group_of: Mapping[str, int],
           targets: Sequence[Sequence[Shape | None]]) -> dict[str, tuple[int, int]] | None:
    """Each name's certain (group, index), or None when no order fits the optimizer state at all."""
    counts = [0] * len(targets)
    for n in names:
        counts[group_of[n]] += 1
    if counts != [len(t) for t in targets]:
        return None
    solved = _Solver(group_of, shapes, targets).solve(_tree(names), (0,) * len(targets))
    if solved is None:
        return None
    return {n: next(iter(at)) for n, at in solved.items() if len(at) == 1}


def _agree(placements: list[dict[str, tuple[int, int]]]) -> dict[str, tuple[int, int]]:
    """The placements every fitting rule makes the same way."""
    first, *rest = placements
    return {n: at for n, at in first.items() if all(p.get(n) == at for p in rest)}


def _names_per_entry(placed: Mapping[str, tuple[int, int]], targets: Sequence[Sequence[Any]]) -> list[str | None]:
    offsets = [0]
    for t in targets[:-1]:
        offsets.append(offsets[-1] + len(t))
    names: list[str | None] = [None] * sum(len(t) for t in targets)
    for name, (g, i) in placed.items():
        names[offsets[g] + i] = name
    return names


def trainer_order_from_structure(names: Sequence[str], shapes: Mapping[str, Shape], buffers: set[str],
                                 targets: Sequence[Sequence[Shape | None]]) -> OrderResult | None:
    """The Trainer's order derived from the state dict's module structure (no transformers), or None
    when no rule and module order fits the optimizer state."""
    if len(targets) != 2:
        return None
    norms = _layernorm_like(names, shapes, buffers)
    fitting = []
    for _, patterns in TRAINER_RULES:
        for structural_norms in (norms, set()):
            group_of = {n: 0 if decayed(n, n.rpartition(".")[0] in structural_norms, patterns) else 1 for n in names}
            placed = _place(names, shapes, group_of, targets)
            if placed is not None:
                fitting.append(placed)
    return _agreed_order(fitting, targets, "structure", "derived from the state dict's module structure",
                         "placed with certainty")


def trainer_order_from_model(model: Any, names: Sequence[str], shapes: Mapping[str, Shape],
                             targets: Sequence[Sequence[Shape | None]], built_with: str) -> OrderResult | None:
    """The Trainer's order from a model built from config.json (named_parameters() and module types),
    verified against the optimizer state; None when it does not fit (names, counts or shapes)."""
    import torch

    if len(targets) != 2:
        return None
    in_norm = set()
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.LayerNorm):
            in_norm.update(f"{module_name}.{p}" if module_name else p for p, _ in module.named_parameters())
    order = [n for n, _ in model.named_parameters()]  # remove_duplicate=True: a tied weight once
    if set(order) != set(names):
        return None
    fitting = []
    for _, patterns in TRAINER_RULES:
        groups: list[list[str]] = [[], []]
        for n in order:
            groups[0 if decayed(n, n in in_norm, patterns) else 1].append(n)
        if [len(g) for g in groups] != [len(t) for t in targets]:
            continue
        if all(want is None or tuple(want) == tuple(shapes[n])
               for g, t in zip(groups, targets) for n, want in zip(g, t)):
            fitting.append({n: (gi, i) for gi, g in enumerate(groups) for i, n in enumerate(g)})
    return _agreed_order(fitting, targets, "architecture", f"from the architecture in config.json ({built_with})",
                         "placed")


def _agreed_order(fitting: list[dict], targets: Sequence[Sequence[Shape | None]], how: str, source: str,
                  placed_words: str) -> OrderResult | None:
    """The names every fitting placement agrees on, as an OrderResult (None when nothing fits)."""
    if not fitting:
        return None
    result = _names_per_entry(_agree(fitting), targets)
    mapped = sum(n is not None for n in result)
    return OrderResult(result, how, f"HF Trainer order (decay group, then no-decay) {source}: {mapped} of "
                                    f"{len(result)} optimizer entries {placed_words}, shapes agree")


def hf_trainer_order(names: Sequence[str], shapes: Mapping[str, Shape], buffers: set[str], model: Any = None
                     ) -> Callable[[Sequence[Sequence[Shape | None]]], OrderResult | None]:
    """A recovery for `optimizer_facts` (HF Trainer folders): the architecture (`model`, built from
    config.json on the meta device) when there is one, else the state dict's module structure."""

    def recover(targets: Sequence[Sequence[Shape | None]]) -> OrderResult | None:
        if model is not None:
            from report_gen.readers.checkpoint.hfarch import transformers_version

            built = trainer_order_from_model(model, names, shapes, targets, f"transformers {transformers_version()}")
            if built is not None:
                return built
        return trainer_order_from_structure(names, shapes, buffers, targets)

    return recover
