"""`report-gen` command line (DESIGN §3). Thin: parse arguments, call the engine, pick the exit code.

Exit codes: 0 = no finding at or above --fail-on, 1 = findings at or above it, 2 = usage or input
error (one line on stderr, no traceback; -v shows the traceback of an internal error).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from report_gen import __version__
from report_gen.core import REPORT_FORMATS, InputError

FORMATS = REPORT_FORMATS


def _formats(text: str) -> list[str]:
    fmts = [f.strip().lower() for f in text.split(",") if f.strip()]
    fmts = ["md" if f == "markdown" else f for f in fmts]
    bad = [f for f in fmts if f not in FORMATS]
    if bad or not fmts:
        raise argparse.ArgumentTypeError(f"unknown format(s) {', '.join(bad) or text!r}; choose from html, md, json")
    return fmts


def _jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--jobs must be a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"--jobs must be at least 1, got {n}")
    return n


def _codes(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="report-gen", description="Post-hoc diagnostic reports for PyTorch training runs.")
    p.add_argument("--version", action="version", version=f"report-gen {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("diagnose", help="diagnose run folders, event files or checkpoints")
    d.add_argument("paths", nargs="+", metavar="PATH")
    d.add_argument("-o", "--out", default="reports/latest", help="output folder (default: reports/latest)")
    d.add_argument("--format", type=_formats, default=list(FORMATS), help="html,md,json (default: all)")
    d.add_argument("--baseline", help="baseline run folder or report.json to compare against")
    _rule_selection(d)
    d.add_argument("--fail-on", choices=("error", "warning", "never"),
                   help="exit 1 on a finding at or above this level (default: error); with --baseline only "
                        "new findings count")
    d.add_argument("--fail-on-unknown", action="store_true",
                   help="also exit 1 when the verdict is UNKNOWN: nothing about the training could be judged")
    d.add_argument("--fail-on-persisting", action="store_true",
                   help="with --baseline, let findings already in the baseline count for --fail-on too")
    d.add_argument("--model", help="MODULE:FACTORY (or path/to/file.py:FACTORY) to probe activations post hoc")
    d.add_argument("--model-kwargs", default="{}", help="JSON keyword arguments for the factory")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--probe", help="probe input: a saved tensor (.pt), a dict of tensors, or .npy (without --model: "
                                   "token ids for HF checkpoint folders, which probe themselves)")
    g.add_argument("--probe-shape", help="synthetic seeded probe input of this shape, e.g. 8,3,32,32 (HF folders: N,L "
                                         "token ids)")
    d.add_argument("--probe-max-checkpoints", type=int, default=6, help="checkpoints probed, evenly spaced (6)")
    _pickle_policy(d)
    d.add_argument("--github-summary", action="store_true", help="append the Markdown to $GITHUB_STEP_SUMMARY")
    d.add_argument("-j", "--jobs", type=_jobs, default=None,
                   help="worker processes for independent runs and files (default: the cores available to this "
                        "process: affinity and cgroup quota); torch/BLAS threads are shared so that jobs x threads "
                        "never exceeds the cores")
    _storage_arguments(d)
    _verbosity(d)

    r = sub.add_parser("rules", help="list the rules, or `rules explain CODE`")
    r.add_argument("action", nargs="?", choices=("list", "explain"), default="list")
    r.add_argument("code", nargs="?")
    r.add_argument("--json", action="store_true", help="machine-readable list")

    rr = sub.add_parser("render", help="re-render a report.json without the run")
    rr.add_argument("report", metavar="REPORT_JSON")
    rr.add_argument("-o", "--out", required=True)
    rr.add_argument("--format", type=_formats, default=["html", "md"])
    _verbosity(rr)

    dm = sub.add_parser("demo", help="diagnose the bundled sample runs into ./reports/demo")
    dm.add_argument("-o", "--out", default="reports/demo")
    _verbosity(dm)

    sw = sub.add_parser("sweep", help="diagnose many runs in parallel: an index page and one report per run")
    sw.add_argument("paths", nargs="+", metavar="PATH_OR_URL", help="sweep folders or URLs (s3://, gs://, ...)")
    sw.add_argument("-o", "--out", required=True, help="output folder: index.html, index.md, sweep.json, runs/")
    sw.add_argument("--jobs", type=int, help="local: worker processes (default: the cores this process may use); "
                                             "dask: runs in flight (default: the cluster's threads)")
    sw.add_argument("--engine", choices=("local", "dask"), default="local")
    sw.add_argument("--scheduler", help="dask.distributed scheduler address, e.g. tcp://10.0.0.5:8786 "
                                        "(default: $DASK_SCHEDULER_ADDRESS)")
    sw.add_argument("--format", type=_formats, default=["html", "json"], help="per-run reports (default: html,json)")
    _rule_selection(sw)
    sw.add_argument("--fail-on", choices=("error", "warning", "never"),
                    help="exit 1 when any run has a finding at or above this level, or could not be diagnosed "
                         "(default: error)")
    sw.add_argument("--fail-on-unknown", action="store_true",
                    help="also exit 1 when a run's verdict is UNKNOWN: nothing about its training could be judged")
    _pickle_policy(sw)
    _storage_arguments(sw)
    _verbosity(sw)
    return p


def _shown(value) -> str:
    """A path or name for stdout: no control character or bidi override reaches the terminal."""
    from report_gen.render.terminal import terminal_text

    return terminal_text(value, 4000)


def _rule_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (default: [tool.report_gen] in the nearest pyproject.toml)")
    p.add_argument("--select", type=_codes, help="only these rule codes/prefixes/names (comma-separated)")
    p.add_argument("--ignore", type=_codes, help="skip these rule codes/prefixes/names (comma-separated)")
    p.add_argument("--role", action="append", metavar="ROLE=TAG",
                   help="read the series TAG as ROLE (train_loss, val_loss, train_acc, val_acc, lr, grad_norm, or "
                        "ignore); repeatable, replaces [tool.report_gen.roles] for that role")


def _pickle_policy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-pickles", action="store_true",
                   help="allow unpickling code from checkpoints (only for files you trust)")
    p.add_argument("--isolate", action="store_true",
                   help="open each checkpoint first in a worker process with CPU, memory and time limits, so a "
                        "parser crash or hang costs one input-integrity finding, not the report (for untrusted "
                        "artifacts in CI; POSIX)")


def _storage_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-options", metavar="JSON",
                   help="fsspec filesystem options for URLs, e.g. '{\"anon\": true}' or "
                        "'{\"endpoint_url\": \"http://minio:9000\"}' (fsspec's own config files and "
                        "FSSPEC_<PROTOCOL>_<OPTION> variables apply too)")
    p.add_argument("--cache-dir", help="local cache for objects read from URLs (default: $REPORT_GEN_CACHE_DIR "
                                       "or the user cache folder)")


def _verbosity(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="print only the verdict line")
    p.add_argument("-v", "--verbose", action="count", default=0)


def run() -> None:
    """The `report-gen` command and `python -m report_gen`: `main`, then the end of the process.

    After `main` returns every report is written (atomically, files closed) and the exit code is known.
    What a normal interpreter exit would do next is, in order: the atexit functions (temporary
    folders, worker pools, logging), then tearing down every module and object, which for a
    diagnose of a million-point run is a tenth of a second spent freeing memory the process is about
    to give back anyway. So, when nothing else is still running (no other thread, no child process:
    otherwise the exit is the normal one, which waits for them), the atexit functions run, the
    standard streams are flushed, and the process ends there. `main` itself (the API, the tests)
    returns as usual."""
    from report_gen import runtime

    runtime.tune_allocator()  # the command's own process only: large temporaries reused from the heap
    code = main()
    import atexit
    import threading

    children = sys.modules.get("multiprocessing")
    if threading.active_count() > 1 or (children is not None and children.active_children()):
        raise SystemExit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: started with the stream closed
                stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing left to say
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    verbose = getattr(args, "verbose", 0)
    if args.command == "diagnose":
        from report_gen import runtime

        runtime.configure(args.jobs)  # before numpy loads (its BLAS reads the plan from the environment), and torch
    from report_gen.render.terminal import TerminalSafeFormatter, terminal_text

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TerminalSafeFormatter("report-gen: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
                        handlers=[handler])
    try:
        return {"diagnose": cmd_diagnose, "rules": cmd_rules, "render": cmd_render, "demo": cmd_demo,
                "sweep": cmd_sweep}[args.command](args)
    except InputError as e:
        print(f"report-gen: error: {terminal_text(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("report-gen: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - never a traceback for the user unless asked
        if verbose:
            raise
        print(f"report-gen: internal error: {type(e).__name__}: {terminal_text(e, 300)} (run with -v for details)",
              file=sys.stderr)
        return 2


def _progress(quiet: bool):
    """A callback drawing a rich progress bar on stderr when it is a terminal. Run and file names
    are shown as plain text: markup off (a folder named `[link=...]` is no hyperlink) and control
    characters stripped (a folder named `ESC ]0;...BEL` does not set the window title)."""
    if quiet or not sys.stderr.isatty():
        return None, None
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from report_gen.render.terminal import terminal_text

    prog = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn(),
                    transient=True, console=Console(stderr=True))
    task = prog.add_task("reading", total=None)

    def cb(msg: str, done: int, total: int) -> None:
        prog.update(task, description=terminal_text(msg, 200))

    return prog, cb


def run_diagnose(paths, out, formats, opts, *, quiet=False, github_summary=False) -> tuple[dict, dict]:
    from report_gen.engine import diagnose
    from report_gen.render import render

    _warn_if_output_inside_inputs(out, paths)
    prog, cb = _progress(quiet)
    if prog is not None:
        with prog:
            report = diagnose(paths, opts, cb)
    else:
        report = diagnose(paths, opts)
    written = render(report, out, formats)
    if github_summary:
        _after_render("--github-summary", lambda: _github_summary(written, report))
    return report, written


def _after_render(what: str, step) -> None:
    """A step after the report files are written (terminal summary, job summary) in its own error
    boundary: its failure is one warning line, never the exit code of a report already written."""
    try:
        step()
    except (KeyboardInterrupt, BrokenPipeError):
        raise
    except Exception as e:  # noqa: BLE001 - the report is written; say what was not shown
        from report_gen.render.terminal import terminal_text

        logging.getLogger("report_gen").debug("%s failed", what, exc_info=True)
        logging.getLogger("report_gen").warning("%s failed (%s: %s); the report files are written", what,
                                                type(e).__name__, terminal_text(e, 200))


def _warn_if_output_inside_inputs(out, paths) -> None:
    """An output folder inside a diagnosed path is one whose contents the artifact's author may have
    planted (report_files -> /etc ...): outputs never follow such links, but say so."""
    from report_gen.render.output import is_inside

    for path in paths:
        if os.path.isdir(path) and is_inside(out, path):
            logging.getLogger("report_gen").warning(
                "the output folder %s is inside the input %s: files planted there are replaced, never "
                "written through, and the next run will read the reports as part of the input", out, path)
            return


def _github_summary(written: dict, report: dict) -> None:
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        logging.getLogger("report_gen").warning("--github-summary: GITHUB_STEP_SUMMARY is not set; skipped")
        return
    md_path = written.get("md")
    if md_path is None:
        from report_gen.render.markdown import render_markdown

        text = render_markdown(report, None)
    else:
        text = Path(md_path).read_text(encoding="utf-8")
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(text + "\n")


def cmd_diagnose(args) -> int:
    from report_gen.api import build_options
    from report_gen.config import load_config
    from report_gen.engine import exit_code

    cfg = load_config(args.config).with_roles(args.role)
    opts = build_options(config=cfg, select=args.select, ignore=args.ignore, baseline=args.baseline,
                         trust_pickles=args.trust_pickles, model=args.model, model_kwargs=args.model_kwargs,
                         probe=args.probe, probe_shape=args.probe_shape,
                         probe_max_checkpoints=args.probe_max_checkpoints, isolate=args.isolate,
                         storage_options=args.storage_options, cache_dir=args.cache_dir, jobs=args.jobs)
    report, written = run_diagnose(args.paths, args.out, args.format, opts, quiet=args.quiet,
                                   github_summary=args.github_summary)
    from report_gen.render.terminal import print_summary

    _after_render("the terminal summary", lambda: print_summary(report, quiet=args.quiet))
    if not args.quiet:
        for fmt, path in written.items():
            print(f"{fmt:>4}: {_shown(path)}")
    return exit_code(report, args.fail_on or cfg.fail_on, args.fail_on_persisting,
                     args.fail_on_unknown or cfg.fail_on_unknown)


def cmd_rules(args) -> int:
    from report_gen.rules.base import all_rules, find_rule

    if args.action == "explain" or (args.action == "list" and args.code):
        if not args.code:
            raise InputError("rules explain needs a rule code or name, e.g. `report-gen rules explain K101`")
        r = find_rule(args.code)
        if r is None:
            raise InputError(f"{args.code}: no such rule (see `report-gen rules`)")
        print(r.explain())
        return 0
    rules = all_rules()
    if args.json:
        print(json.dumps([{"code": r.code, "name": r.name, "category": r.category, "severity": r.severity,
                           "needs": list(r.needs), "options": {k: v for k, v in r.option_defaults().items()}}
                          for r in rules], indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{len(rules)} rules", show_lines=False)
    for col in ("code", "name", "category", "severity", "signals needed (any)"):
        t.add_column(col)
    for r in rules:
        t.add_row(r.code, r.name, r.category, r.severity, ", ".join(r.needs))
    Console(width=160).print(t)
    return 0


def cmd_render(args) -> int:
    from report_gen.render import load_report, render

    report = load_report(args.report)
    written = render(report, args.out, args.format)
    if not args.quiet:
        for fmt, path in written.items():
            print(f"{fmt:>4}: {_shown(path)}")
    return 0


def sample_runs_dir() -> Path:
    here = Path(__file__).resolve().parent
    for cand in (here / "sample_runs", here.parent / "sample_runs"):
        if cand.is_dir() and any(cand.iterdir()):
            return cand
    raise InputError("the bundled sample runs were not found (expected sample_runs/ next to the package)")


def cmd_demo(args) -> int:
    from report_gen.engine import Options
    from report_gen.render.terminal import print_summary

    report, written = run_diagnose([str(sample_runs_dir())], args.out, list(FORMATS), Options(), quiet=args.quiet)
    _after_render("the terminal summary", lambda: print_summary(report, quiet=args.quiet))
    print(_shown(Path(written.get("html", args.out)).resolve()))
    return 0


def cmd_sweep(args) -> int:
    from report_gen import sweep
    from report_gen.api import build_options
    from report_gen.config import load_config
    from report_gen.render.sweep import SweepProgress, print_sweep_summary
    from report_gen.selection import resolve_rules
    from report_gen.storage import StorageSettings

    cfg = load_config(args.config).with_roles(args.role)
    opts = build_options(config=cfg, select=args.select, ignore=args.ignore, trust_pickles=args.trust_pickles,
                         isolate=args.isolate, storage_options=args.storage_options, cache_dir=args.cache_dir)
    storage = opts.storage or StorageSettings()
    resolve_rules(cfg, args.select, args.ignore)  # a bad selection stops here, before any worker starts
    if args.jobs is not None and args.jobs < 1:
        raise InputError("--jobs must be at least 1")
    if args.engine == "dask":
        scheduler = args.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
        if not scheduler:
            raise InputError("--engine dask needs --scheduler tcp://HOST:PORT (or DASK_SCHEDULER_ADDRESS)")
        engine = sweep.DaskEngine(scheduler, window=args.jobs)
    elif args.scheduler:
        raise InputError("--scheduler is for --engine dask")
    else:
        engine = sweep.LocalPool(args.jobs)
    try:
        items = sweep.discover_sweep(args.paths, storage)
        progress = SweepProgress(len(items), quiet=args.quiet)
        try:
            index = sweep.run_sweep(items, args.out, sweep.TaskSettings(opts, tuple(args.format)), engine,
                                    inputs=args.paths, progress=progress)
        finally:
            progress.close()
    finally:
        if hasattr(engine, "close"):
            engine.close()
    print_sweep_summary(index, quiet=args.quiet)
    if not args.quiet:
        print(f"index: {_shown(Path(args.out) / 'index.html')}")
    return sweep.sweep_exit_code(index, args.fail_on or cfg.fail_on, args.fail_on_unknown or cfg.fail_on_unknown)
