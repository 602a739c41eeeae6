"""The engine: the pipeline as one straight pipe (DESIGN §1). `diagnose()` is the orchestrator.

    config + --select/--ignore --resolve_rules--> RuleSet            (once; bad options fail here)
    paths --discover--> RunSpecs
    for each RunSpec (diagnose_run; in a process pool when several runs make it pay, see parallel.py):
        --readers--> logs, checkpoints, graded problems --split_models--> one run per model
        --probe.probe_run (only when a selected rule needs it)--> RunFacts (built once, never mutated)
        RunFacts x RuleSet --evaluate_run--> findings, suppressed, rule status --evidence--> details
    RunReports (in run order) --merge_evaluations--> findings, suppressed, evaluated, not_evaluated
            --assemble_reports--> report dict (DESIGN §4)
            --baseline.apply_baseline (report -> report; the baseline loaded or diagnosed here)--> report

Facts are lazy (facts/run.py): only what the enabled rules need is computed. The CLI only parses
arguments and calls `diagnose`.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from report_gen import __version__
from report_gen.baseline import apply_baseline
from report_gen.config import Config
from report_gen.core import (Finding, InputError, Problem, ProblemKind, judged_runs, jsonable, severity_counts,
                             severity_rank, verdict_for)
from report_gen.facts.run import RunFacts
from report_gen.readers.discovery import RunSpec, discover
from report_gen.readers.run import RunInputs, read_run, split_models
from report_gen.readers.signals import build_signals
from report_gen.readers.types import RunLog
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
    jobs: int | None = None  # worker processes (None: runtime.configure's plan, one per available core)
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
    probe runs only when an enabled rule needs activations. Without it, everything is done. The run is
    taken as discovery gave it; `load_runs` also splits the checkpoints of different models apart.
    """
    read = _read(spec, opts, progress, rules)
    return _facts(spec, read, opts, rules)


def load_runs(spec: RunSpec, opts: Options, progress: Progress = _noop,
              rules: RuleSet | None = None) -> list[RunFacts]:
    """`load_run`, one RunFacts per model when the run's checkpoints hold several (`readers.run.split_models`)."""
    read = _read(spec, opts, progress, rules)
    return [_facts(part, inputs, opts, rules) for part, inputs in split_models(spec, read)]


def _read(spec: RunSpec, opts: Options, progress: Progress, rules: RuleSet | None) -> RunInputs:
    tensors = rules is None or RunFacts.needs_checkpoint_facts(rules.tensor_needs)
    return read_run(spec, trust_pickles=opts.trust_pickles, progress=progress, tensors=tensors,
                    isolate=opts.isolate)


def _facts(spec: RunSpec, read: RunInputs, opts: Options, rules: RuleSet | None) -> RunFacts:
    problems = list(read.problems)
    probe_results, probe_info = [], None
    outcome = None
    if rules is None or rules.wants(*PROBE_SIGNALS):
        if opts.probe is not None and opts.probe.model:
            from report_gen.probe import probe_run

            outcome = probe_run(read.checkpoints, **dataclasses.asdict(opts.probe))
        elif read.checkpoints:  # an HF checkpoint folder probes itself (attention), with the user's input if given
            from report_gen.hfprobe import probe_hf_run  # imports torch: not for a run of logs only

            given = opts.probe or ProbeSpec()
            outcome = probe_hf_run(read.checkpoints, probe_file=given.probe_file, probe_shape=given.probe_shape,
                                   max_checkpoints=min(given.max_checkpoints, 3))

    if outcome is not None:
        probe_results, probe_info = outcome.results, outcome.info
        problems.extend(outcome.problems)
    signals = build_signals(read.log, opts.config.tags, opts.config.roles)
    return RunFacts(name=spec.name, path=spec.path, events=read.log, signals=signals,
                    checkpoints=read.checkpoints, problems=problems, probe=probe_results, probe_info=probe_info,
                    needs=rules.tensor_needs if rules is not None else None,
                    eager_facts=rules.facts if rules is not None else frozenset(), trust_pickles=opts.trust_pickles)


@dataclass
class Evaluation:
    findings: list[Finding]
    suppressed: list[dict]
    evaluated: list[dict]
    not_evaluated: list[dict]


@dataclass
class RunEvaluation:
    """The rules on ONE run: per enabled rule (by index in rules.enabled) "ran", "missing" or an error
    message, the run's findings (hit order) and its suppressed findings."""

    name: str
    status: list[str]
    findings: list[Finding]
    suppressed: list[tuple[int, dict]]  # (rule index, suppressed finding)


def evaluate_run(run: RunFacts, rules: RuleSet) -> RunEvaluation:
    """Run every enabled rule that has one of the signals it needs on one run."""
    status, findings, suppressed = [], [], []
    for index, resolved in enumerate(rules.enabled):
        rule = resolved.rule
        if not any(n in run.available for n in rule.needs):
            status.append("missing")
            continue
        try:
            hits = list(rule.func(run, resolved.options))
        except Exception as e:  # noqa: BLE001 - a rule bug must not lose the report
            log.warning("rule %s failed on run %s: %s", rule.code, run.name, e, exc_info=log.isEnabledFor(logging.DEBUG))
            status.append(f"internal error in the rule: {type(e).__name__}: {e}")
            continue
        status.append("ran")
        for f in (_complete(resolved, run.name, h) for h in hits):
            glob = rules.subject_ignored(f)
            if glob is None:
                findings.append(f)
            else:
                suppressed.append((index, {**f.to_dict(), "reason": f"per-subject-ignores: {glob}"}))
    return RunEvaluation(run.name, status, findings, suppressed)


def merge_evaluations(evaluations: list[RunEvaluation], rules: RuleSet) -> Evaluation:
    """The per-run evaluations as one (rule order, then run order, as if evaluated rule by rule)."""
    evaluated: list[dict] = []
    not_evaluated: list[dict] = [{"code": r.code, "name": r.name, "reason": "disabled by configuration"}
                                 for r in rules.disabled]
    for index, resolved in enumerate(rules.enabled):
        rule = resolved.rule
        ran = [e.name for e in evaluations if e.status[index] == "ran"]
        missing = [e.name for e in evaluations if e.status[index] == "missing"]
        for e in evaluations:
            if e.status[index] not in ("ran", "missing"):
                not_evaluated.append({"code": rule.code, "name": rule.name, "runs": [e.name], "reason": e.status[index]})
        if ran:
            evaluated.append({"code": rule.code, "name": rule.name, "category": rule.category, "runs": ran})
        if missing and rule.needs != (Signal.INPUT_PROBLEMS,):
            reason, enable = missing_reason(rule.needs)
            not_evaluated.append({"code": rule.code, "name": rule.name, "runs": missing,
                                  "reason": reason, "enable": enable})
    not_evaluated.sort(key=lambda d: d["code"])  # one entry order, whatever made the rule not run
    suppressed = [d for _, _, d in sorted(((i, k, d) for k, e in enumerate(evaluations) for i, d in e.suppressed),
                                          key=lambda t: (t[0], t[1]))]
    by_rule = {r.code: i for i, r in enumerate(rules.enabled)}
    findings = sorted((f for e in evaluations for f in e.findings), key=lambda f: by_rule.get(f.code, 0))
    return Evaluation(sort_findings(findings), suppressed, evaluated, not_evaluated)


def evaluate(runs: list[RunFacts], rules: RuleSet) -> Evaluation:
    """Run every enabled rule on every run that has one of the signals it needs."""
    return merge_evaluations([evaluate_run(r, rules) for r in runs], rules)


def _complete(resolved: ResolvedRule, run: str, hit) -> Finding:
    rule = resolved.rule
    return Finding(code=rule.code, name=rule.name, category=rule.category, severity=resolved.severity_of(hit.severity),
                   run=run, subject=hit.subject, message=hit.message, evidence=dict(hit.evidence),
                   suggestion=hit.suggestion or rule.suggestion, plot=hit.plot)


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (-severity_rank(f.severity), f.run, f.code, f.subject))


@dataclass
class RunReport:
    """Everything one run contributes to the report: compact (numbers, findings, details), so a pool
    worker can send it back. `inputs` is the run's inputs entry without its verdict (set on merge)."""

    name: str
    inputs: dict[str, Any]
    evaluation: RunEvaluation
    details: dict[str, Any]
    timing: dict[str, float]


def run_inputs(run: RunFacts) -> dict[str, Any]:
    """One run's entry of report["inputs"]["runs"], without its verdict (`assemble_reports` adds it)."""
    first, last = run.step_range
    inputs = {"name": run.name, "path": run.path, "event_files": len(run.events.files),
              "checkpoints": len(run.checkpoints), "first_step": first, "last_step": last,
              "problems": [p.to_dict() for p in run.problems],
              "series": [u.to_dict() for u in run.signals.read],
              "ignored": [u.to_dict() for u in run.signals.ignored],
              "weights_at": sorted({c.weights_at for c in run.checkpoints})}
    if run.probe_info:
        inputs["probe"] = jsonable(run.probe_info)
    return inputs


#: keys of an inputs entry that come after "judged" and "verdict" (the report's key order, DESIGN §4)
_AFTER_VERDICT = ("series", "ignored", "weights_at", "probe")


def diagnose_run(spec: RunSpec, opts: Options, rules: RuleSet, progress: Progress = _noop,
                 problems: Sequence[Problem] = ()) -> list[RunReport]:
    """Read, compute facts, evaluate and extract the evidence of ONE discovered run: one RunReport per
    model its checkpoints hold (`load_runs`), the run with the logs first. `problems` are the run's
    problems met before reading it (staging a remote input); they go to that first report."""
    from report_gen.evidence import build_details

    t0 = time.perf_counter()
    runs = load_runs(spec, opts, progress, rules)
    runs[0].problems.extend(problems)
    reports = []
    for i, run in enumerate(runs):
        t1 = time.perf_counter()
        run.precompute(rules.tensor_needs)  # facts are lazy; computing the needed ones here keeps the timing honest
        t2 = time.perf_counter()
        evaluation = evaluate_run(run, rules)
        t3 = time.perf_counter()
        details = build_details(run, evaluation.findings, rules.options)
        inputs = run_inputs(run)
        t4 = time.perf_counter()
        reports.append(RunReport(run.name, inputs, evaluation, details,
                                 {"read_s": t1 - t0 if i == 0 else 0.0, "facts_s": t2 - t1, "rules_s": t3 - t2,
                                  "details_s": t4 - t3}))
    return reports


def _crashed_run(spec: RunSpec, rules: RuleSet, message: str, problems: Sequence[Problem] = ()) -> RunReport:
    """The report of a run whose worker died: one Problem (after those met before reading the run), and
    no rule could look at anything else."""
    problem = Problem(file=spec.path, kind=ProblemKind.WORKER_CRASHED, message=f"{spec.path}: {message}; "
                      "the run was not diagnosed (run again with --jobs 1 to see the failure)")
    run = RunFacts(name=spec.name, path=spec.path, events=RunLog.empty(), signals=build_signals(RunLog.empty()),
                   problems=[*problems, problem], needs=rules.tensor_needs)
    evaluation = evaluate_run(run, rules)  # only the input-integrity rule has something to look at
    inputs = {**run_inputs(run), "event_files": len(spec.event_files), "checkpoints": len(spec.checkpoints)}
    return RunReport(spec.name, inputs, evaluation, {}, {})


def _diagnose_in_worker(task: tuple[RunSpec, Options, RuleSet, list[Problem]]) -> list[RunReport]:
    spec, opts, rules, problems = task
    return diagnose_run(spec, opts, rules, problems=problems)


def _run_bytes(spec: RunSpec) -> int:
    total = 0
    for path in list(spec.event_files) + list(spec.checkpoints):
        path = path[0] if isinstance(path, tuple) else path
        try:
            total += os.path.getsize(path) if not os.path.isdir(path) else sum(
                e.stat().st_size for e in os.scandir(path) if e.is_file())
        except OSError:
            pass
    return total


def diagnose_runs(specs: list[RunSpec], opts: Options, rules: RuleSet, progress: Progress = _noop,
                  problems: Sequence[Sequence[Problem]] | None = None) -> list[RunReport]:
    """Every run's report, in a process pool when several runs make it pay (runtime plan, parallel).
    `problems`: per run, the problems met before reading it (see diagnose_run)."""
    from report_gen import parallel, runtime

    before = [list(p) for p in problems] if problems is not None else [[] for _ in specs]
    plan = runtime.ensure_configured(opts.jobs)
    if parallel.worth_a_pool(sum(_run_bytes(s) for s in specs), len(specs), plan.jobs):
        progress(f"diagnosing {len(specs)} runs in {min(plan.jobs, len(specs))} processes", 0, len(specs))
        threads = max(1, plan.cores // min(plan.jobs, len(specs)))
        outcomes = parallel.run_tasks(_diagnose_in_worker, [(s, opts, rules, p) for s, p in zip(specs, before)],
                                      plan.jobs, threads)
        return [r for s, o, p in zip(specs, outcomes, before)
                for r in (o if not isinstance(o, parallel.Crashed) else [_crashed_run(s, rules, o.message, p)])]
    reports = []
    for i, spec in enumerate(specs):
        progress(f"reading {spec.name}", i, len(specs))
        reports.extend(diagnose_run(spec, opts, rules, progress, before[i]))
    return reports


def diagnose(paths: list[str], opts: Options, progress: Progress = _noop) -> dict[str, Any]:
    """The whole pipeline. Raises InputError for unusable input (exit 2); file damage is a finding."""
    rules = resolve_rules(opts.config, opts.select, opts.ignore)
    base = _baseline_report(opts.baseline, opts) if opts.baseline else None
    t0 = time.perf_counter()
    staged = stage_inputs(paths, opts.storage, progress)  # URLs -> a local view of the cache; local paths as given
    specs = discover(staged.paths)
    # an object that could not be fetched is a Problem of its run (I101 reports it)
    reports = diagnose_runs(specs, opts, rules, progress, staged.problems_of([s.path for s in specs]))
    if opts.probe is not None and not opts.probe.model and not any("probe" in r.inputs for r in reports) \
            and rules.wants(*PROBE_SIGNALS):
        raise InputError("--probe/--probe-shape need --model MODULE:FACTORY, unless a run is an HF checkpoint folder "
                         "(config.json + weights), which probes itself; none is here")
    t1 = time.perf_counter()
    result = merge_evaluations([r.evaluation for r in reports], rules)
    report = assemble_reports(reports, result, rules, opts)
    if base is not None:
        apply_baseline(report, base, label=opts.baseline)
    t_end = time.perf_counter()
    timing = {k: round(sum(r.timing.get(k, 0.0) for r in reports), 3)
              for k in ("read_s", "facts_s", "rules_s", "details_s")}
    timing["details_s"] = round(timing["details_s"] + (t_end - t1), 3)
    timing["wall_s"] = round(t_end - t0, 3)
    report["timing"] = timing
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
    """The report of runs already evaluated together (`evaluate`); `diagnose` goes run by run."""
    from report_gen.evidence import build_details

    reports = [RunReport(r.name, run_inputs(r), RunEvaluation(r.name, [], [], []),
                         build_details(r, result.findings, rules.options), {}) for r in runs]
    return assemble_reports(reports, result, rules, opts)


def assemble_reports(reports: list[RunReport], result: Evaluation, rules: RuleSet, opts: Options) -> dict[str, Any]:
    findings = result.findings
    details = {"runs": {r.name: r.details for r in reports}}
    counts = severity_counts(findings)
    judged = judged_runs(result.evaluated)
    inputs = []
    for r in reports:
        entry = {k: v for k, v in r.inputs.items() if k not in _AFTER_VERDICT}
        entry["judged"] = r.name in judged
        entry["verdict"] = verdict_for(severity_counts([f for f in findings if f.run == r.name]), judged=r.name in judged)
        entry.update({k: r.inputs[k] for k in _AFTER_VERDICT if k in r.inputs})
        inputs.append(entry)
    used_globs = [d["reason"].split(": ", 1)[1] for d in result.suppressed]
    return {
        "schema_version": 1,
        "generator": {"name": "report_gen", "version": __version__},
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "inputs": {"runs": inputs, "trust_pickles": bool(opts.trust_pickles),
                   "config": rules.config.source, "probe": jsonable(opts.probe.__dict__) if opts.probe else None},
        "summary": {"verdict": verdict_for(counts, judged=all(r.name in judged for r in reports)), "counts": counts},
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
