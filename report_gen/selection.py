"""The configuration resolved once into a rule set.

`resolve_rules` takes the loaded `Config` and the command line's --select/--ignore and returns a frozen
`RuleSet`: which rules run, each with its options object already built and type-checked and its
severity already decided. The engine then only iterates over it; nothing downstream goes back to the
configuration, so a bad option or a selection that runs no rule fails once, before anything is read.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable

from report_gen.config import Config, match_length
from report_gen.core import Finding, InputError
from report_gen.rules.base import Rule, all_rules
from report_gen.vocab import Signal


@dataclass(frozen=True)
class ResolvedRule:
    """One enabled rule with its options object and its configured severity (None: the rule decides)."""

    rule: Rule
    options: Any
    severity: str | None = None

    @property
    def code(self) -> str:
        return self.rule.code

    def severity_of(self, hit_severity: str | None) -> str:
        """A configured severity overrides the hit's own grading, which overrides the rule's default."""
        return self.severity or hit_severity or self.rule.severity


@dataclass(frozen=True)
class RuleSet:
    enabled: tuple[ResolvedRule, ...]
    disabled: tuple[Rule, ...]
    config: Config

    @property
    def needs(self) -> frozenset[Signal]:
        """Every signal some enabled rule can use: facts nobody needs are never computed."""
        return frozenset(n for r in self.enabled for n in r.rule.needs)

    @property
    def tensor_needs(self) -> frozenset[Signal]:
        """The needs some enabled rule judges from checkpoint tensor data (`Rule.without_tensors` left out):
        when none is a checkpoint signal, no tensor is read."""
        return frozenset(n for r in self.enabled for n in r.rule.tensor_needs)

    @property
    def facts(self) -> frozenset[str]:
        """The expensive weight facts some enabled rule declares it reads (computed while reading)."""
        return frozenset(f for r in self.enabled for f in r.rule.facts)

    def wants(self, *signals: Signal) -> bool:
        return bool(self.needs.intersection(signals))

    @property
    def options(self) -> dict[str, Any]:
        """rule code -> its resolved options object (what evidence extraction must read)."""
        return {r.code: r.options for r in self.enabled}

    @property
    def rules_by_code(self) -> dict[str, Rule]:
        return {r.code: r.rule for r in self.enabled}

    def subject_ignored(self, finding: Finding) -> str | None:
        """The per-subject-ignores glob that suppresses this finding, if any."""
        return self.config.subject_ignored(finding, self.rules_by_code)

    def unused_suppressions(self, used_subject_globs: Iterable[str]) -> list[str]:
        used = set(used_subject_globs)
        return self.config.unused_selectors(all_rules()) + [
            f"per-subject-ignores: {g}" for g in self.config.per_subject_ignores if g not in used]


def resolve_rules(cfg: Config, select: list[str] | None = None, ignore: list[str] | None = None) -> RuleSet:
    """Apply --select/--ignore on top of the config and build every enabled rule's options.

    Raises InputError for a --select that matches no rule, a selection that enables no rule (a gate that
    runs no rule would always pass) and for an option of the wrong name or type.
    """
    rules = all_rules()
    if select is not None and not select:
        select = None  # an empty --select (an unset CI variable) means: not given
    if select:
        dead = [s for s in select if not any(match_length(s, r) >= 0 for r in rules)]
        if dead:
            raise InputError(f"--select {','.join(dead)}: matches no rule (see `report-gen rules`); "
                             "a gate that runs no rule would always pass")
    if select is not None or ignore:
        cfg = dataclasses.replace(cfg, select=select if select is not None else cfg.select,
                                  ignore=list(cfg.ignore) + list(ignore or []))
    enabled, disabled = [], []
    for rule in rules:
        if not cfg.is_enabled(rule):
            disabled.append(rule)
            continue
        try:
            options = rule.make_options(cfg.options_for(rule))
        except ValueError as e:
            raise InputError(f"{cfg.source or 'configuration'}: {e}") from None
        enabled.append(ResolvedRule(rule, options, cfg.severity_for(rule)))
    if not enabled:
        raise InputError(f"{cfg.source or 'the command line'}: the selection enables no rule; "
                         "a gate that runs no rule would always pass")
    return RuleSet(tuple(enabled), tuple(disabled), cfg)
