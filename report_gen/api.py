"""The Python API: `report_gen.diagnose(path_or_paths, **options) -> Report`.

    import report_gen

    report = report_gen.diagnose("runs/exp42", select=["K", "G"], fail_on="warning")
    report.verdict            # "pass" | "warn" | "fail" | "unknown"
    report.findings           # the report.json findings (list of dicts)
    report                    # in a notebook: the summary inline (_repr_html_)
    report.write("reports/exp42")            # report.html, report.md + report_files/, report.json
    raise SystemExit(report.exit_code())     # the CLI's exit code (0 or 1)

The options are the CLI's (`report-gen diagnose --help`), spelled as keywords: `config` (a TOML file; by
default `[tool.report_gen]` of the nearest pyproject.toml, as on the command line), `select`, `ignore`,
`baseline`, `trust_pickles`, `model` + `model_kwargs` + (`probe` | `probe_shape`), `probe_max_checkpoints`,
`fail_on`, `fail_on_persisting`, `fail_on_unknown`, and for fsspec URLs (`s3://...`) `storage_options` and
`cache_dir`, `isolate` (checkpoints vetted in a limited worker process, as `--isolate`) and `jobs` (worker
processes, as `--jobs`). A Report wraps the very dict the CLI renders (report.json schema, DESIGN §4).
Nothing heavy is imported before `diagnose` runs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Collection, Iterable

from report_gen.core import REPORT_FORMATS, InputError, json_object_option

FAIL_ON = ("error", "warning", "never")
PathLike = str | os.PathLike


def build_options(*, config: Any = None, select: Iterable[str] | None = None, ignore: Iterable[str] | None = None,
                  baseline: PathLike | None = None, trust_pickles: bool = False, model: str | None = None,
                  model_kwargs: dict | str | None = None, probe: PathLike | None = None,
                  probe_shape: str | Iterable[int] | None = None, probe_max_checkpoints: int = 6,
                  storage_options: dict | str | None = None, cache_dir: PathLike | None = None,
                  isolate: bool = False, jobs: int | None = None) -> Any:
    """engine.Options from the CLI's option values; InputError (one line) for an inconsistent set.

    config: a path to a TOML file, an already loaded `report_gen.config.Config`, or None (nearest
    pyproject.toml). model_kwargs: a dict, or JSON text as on the command line. storage_options (a
    dict, or JSON text) and cache_dir: how fsspec URLs among the paths are read (storage.py).
    jobs: worker processes for independent runs and files (None: one per available core, runtime.py).
    """
    from report_gen.config import Config, load_config
    from report_gen.engine import Options, ProbeSpec

    cfg = config if isinstance(config, Config) else load_config(None if config is None else os.fspath(config))
    spec = None
    if model:
        kwargs = _model_kwargs(model_kwargs)
        if not probe and not probe_shape:
            raise InputError("--model needs --probe FILE or --probe-shape N,C,H,W")
        if probe and probe_shape:
            raise InputError("--probe and --probe-shape exclude each other: give one")
        if probe_shape is not None and not isinstance(probe_shape, str):
            probe_shape = ",".join(str(int(n)) for n in probe_shape)
        spec = ProbeSpec(model, kwargs, os.fspath(probe) if probe else None, probe_shape or None, probe_max_checkpoints)
    elif probe or probe_shape:  # no model: the probe input is for HF checkpoint folders, which probe themselves
        if probe_shape is not None and not isinstance(probe_shape, str):
            probe_shape = ",".join(str(int(n)) for n in probe_shape)
        spec = ProbeSpec(None, {}, os.fspath(probe) if probe else None, probe_shape or None, probe_max_checkpoints)
    storage = None
    if storage_options or cache_dir is not None:
        from report_gen.storage import StorageSettings, parse_storage_options

        options = storage_options if isinstance(storage_options, dict) else parse_storage_options(storage_options)
        storage = StorageSettings(options=options, cache_dir=None if cache_dir is None else os.fspath(cache_dir))
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise InputError(f"jobs must be a whole number of at least 1, got {jobs!r}")
    return Options(config=cfg, trust_pickles=bool(trust_pickles), probe=spec, jobs=jobs,
                   baseline=None if baseline is None else os.fspath(baseline),
                   select=_codes(select), ignore=_codes(ignore), storage=storage, isolate=bool(isolate))


def _model_kwargs(value: dict | str | None) -> dict:
    return json_object_option(value, "--model-kwargs")


def _codes(value: Iterable[str] | str | None) -> list[str] | None:
    """Rule selectors as a list; a comma-separated string is split like the CLI does."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(c).strip() for c in items if str(c).strip()]


def _fail_level(value: str) -> str:
    if value not in FAIL_ON:
        raise InputError(f"fail_on must be one of {', '.join(FAIL_ON)}, got {value!r}")
    return value


def diagnose(path_or_paths: PathLike | Iterable[PathLike], *, fail_on: str | None = None,
             fail_on_persisting: bool = False, fail_on_unknown: bool | None = None,
             progress: Callable[[str, int, int], None] | None = None, **options: Any) -> "Report":
    """Diagnose run folders, event files or checkpoints, like `report-gen diagnose`; returns a Report.

    Raises report_gen.core.InputError for unusable input (the CLI's exit code 2); damaged files are
    input-integrity findings in the report, as on the command line. See the module docstring for options.
    """
    from report_gen.engine import diagnose as run_engine

    paths = [os.fspath(path_or_paths)] if isinstance(path_or_paths, (str, os.PathLike)) else \
        [os.fspath(p) for p in path_or_paths]
    if not paths:
        raise InputError("diagnose needs at least one path")
    opts = build_options(**options)
    report = run_engine(paths, opts, progress) if progress is not None else run_engine(paths, opts)
    return Report(report, fail_on=_fail_level(fail_on or opts.config.fail_on), fail_on_persisting=fail_on_persisting,
                  fail_on_unknown=opts.config.fail_on_unknown if fail_on_unknown is None else fail_on_unknown)


class Report:
    """A diagnosis: the report dict the CLI renders (report.json, DESIGN §4), with ways to show it."""

    def __init__(self, data: dict, *, fail_on: str = "error", fail_on_persisting: bool = False,
                 fail_on_unknown: bool = False) -> None:
        self.data = data
        self.fail_on = _fail_level(fail_on)
        self.fail_on_persisting = fail_on_persisting
        self.fail_on_unknown = fail_on_unknown

    @classmethod
    def load(cls, path: PathLike, **kwargs: Any) -> "Report":
        """A Report from a report.json written earlier (like `report-gen render`)."""
        from report_gen.reportfile import load_report

        return cls(load_report(path), **kwargs)

    @property
    def verdict(self) -> str:
        return str(self.data["summary"]["verdict"])

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.data["summary"]["counts"])

    @property
    def findings(self) -> list[dict]:
        return self.data["findings"]

    @property
    def not_evaluated(self) -> list[dict]:
        return self.data.get("not_evaluated", [])

    def exit_code(self, fail_on: str | None = None, fail_on_persisting: bool | None = None,
                  fail_on_unknown: bool | None = None) -> int:
        """The CLI's exit code for this report: 1 when a finding counts at or above `fail_on` (or, with
        fail_on_unknown, when nothing about the training could be judged), else 0."""
        from report_gen.engine import exit_code

        return exit_code(self.data, _fail_level(fail_on or self.fail_on),
                         self.fail_on_persisting if fail_on_persisting is None else fail_on_persisting,
                         self.fail_on_unknown if fail_on_unknown is None else fail_on_unknown)

    def to_json(self) -> str:
        from report_gen.render.jsonout import dumps

        return dumps(self.data)

    def to_html(self) -> str:
        """The full self-contained HTML page (report.html)."""
        from report_gen.render.html import render_html

        return render_html(self.data)

    def to_markdown(self) -> str:
        """The Markdown report (report.md) without image links: plots need `write()`."""
        from report_gen.render.markdown import render_markdown

        return render_markdown(self.data, None)

    def write(self, out_dir: PathLike, formats: Collection[str] = REPORT_FORMATS) -> dict[str, Path]:
        """Write report.html / report.md (+ report_files/) / report.json into out_dir; {format: path}."""
        from report_gen.render import render

        formats = ["md" if f == "markdown" else f for f in ([formats] if isinstance(formats, str) else formats)]
        return render(self.data, out_dir, formats)

    def _repr_html_(self) -> str:
        from report_gen.render.notebook import render_notebook

        return render_notebook(self.data)

    def __repr__(self) -> str:
        counts = self.counts
        runs = len(self.data.get("inputs", {}).get("runs", []))
        return (f"<Report {self.verdict.upper()}: {counts.get('error', 0)} error(s), {counts.get('warning', 0)} "
                f"warning(s), {counts.get('info', 0)} info in {runs} run(s)>")
