"""The engine: the pipeline as one straight pipe (DESIGN §1). `diagnose()` is the orchestrator.

    config + --select/--ignore --resolve_rules--> RuleSet            (once; bad options fail here)
    paths --discover--> RunSpecs
    RunSpec --readers--> logs, checkpoints, graded problems
            --probe.probe_run (only when a selected rule needs it)--> RunFacts (built once, never mutated)
    RunFacts x RuleSet --evaluate--> findings, suppressed, evaluated, not_evaluated
            --assemble--> report dict (DESIGN §4)
            --baseline.apply_baseline (report -> report; the baseline loaded or diagnosed here)--> report

Facts are lazy (facts/run.py): only what the enabled rules need is computed. The CLI only parses
arguments and calls `diagnose`.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from report_gen import __version__
from report_gen.baseline import apply_baseline
from report_gen.config import Config
from report_gen.core import (Finding, InputError, Problem, judged_runs, jsonable, severity_counts, severity_rank,
                             verdict_for)
from report_gen.facts.run import RunFacts
from report_gen.readers.discovery import RunSpec, discover
from report_gen.readers.run import read_run
from report_gen.readers.signals import build_signals
from report_gen.reportfile import load_report
from report_gen.selection import ResolvedRule, RuleSet, resolve_rules
from report_gen.storage import StorageSettings, stage_inputs
from report_gen.vocab import Signal, missing_reason

log = logging.getLogger("report_gen")


@dataclass
class ProbeSpec:
    """--model/--probe. model None: the probe input is for HF checkpoint folders that probe themselves."""

    model: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    probe_file: str | None = None
    probe_shape: str | None = None
    max_checkpoints: int = 6


@dataclass
class Options:
    config: Config = field(default_factory=Config)
    trust_pickles: bool = False
    probe: ProbeSpec | None = None
    baseline: str | None = None
    select: list[str] | None = None  # CLI --select/--ignore, applied on top of the config
    ignore: list[str] | None = None
    storage: StorageSettings | None = None  # how fsspec URLs among the paths are read (storage.py)
    isolate: bool = False  # --isolate: checkpoints vetted in a limited worker process (readers/isolation.py)


Progress = Callable[[str, int, int], None]
PROBE_SIGNALS = (Signal.PROBE, Signal.PROBE_SERIES, Signal.ATTENTION)


def _noop(msg: str, done: int, total: int) -> None:
    pass


def load_run(spec: RunSpec, opts: Options, progress: Progress = _noop,
             rules: RuleSet | None = None) -> RunFacts:
    """Read one run's files into RunFacts; the readers turn file damage into graded Problems.

    `rules` (the resolved rule set) decides what is worth computing beyond the files themselves: the
    probe runs only when an enabled rule needs activations. Without it, everything is done.
    """
    read = read_run(spec, trust_pickles=opts.trust_pickles, progress=progress, isolate=opts.isolate)
    problems = list(read.problems)
    probe_results, probe_info = [], None
    outcome = None
    if rules is None or rules.wants(*PROBE_SIGNALS):
        if opts.probe is not None and opts.probe.model:
            from report_gen.probe import probe_run

            outcome = probe_run(read.checkpoints, **dataclasses.asdict(opts.probe))
        else:  # an HF checkpoint folder probes itself (attention), with the user's input if given
            from report_gen.hfprobe import probe_hf_run

            given = opts.probe or ProbeSpec()
            outcome = probe_hf_run(read.checkpoints, probe_file=given.probe_file, probe_shape=given.probe_shape,
                                   max_checkpoints=min(given.max_checkpoints, 3))

    if outcome is not None:
        probe_results, probe_info = outcome.results, outcome.info
        problems.extend(outcome.problems)
    return RunFacts(name=spec.name, path=spec.path, events=read.log, signals=build_signals(read.log, opts.config.tags),
                    checkpoints=read.checkpoints, problems=problems, probe=probe_results, probe_info=probe_info)


@dataclass
class Evaluation:
    findings: list[Finding]
    suppressed: list[dict]
    evaluated: list[dict]
    not_evaluated: list[dict]


def evaluate(runs: list[RunFacts], rules: RuleSet) -> Evaluation:
    """Run every enabled rule on every run that has one of the signals it needs."""
    findings: list[Finding] = []
    evaluated: list[dict] = []
    not_evaluated: list[dict] = [{"code": r.code, "name": r.name, "reason": "disabled by configuration"}
                                 for r in rules.disabled]
    for resolved in rules.enabled:
        rule = resolved.rule
        ran, missing = [], []
        for run in runs:
            if not any(n in run.available for n in rule.needs):
                missing.append(run.name)
                continue
            ran.append(run.name)
            try:
                hits = list(rule.func(run, resolved.options))
            except Exception as e:  # noqa: BLE001 - a rule bug must not lose the report
                log.warning("rule %s failed on run %s: %s", rule.code, run.name, e, exc_info=log.isEnabledFor(logging.DEBUG))
                not_evaluated.append({"code": rule.code, "name": rule.name, "runs": [run.name],
                                      "reason": f"internal error in the rule: {type(e).__name__}: {e}"})
                continue
            findings.extend(_complete(resolved, run.name, h) for h in hits)
        if ran:
            evaluated.append({"code": rule.code, "name": rule.name, "category": rule.category, "runs": ran})
        if missing and rule.needs != (Signal.INPUT_PROBLEMS,):
            reason, enable = missing_reason(rule.needs)
            not_evaluated.append({"code": rule.code, "name": rule.name, "runs": missing,
                                  "reason": reason, "enable": enable})
    not_evaluated.sort(key=lambda d: d["code"])  # one entry order, whatever made the rule not run
    kept, suppressed = [], []
    for f in findings:
        glob = rules.subject_ignored(f)
        if glob is None:
            kept.append(f)
        else:
            suppressed.append({**f.to_dict(), "reason": f"per-subject-ignores: {glob}"})
    return Evaluation(sort_findings(kept), suppressed, evaluated, not_evaluated)


def _complete(resolved: ResolvedRule, run: str, hit) -> Finding:
    rule = resolved.rule
    return Finding(code=rule.code, name=rule.name, category=rule.category, severity=resolved.severity_of(hit.severity),
                   run=run, subject=hit.subject, message=hit.message, evidence=dict(hit.evidence),
                   suggestion=hit.suggestion or rule.suggestion, plot=hit.plot)


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (-severity_rank(f.severity), f.run, f.code, f.subject))


def diagnose(paths: list[str], opts: Options, progress: Progress = _noop) -> dict[str, Any]:
    """The whole pipeline. Raises InputError for unusable input (exit 2); file damage is a finding."""
    rules = resolve_rules(opts.config, opts.select, opts.ignore)
    base = _baseline_report(opts.baseline, opts) if opts.baseline else None
    t0 = time.perf_counter()
    staged = stage_inputs(paths, opts.storage, progress)  # URLs -> a local view of the cache; local paths as given
    specs = discover(staged.paths)
    runs = []
    for i, spec in enumerate(specs):
        progress(f"reading {spec.name}", i, len(specs))
        runs.append(load_run(spec, opts, progress, rules))
    staged.attach(runs)  # an object that could not be fetched is a Problem of its run (I101 reports it)
    if opts.probe is not None and not opts.probe.model and not any(r.probe_info for r in runs) \
            and rules.wants(*PROBE_SIGNALS):
        raise InputError("--probe/--probe-shape need --model MODULE:FACTORY, unless a run is an HF checkpoint folder "
                         "(config.json + weights), which probes itself; none is here")
    t_read = time.perf_counter()
    for r in runs:  # facts are lazy; computing the needed ones here keeps the timing honest
        r.precompute(rules.needs)
    t_facts = time.perf_counter()
    result = evaluate(runs, rules)
    t_rules = time.perf_counter()
    report = assemble(runs, result, rules, opts)
    if base is not None:
        apply_baseline(report, base, label=opts.baseline)
    t_end = time.perf_counter()
    report["timing"] = {"read_s": round(t_read - t0, 3), "facts_s": round(t_facts - t_read, 3),
                        "rules_s": round(t_rules - t_facts, 3), "details_s": round(t_end - t_rules, 3)}
    return staged.publish(report)  # the report names the URLs, never the cache


def _baseline_report(path: str, opts: Options) -> dict[str, Any]:
    """The baseline as a report: a report.json is read as is, a run folder is diagnosed now."""
    p = Path(path)
    if p.suffix.lower() == ".json":
        return load_report(p)
    if not p.exists():
        raise InputError(f"{path}: baseline not found (give a run folder or a report.json)")
    return diagnose([path], dataclasses.replace(opts, baseline=None))


def assemble(runs: list[RunFacts], result: Evaluation, rules: RuleSet, opts: Options) -> dict[str, Any]:
    from report_gen.evidence import build_details

    findings = result.findings
    details = {"runs": {r.name: build_details(r, findings, rules.options) for r in runs}}
    counts = severity_counts(findings)
    judged = judged_runs(result.evaluated)
    inputs = []
    for r in runs:
        first, last = r.step_range
        inputs.append({"name": r.name, "path": r.path, "event_files": len(r.events.files),
                       "checkpoints": len(r.checkpoints),
                       "first_step": first, "last_step": last, "problems": [p.to_dict() for p in r.problems],
                       "judged": r.name in judged,
                       "verdict": verdict_for(severity_counts([f for f in findings if f.run == r.name]),
                                              judged=r.name in judged)})
        if r.probe_info:
            inputs[-1]["probe"] = jsonable(r.probe_info)
    used_globs = [d["reason"].split(": ", 1)[1] for d in result.suppressed]
    return {
        "schema_version": 1,
        "generator": {"name": "report_gen", "version": __version__},
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "inputs": {"runs": inputs, "trust_pickles": bool(opts.trust_pickles),
                   "config": rules.config.source, "probe": jsonable(opts.probe.__dict__) if opts.probe else None},
        "summary": {"verdict": verdict_for(counts, judged=all(r.name in judged for r in runs)), "counts": counts},
        "findings": [f.to_dict() for f in findings],
        "not_evaluated": result.not_evaluated,
        "evaluated": result.evaluated,
        "suppressed": result.suppressed,
        "unused_suppressions": rules.unused_suppressions(used_globs),
        "baseline": None,
        "details": details,
    }


def exit_code(report: dict[str, Any], fail_on: str, fail_on_persisting: bool = False,
              fail_on_unknown: bool = False) -> int:
    """0 when no finding at or above fail_on counts, else 1.

    With a baseline only new findings count, unless fail_on_persisting (then persisting ones count too;
    resolved ones never do). fail_on_unknown: also 1 when the verdict is `unknown` (nothing judged).
    """
    if fail_on_unknown and report.get("summary", {}).get("verdict") == "unknown":
        return 1
    if fail_on == "never":
        return 0
    levels = {"error": ("error",), "warning": ("error", "warning")}[fail_on]
    counted = ("new", "persisting") if fail_on_persisting else ("new",)
    with_baseline = report.get("baseline") is not None
    for f in report["findings"]:
        if f["severity"] in levels and (not with_baseline or f.get("status", "new") in counted):
            return 1
    return 0
