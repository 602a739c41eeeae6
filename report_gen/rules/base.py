"""Rule declaration and registry.

A rule is one small declared unit (DESIGN §7): a stable code (family letter + 3 digits, never reused),
a kebab-case name, a category (DESIGN §5; the name unless given), a default severity, the signals it
needs (any one of them is enough), a frozen options dataclass whose fields each carry their default and
their documentation (`opt(default, "doc")`), and a docstring with the headings What it detects / Why it
matters / Typical causes / What to try. Each thing is said once: `rules explain` renders the Options
section from the fields, and a finding's suggestion is the first paragraph of "What to try".

The rule function receives the run context and its options and yields `Hit`s; the engine turns hits
into `Finding`s (adding code, name, category, severity, run and the suggestion).
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from report_gen.core import Severity
from report_gen.facts import WEIGHT_FACT_GROUPS
from report_gen.vocab import Plot, Signal

CODE_RE = re.compile(r"^[A-Z][0-9]{3}$")
NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
DOC_SECTIONS = ("What it detects", "Why it matters", "Typical causes", "What to try")
_HEADING = re.compile(r"^(?P<heading>[A-Z][A-Za-z ]+):\s*$")

CATEGORIES = (
    "nonfinite-loss", "divergence", "plateau", "oscillation", "overfitting", "vanishing-gradients",
    "exploding-gradients", "unbalanced-updates", "frozen-layer", "nonfinite-weights", "dead-kernels",
    "low-kernel-diversity", "redundant-filters", "weight-collapse", "wide-weights", "bimodal-weights",
    "dead-activations", "saturated-activations", "growing-activations", "redundant-channels",
    "unstable-activations", "input-integrity",
    # extensions (DESIGN §5 allows new categories)
    "degenerate-attention",
)

@dataclass
class Hit:
    """What a rule reports; the engine completes it into a Finding."""

    subject: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    severity: str | None = None  # None = the rule's (possibly configured) severity
    suggestion: str | None = None
    plot: Plot | None = None

    def __post_init__(self) -> None:
        if self.plot is not None and not isinstance(self.plot, Plot):
            raise TypeError(f"Hit.plot must be a vocab.Plot (CurvePlot, ...), got {type(self.plot).__name__}")


@dataclass(frozen=True)
class NoOptions:
    pass


def opt(default: Any, doc: str) -> Any:
    """An options field: its default and the one place its meaning is written (`rules explain` shows both)."""
    return field(default=default, metadata={"doc": doc})


def doc_sections(doc: str) -> dict[str, str]:
    """The docstring's sections: heading -> its text, dedented (paragraphs separated by blank lines)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in inspect.cleandoc(doc or "").splitlines():
        match = _HEADING.match(line)
        if match:
            current = sections.setdefault(match["heading"], [])
        elif current is not None:
            current.append(line)
    return {h: textwrap.dedent("\n".join(lines)).strip() for h, lines in sections.items()}


def first_paragraph(text: str) -> str:
    """The first paragraph of a section as one line (how a finding carries its suggestion)."""
    return " ".join(text.split("\n\n", 1)[0].split())


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    category: str
    severity: str
    needs: tuple[Signal, ...]
    options: type
    func: Callable[..., Iterable[Hit]]
    facts: tuple[str, ...] = ()  # expensive weight facts it reads (facts.WEIGHT_FACT_GROUPS), computed eagerly
    # needs met without tensor data (names, shapes, steps, the optimizer's param groups); see `rule`
    without_tensors: tuple[Signal, ...] = ()

    @property
    def tensor_needs(self) -> tuple[Signal, ...]:
        """The needs judged from the checkpoints' tensor data when this rule is selected."""
        return tuple(n for n in self.needs if n not in self.without_tensors)

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.func.__doc__ or "")

    @property
    def suggestion(self) -> str:
        """The first paragraph of "What to try": what a finding suggests (a hit may give its own)."""
        return first_paragraph(doc_sections(self.doc).get("What to try", ""))

    def option_docs(self) -> list[tuple[str, Any, str]]:
        """(name, default, doc) of every option, in declaration order."""
        return [(f.name, f.default, f.metadata.get("doc", "")) for f in dataclasses.fields(self.options)]

    @property
    def family(self) -> str:
        return self.code[0]

    def option_defaults(self) -> dict[str, Any]:
        return {f.name: f.default for f in dataclasses.fields(self.options)}

    def make_options(self, overrides: dict[str, Any] | None = None):
        overrides = dict(overrides or {})
        known = {f.name: f for f in dataclasses.fields(self.options)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f"rule {self.code} ({self.name}) has no option {', '.join(unknown)}; "
                             f"options: {', '.join(known) or 'none'}")
        for k, v in overrides.items():
            default = known[k].default
            where = f"rule {self.code} option {k}"
            if isinstance(default, bool):
                if not isinstance(v, bool):
                    raise ValueError(f"{where} must be true or false, got {v!r}")
            elif isinstance(default, (int, float)):
                if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v:
                    raise ValueError(f"{where} must be a number, got {v!r}")
                if isinstance(default, int):
                    if float(v) != int(v):
                        raise ValueError(f"{where} must be a whole number, got {v!r}")
                    v = int(v)
                    if v < 0:
                        raise ValueError(f"{where} must not be negative, got {v!r}")
                overrides[k] = float(v) if isinstance(default, float) else v
            elif isinstance(default, str) and not isinstance(v, str):
                raise ValueError(f"{where} must be a string, got {v!r}")
        return self.options(**overrides)

    def explain(self) -> str:
        head = f"{self.code} {self.name}  [category: {self.category}, default severity: {self.severity}]"
        needs = "needs any of: " + ", ".join(self.needs)
        lines = []
        for name, default, doc in self.option_docs():
            lines.append(f"    {name} = {default!r}")
            lines += textwrap.wrap(doc, 96, initial_indent=" " * 8, subsequent_indent=" " * 8, break_on_hyphens=False)
        options = "\n".join(lines) or "    (none)"
        where = f"  (set in [tool.report_gen.rules.{self.code}])" if lines else ""
        return f"{head}\n{needs}\n\n{self.doc}\n\nOptions:{where}\n{options}\n"


REGISTRY: dict[str, Rule] = {}


def rule(code: str, name: str, severity: str, *, needs: Iterable[Signal], options: type = NoOptions,
         category: str | None = None, facts: Iterable[str] = (), without_tensors: Iterable[Signal] = ()):
    """Declare a rule. Checks the declaration at import time so a bad one never ships.

    facts: the expensive weight facts the rule reads (facts.WEIGHT_FACT_GROUPS: "quantiles",
    "correlations", "spectrum"); they are computed while each tensor is read only when such a rule is
    selected (read without being declared, they are still computed, by reading the tensor again).
    without_tensors: needs the rule judges from what opening a checkpoint gives without reading any tensor
    data (names, shapes, steps, the optimizer's param groups: its kind and learning rates); selecting
    only such rules reads no tensor. Tensor facts it reads anyway in some case must be asked for on
    demand (`RunFacts.series_on_demand`), never through `run.series`, which is empty then.
    """
    facts = tuple(facts)
    without_tensors = tuple(without_tensors)
    category = name if category is None else category

    def deco(func):
        if not CODE_RE.match(code):
            raise ValueError(f"bad rule code {code!r}")
        if code in REGISTRY:
            raise ValueError(f"duplicate rule code {code}")
        if any(r.name == name for r in REGISTRY.values()):
            raise ValueError(f"duplicate rule name {name}")
        if not NAME_RE.match(name):
            raise ValueError(f"bad rule name {name!r}")
        if category not in CATEGORIES:
            raise ValueError(f"{code}: unknown category {category!r}")
        Severity.parse(severity)
        for n in needs:
            if not isinstance(n, Signal):
                raise ValueError(f"{code}: needs must be Signal members, got {n!r}")
        if not set(without_tensors) <= set(needs):
            raise ValueError(f"{code}: without_tensors must be some of its needs")
        unknown = [f for f in facts if f not in WEIGHT_FACT_GROUPS]
        if unknown:
            raise ValueError(f"{code}: unknown facts {unknown}; expected some of {WEIGHT_FACT_GROUPS}")
        if not (dataclasses.is_dataclass(options) and options.__dataclass_params__.frozen):
            raise ValueError(f"{code}: options must be a frozen dataclass")
        undocumented = [f.name for f in dataclasses.fields(options) if not f.metadata.get("doc")]
        if undocumented:
            raise ValueError(f"{code}: options without a doc (use opt(default, doc)): {', '.join(undocumented)}")
        sections = doc_sections(func.__doc__ or "")
        missing = [s for s in DOC_SECTIONS if not sections.get(s)]
        if missing:
            raise ValueError(f"{code}: docstring lacks {', '.join(missing)}")
        REGISTRY[code] = Rule(code, name, category, severity, tuple(needs), options, func, facts,
                              without_tensors)
        return func

    return deco


def all_rules() -> list[Rule]:
    from report_gen import rules as _pkg  # noqa: F401  (imports every family module)

    _pkg.load_all()
    return [REGISTRY[c] for c in sorted(REGISTRY)]


def find_rule(code_or_name: str) -> Rule | None:
    key = code_or_name.strip()
    for r in all_rules():
        if r.code == key.upper() or r.name == key.lower():
            return r
    return None
