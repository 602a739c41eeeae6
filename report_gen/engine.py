"""The engine: paths → runs → facts → rules → suppression → baseline → report dict (DESIGN §4).

`diagnose()` is the whole pipeline; the CLI only parses arguments and calls it.
"""
from __future__ import annotations

import datetime as _dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from report_gen import __version__
from report_gen.config import Config, match_length
from report_gen.core import Finding, InputError, Problem, ProblemKind, jsonable, severity_counts, severity_rank, verdict_for
from report_gen.facts.run import RunFacts
from report_gen.readers.discovery import RunSpec, discover
from report_gen.readers.run import read_run
from report_gen.readers.signals import build_signals
from report_gen.rules.base import SIGNALS, Rule, all_rules

log = logging.getLogger("report_gen")


@dataclass
class ProbeSpec:
    model: str
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


Progress = Callable[[str, int, int], None]


def _noop(msg: str, done: int, total: int) -> None:
    pass


def load_run(spec: RunSpec, opts: Options, progress: Progress = _noop) -> RunFacts:
    """Read one run's files into RunFacts; the readers turn file damage into graded Problems."""
    read = read_run(spec, trust_pickles=opts.trust_pickles, progress=progress)
    signals = build_signals(read.log, opts.config.tags)
    run = RunFacts(name=spec.name, path=spec.path, events=read.log, signals=signals, checkpoints=read.checkpoints,
                   problems=read.problems)
    if opts.probe is not None:
        _run_probe(run, opts.probe)
    return run


def _run_probe(run: RunFacts, spec: ProbeSpec) -> None:
    from report_gen import probe as probe_mod

    inputs, description = probe_mod.load_probe_input(spec.probe_file, spec.probe_shape)
    build = probe_mod.resolve_factory(spec.model, spec.model_kwargs)  # the model file is imported once
    model = build()  # fails early, before any checkpoint is read
    if not run.checkpoints:
        run.probe = [(None, probe_mod.probe(model, inputs, description=description))]
        run.probe_info = {"model": spec.model, "input": description, "checkpoints": 0,
                          "note": "no checkpoint: the model's initial weights were probed"}
        return
    # lazy loaders: probe_series picks an evenly spaced subset and only those checkpoints are read
    states = [(c.step, lambda c=c: {n: c.load(n) for n in c.tensors}) for c in run.checkpoints]
    results = probe_mod.probe_series(build, states, inputs,
                                     max_checkpoints=spec.max_checkpoints, description=description)
    run.probe = results
    load_report = results[-1][1].load_report if results else None
    run.probe_info = {"model": spec.model, "input": description, "checkpoints": len(results),
                      "load_report": load_report}
    if load_report and (load_report.get("missing") or load_report.get("unexpected")):
        run.problems.append(Problem(file=run.checkpoints[-1].path, kind=ProblemKind.STATE_DICT_MISMATCH, severity="warning",
                                    message=f"loading into {spec.model}: {len(load_report.get('missing', []))} missing, "
                                            f"{len(load_report.get('unexpected', []))} unexpected keys "
                                            f"(e.g. {(load_report.get('missing') or load_report.get('unexpected'))[:3]})"))


def effective_config(opts: Options) -> Config:
    cfg = opts.config
    if opts.select is not None and not opts.select:
        opts = Options(**{**opts.__dict__, "select": None})  # an empty --select (unset CI variable) = not given
    if opts.select:
        rules = all_rules()
        dead = [s for s in opts.select if not any(match_length(s, r) >= 0 for r in rules)]
        if dead:
            raise InputError(f"--select {','.join(dead)}: matches no rule (see `report-gen rules`); "
                             "a gate that runs no rule would always pass")
    if opts.select is not None or opts.ignore:
        import dataclasses

        cfg = dataclasses.replace(cfg, select=opts.select if opts.select is not None else cfg.select,
                                  ignore=list(cfg.ignore) + list(opts.ignore or []))
    if not any(cfg.is_enabled(r) for r in all_rules()):
        raise InputError(f"{cfg.source or 'the command line'}: the selection enables no rule; "
                         "a gate that runs no rule would always pass")
    return cfg


def evaluate(runs: list[RunFacts], cfg: Config) -> tuple[list[Finding], list[dict], list[dict], list[dict]]:
    """Run every enabled rule on every run. Returns findings, suppressed, evaluated, not_evaluated."""
    rules = all_rules()
    by_code = {r.code: r for r in rules}
    findings: list[Finding] = []
    suppressed: list[dict] = []
    evaluated: list[dict] = []
    not_evaluated: list[dict] = []
    for rule in rules:
        if not cfg.is_enabled(rule):
            not_evaluated.append({"code": rule.code, "name": rule.name, "reason": "disabled by configuration"})
            continue
        try:
            opts = rule.make_options(cfg.options_for(rule))
        except ValueError as e:
            raise InputError(f"{cfg.source or 'configuration'}: {e}") from None
        ran, missing = [], []
        for run in runs:
            if not any(n in run.available for n in rule.needs):
                missing.append(run.name)
                continue
            ran.append(run.name)
            try:
                hits = list(rule.func(run, opts))
            except Exception as e:  # noqa: BLE001 - a rule bug must not lose the report
                log.warning("rule %s failed on run %s: %s", rule.code, run.name, e, exc_info=log.isEnabledFor(logging.DEBUG))
                not_evaluated.append({"code": rule.code, "name": rule.name, "runs": [run.name],
                                      "reason": f"internal error in the rule: {type(e).__name__}: {e}"})
                continue
            for h in hits:
                findings.append(_complete(rule, run.name, h, cfg))
        if ran:
            evaluated.append({"code": rule.code, "name": rule.name, "category": rule.category, "runs": ran})
        if missing and rule.needs != ("input_problems",):
            first = rule.needs[0]
            reason = "; ".join(dict.fromkeys(SIGNALS[n][0] for n in rule.needs)) if len(rule.needs) > 1 else SIGNALS[first][0]
            not_evaluated.append({"code": rule.code, "name": rule.name, "runs": missing,
                                  "reason": reason, "enable": SIGNALS[first][1]})
    kept = []
    for f in findings:
        glob = cfg.subject_ignored(f, by_code)
        if glob is not None:
            d = f.to_dict()
            d["reason"] = f"per-subject-ignores: {glob}"
            suppressed.append(d)
        else:
            kept.append(f)
    return kept, suppressed, evaluated, not_evaluated


def _complete(rule: Rule, run: str, hit, cfg: Config) -> Finding:
    # a configured severity overrides the rule's and the hit's own grading
    sev = cfg.severity_for(rule) or hit.severity or rule.severity
    return Finding(code=rule.code, name=rule.name, category=rule.category, severity=sev, run=run,
                   subject=hit.subject, message=hit.message, evidence=dict(hit.evidence),
                   suggestion=hit.suggestion or rule.suggestion, plot=hit.plot)


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (-severity_rank(f.severity), f.run, f.code, f.subject))


def diagnose(paths: list[str], opts: Options, progress: Progress = _noop) -> dict[str, Any]:
    """The whole pipeline. Raises InputError for unusable input (exit 2); file damage is a finding."""
    t0 = time.perf_counter()
    specs = discover(paths)
    runs = []
    for i, spec in enumerate(specs):
        progress(f"reading {spec.name}", i, len(specs))
        runs.append(load_run(spec, opts, progress))
    t_read = time.perf_counter()
    for r in runs:  # facts are lazy; computing the expensive ones here keeps the timing honest
        r.series, r.grad_estimates  # noqa: B018
    t_facts = time.perf_counter()
    cfg = effective_config(opts)
    findings, suppressed, evaluated, not_evaluated = evaluate(runs, cfg)
    findings = sort_findings(findings)
    t_rules = time.perf_counter()
    report = assemble(runs, findings, suppressed, evaluated, not_evaluated, cfg, opts)
    if opts.baseline:
        from report_gen.baseline import apply_baseline

        apply_baseline(report, opts.baseline, opts)
    t_end = time.perf_counter()
    report["timing"] = {"read_s": round(t_read - t0, 3), "facts_s": round(t_facts - t_read, 3),
                        "rules_s": round(t_rules - t_facts, 3), "details_s": round(t_end - t_rules, 3)}
    return report


def assemble(runs, findings, suppressed, evaluated, not_evaluated, cfg: Config, opts: Options) -> dict[str, Any]:
    from report_gen.evidence import build_details

    details = {"runs": {r.name: build_details(r, findings) for r in runs}}
    counts = severity_counts(findings)
    inputs = []
    for r in runs:
        first, last = r.step_range
        inputs.append({"name": r.name, "path": r.path, "event_files": len(r.events.files),
                       "checkpoints": len(r.checkpoints),
                       "first_step": first, "last_step": last, "problems": [p.to_dict() for p in r.problems]})
        if r.probe_info:
            inputs[-1]["probe"] = jsonable(r.probe_info)
    report = {
        "schema_version": 1,
        "generator": {"name": "report_gen", "version": __version__},
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "inputs": {"runs": inputs, "trust_pickles": bool(opts.trust_pickles),
                   "config": cfg.source, "probe": jsonable(opts.probe.__dict__) if opts.probe else None},
        "summary": {"verdict": verdict_for(counts), "counts": counts},
        "findings": [f.to_dict() for f in findings],
        "not_evaluated": not_evaluated,
        "evaluated": evaluated,
        "suppressed": suppressed,
        "unused_suppressions": cfg.unused_selectors(all_rules()) + _unmatched_subject_ignores(cfg, suppressed),
        "baseline": None,
        "details": details,
    }
    return report


def _unmatched_subject_ignores(cfg: Config, suppressed: list[dict]) -> list[str]:
    used = {d["reason"].split(": ", 1)[1] for d in suppressed if d.get("reason", "").startswith("per-subject-ignores")}
    return [f"per-subject-ignores: {g}" for g in cfg.per_subject_ignores if g not in used]


def exit_code(report: dict[str, Any], fail_on: str, fail_on_persisting: bool = False) -> int:
    """0 when no finding at or above fail_on counts, else 1.

    With a baseline only new findings count, unless fail_on_persisting (then persisting ones count too;
    resolved ones never do).
    """
    if fail_on == "never":
        return 0
    levels = {"error": ("error",), "warning": ("error", "warning")}[fail_on]
    counted = ("new", "persisting") if fail_on_persisting else ("new",)
    with_baseline = report.get("baseline") is not None
    for f in report["findings"]:
        if f["severity"] in levels and (not with_baseline or f.get("status", "new") in counted):
            return 1
    return 0
