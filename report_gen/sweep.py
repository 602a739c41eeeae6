"""Sweeps: many runs diagnosed in parallel, one index over their summaries (DESIGN §2, §3).

    report-gen sweep PATH_OR_URL ... -o OUT [--jobs N] [--engine local|dask --scheduler ADDR]

Flow
----
1. `discover_sweep` finds the runs, cheaply: local folders with the readers' discovery; URLs by one
   listing each, laid out as a skeleton of empty sparse files (the first bytes only where a name
   cannot decide) that the same discovery reads. Nothing is downloaded but those few heads.
2. One task per run (`diagnose_run`): `engine.diagnose([run], opts)` — URLs staged by storage.py from
   the listing made in step 1 — then the run's report rendered, and a compact summary *row*.
   The task returns the row and the rendered files; the driver writes them under
   `OUT/runs/<safe-name>/`. Workers therefore need read access to the runs, nothing else, and every
   engine shares this one code path.
3. An engine maps the task over the runs with a bounded number in flight, yielding results as they
   finish: `LocalPool` (processes over the cores this process may use, one torch/BLAS thread each)
   or `DaskEngine` (a dask.distributed scheduler). A worker that dies, or a task that raises, costs
   that run only: its row says `failed` and why.
4. The driver keeps only the rows (about 1 KB a run; never a report) and writes `sweep.json`,
   `index.html` (+ pre-rendered sorted pages) and `index.md` from them (render/sweep.py).

Ray was not added: it would need a third engine class and a test cluster; the seam it would plug into
is `Engine.run(task, settings, items)`.

sweep.json (schema `SWEEP_SCHEMA_VERSION`, documented in docs/sweeps.md) is a contract like
report.json: keys are added, never renamed. Everything that differs between two executions of the same
sweep (created, timing, engine, peak memory) is under `created` and `timing` only.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from report_gen import __version__
from report_gen.core import InputError, severity_rank
from report_gen.storage import (MODEL_FOLDER_MARKERS, Listing, ObjectInfo, StorageSettings, UnsafeName, confined,
                                display_url, fetch_whole, filesystem, is_multi_run_name, is_url, join_url, list_url,
                                local_relpath, read_head, select, view_folder)
from report_gen.vocab import Signal

if TYPE_CHECKING:
    from report_gen.engine import Options

log = logging.getLogger("report_gen")

SWEEP_SCHEMA_VERSION = 1
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")
MESSAGE_CHARS = 300  # the main finding's message in a row
HPARAM_VALUE_CHARS = 200
#: An hparam association is stated when a one-sided Fisher exact test, Bonferroni-corrected for every
#: condition tried for that finding, stays below this conventional significance level.
ASSOCIATION_ALPHA = 0.05
MAX_CONDITIONS_PER_HPARAM = 64
SCHEDULER_TIMEOUT = "10s"  # how long to try reaching a Dask scheduler
MAX_LOST_WORKERS = 8  # local workers found dead before taking a run, before the pool gives up
#: imported once by the local pool's fork server, so that no worker pays for them (a name that does not
#: import is skipped by multiprocessing)
WORKER_PRELOAD = ("torch", "report_gen.sweep", "report_gen.engine", "report_gen.render", "report_gen.rules",
                  "report_gen.readers.checkpoints", "report_gen.readers.checkpoint", "report_gen.evidence")


# ---------------------------------------------------------------------------------------- items


@dataclass(frozen=True)
class RunItem:
    """One run of the sweep.

    name: unique in the sweep (its path below the sweep folder, as discovery names it)
    target: what the task diagnoses: a local run folder, or the URL that was listed
    path: where the run is, as the index shows it (its folder's URL for a remote run)
    out_name: its folder under OUT/runs/
    listing: for a URL, the listed objects that belong to this run; the task stages exactly those, so
             an object deleted since is reported, and a run's report holds that run only
    """

    name: str
    target: str
    path: str
    out_name: str
    listing: Listing | None = None


@dataclass(frozen=True)
class TaskSettings:
    """What every task needs; picklable (sent to each worker)."""

    options: "Options"  # no probe: a sweep diagnoses what the runs logged
    formats: tuple[str, ...] = ("html", "json")


@dataclass
class TaskResult:
    row: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)  # relative path -> bytes, under OUT/runs/<out_name>/
    seconds: float = 0.0  # wall time of the task
    cpu_seconds: float = 0.0  # CPU time of the worker process during the task
    peak_rss_mb: float | None = None


def safe_name(name: str) -> str:
    """A folder name for a run: its name reduced to [A-Za-z0-9._-], plus a hash (unique, never '..')."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:80] or "run"
    return f"{slug}-{hashlib.sha1(name.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


# ------------------------------------------------------------------------------------ discovery


def discover_sweep(targets: Sequence[str], storage: StorageSettings | None = None) -> list[RunItem]:
    """The runs under the targets (local folders and URLs), by the readers' discovery; no download
    beyond the first bytes of files whose name cannot say whether they are checkpoints."""
    from report_gen.readers.discovery import discover

    storage = storage or StorageSettings()
    with tempfile.TemporaryDirectory(prefix="report_gen-sweep-") as skeleton:
        skel = Path(skeleton).resolve()
        local_paths: list[str] = []
        remote: dict[Path, Listing] = {}  # skeleton folder standing for a listed URL -> its listing
        for i, target in enumerate(targets):
            if not is_url(target):
                local_paths.append(target)
                continue
            listing = list_url(target, storage)
            folder, file_name = view_folder(listing)
            root = skel / str(i) / folder
            _skeleton(listing, root, file_name, storage)
            local_paths.append(str(root / file_name) if file_name else str(root))
            remote[root] = listing
        specs = _one_per_store(discover(local_paths))
        runs_of: dict[Path, dict[str, str]] = {root: {} for root in remote}  # listed root -> {run rel: name}
        local_items: dict[str, RunItem] = {}
        for spec in specs:
            path = Path(spec.path)
            root = next((r for r in (path, *path.parents) if r in remote), None)
            if root is None:
                local_items[spec.name] = RunItem(spec.name, spec.path, spec.path, safe_name(spec.name))
            else:
                runs_of[root]["" if path == root else path.relative_to(root).as_posix()] = spec.name
        remote_items = {name: item for root, runs in runs_of.items() for name, item in _remote_items(remote[root], runs).items()}
        return [local_items.get(spec.name) or remote_items[spec.name] for spec in specs]


def _one_per_store(specs: list) -> list:
    """The runs of one multi-run file (an MLflow SQLite store: one RunSpec per member) as ONE run of the
    sweep, named after the store: a task diagnoses a path, and all of the store's runs are in it."""
    out, stores = [], {}
    for spec in specs:
        if spec.member is None:
            out.append(spec)
        elif spec.path not in stores:
            stores[spec.path] = replace(spec, name=spec.name.rpartition("/")[0] or spec.name, member=None)
            out.append(stores[spec.path])
    return out


def _remote_items(listing: Listing, runs: dict[str, str]) -> dict[str, RunItem]:
    """One item per run found below a listed URL (runs: run folder, local form -> name), each with the
    objects below its folder that no deeper run owns."""
    if listing.is_file:
        return {name: RunItem(name, listing.url, display_url(listing.url), safe_name(name), listing)
                for name in runs.values()}
    mine: dict[str, list[ObjectInfo]] = {rel: [] for rel in runs}
    for o in listing.objects:
        try:
            local = local_relpath(o.rel).replace(os.sep, "/")
        except UnsafeName:
            local = o.rel  # kept with the run it lies in: staging reports it
        parts = local.split("/")
        owner = next((rel for rel in ("/".join(parts[:k]) for k in range(len(parts), -1, -1)) if rel in mine), None)
        if owner is not None:
            mine[owner].append(o)
    return {name: RunItem(name, listing.url, display_url(join_url(listing.url, rel)), safe_name(name),
                          replace(listing, objects=tuple(mine[rel])))
            for rel, name in runs.items()}


def _skeleton(listing: Listing, root: Path, file_name: str | None, storage: StorageSettings) -> None:
    """Stand-ins for the objects discovery looks at, so that the readers' own discovery groups them into
    runs: empty files (discovery goes by name), except where the name cannot decide: those get their
    true first bytes in a sparse file of their true size, as the sniffs expect; a file holding several
    runs (an MLflow SQLite store) is fetched whole, discovery reads its run list."""
    fs, _ = filesystem(listing.url, storage.options)
    wanted, sniff, folders = select(listing.objects)
    markers = [o for objs in folders.values() for o in objs if o.rel.rpartition("/")[2] in MODEL_FOLDER_MARKERS]  # discovery reads names only
    sniffed = {o.rel for o in sniff}
    for o in dict.fromkeys(list(wanted) + list(sniff) + markers):
        try:
            dest = confined(root, file_name or local_relpath(o.rel))
        except UnsafeName:
            continue  # the task that stages it reports it
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            if is_multi_run_name(o.rel.rpartition("/")[2]):  # discovery lists its runs: it needs all of it
                fetch_whole(listing, o, dest, storage)
                continue
            if o.rel in sniffed:
                read_head(fs, listing.root if listing.is_file else listing.root + "/" + o.rel, o.size, dest, storage)
                continue
        except Exception:  # noqa: BLE001 - unreadable: the task that stages it reports it
            pass
        dest.touch()


# ----------------------------------------------------------------------------------------- task


def limit_threads() -> None:
    """One torch/BLAS thread in this process: parallelism comes from running many tasks."""
    from report_gen import runtime

    for var in THREAD_VARS:
        os.environ[var] = "1"
    runtime.configure_single()  # the plan engine.diagnose follows: one process, one thread
    try:
        import torch

        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def _peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB: /proc's VmHWM on Linux (getrusage's maxrss there
    keeps the high-water mark of the process that exec'd us), getrusage elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
    except (ImportError, OSError):  # pragma: no cover - Windows
        return None


def diagnose_run(item: RunItem, settings: TaskSettings) -> TaskResult:
    """The task: diagnose one run, render its report, summarise it. Never raises."""
    from report_gen.engine import diagnose
    from report_gen.render import render

    limit_threads()
    t0, c0 = time.perf_counter(), time.process_time()
    opts = replace(settings.options, jobs=1)  # the sweep's pool uses the cores: no pool inside the task
    if item.listing is not None:
        storage = opts.storage or StorageSettings()
        opts = replace(opts, storage=replace(storage, listings={item.target: item.listing}))
    files: dict[str, bytes] = {}
    try:
        report = diagnose([item.target], opts)
        with tempfile.TemporaryDirectory(prefix="report_gen-run-") as tmp:
            render(report, tmp, settings.formats)
            files = {p.relative_to(tmp).as_posix(): p.read_bytes() for p in sorted(Path(tmp).rglob("*")) if p.is_file()}
        row = summarize(item, report, _report_link(item, settings.formats))
    except InputError as e:
        row = failed_row(item, str(e))
    except Exception as e:  # noqa: BLE001 - one run's internal error must not lose the sweep
        log.debug("diagnosing %s failed", item.name, exc_info=True)
        row = failed_row(item, f"internal error: {type(e).__name__}: {e}")
    return TaskResult(row, files if row["status"] == "ok" else {}, time.perf_counter() - t0,
                      time.process_time() - c0, _peak_rss_mb())


def _report_link(item: RunItem, formats: Sequence[str]) -> str | None:
    for fmt, name in (("html", "report.html"), ("md", "report.md"), ("json", "report.json")):
        if fmt in formats:
            return f"runs/{item.out_name}/{name}"
    return None


def _row_base(item: RunItem) -> dict[str, Any]:
    return {"name": item.name, "path": item.path,
            "status": "ok", "reason": None, "report": None, "verdict": None, "counts": None,
            "main_finding": None, "findings": [], "loss": None, "metric": None, "steps": None,
            "event_files": 0, "checkpoints": 0, "problems": 0, "hparams": {}}


def failed_row(item: RunItem, reason: str) -> dict[str, Any]:
    row = _row_base(item)
    row.update(status="failed", reason=" ".join(str(reason).split())[:1000])
    return row


def summarize(item: RunItem, report: dict, link: str | None) -> dict[str, Any]:
    """The compact row for one run's report: what the index shows, nothing it does not."""
    row = _row_base(item)
    runs = report.get("inputs", {}).get("runs", [])
    findings = report.get("findings", [])
    details = report.get("details", {}).get("runs", {})
    by_code: dict[str, dict[str, Any]] = {}
    for f in findings:
        entry = by_code.setdefault(f["code"], {"code": f["code"], "name": f.get("name", ""),
                                               "category": f.get("category", ""), "severity": f["severity"], "count": 0})
        entry["count"] += 1
        if severity_rank(f["severity"]) > severity_rank(entry["severity"]):
            entry["severity"] = f["severity"]
    main = findings[0] if findings else None
    hparams: dict[str, Any] = {}
    for d in details.values():
        for k, v in (d.get("summary", {}).get("hparams") or {}).items():
            hparams.setdefault(str(k)[:100], v if not isinstance(v, str) else v[:HPARAM_VALUE_CHARS])
    firsts = [r.get("first_step") for r in runs if isinstance(r.get("first_step"), int)]
    lasts = [r.get("last_step") for r in runs if isinstance(r.get("last_step"), int)]
    row.update(
        report=link,
        verdict=report.get("summary", {}).get("verdict"),
        counts=dict(report.get("summary", {}).get("counts", {})),
        main_finding=None if main is None else {
            "code": main["code"], "name": main.get("name", ""), "severity": main["severity"],
            "subject": str(main.get("subject", ""))[:200], "message": str(main.get("message", ""))[:MESSAGE_CHARS]},
        findings=sorted(by_code.values(), key=lambda e: (-severity_rank(e["severity"]), e["code"])),
        loss=_curve_summary(details, (Signal.VAL_LOSS, Signal.TRAIN_LOSS), higher_is_better=False),
        metric=_curve_summary(details, (Signal.VAL_ACC, Signal.TRAIN_ACC), higher_is_better=True),
        steps=[min(firsts), max(lasts)] if firsts and lasts else None,
        event_files=sum(int(r.get("event_files") or 0) for r in runs),
        checkpoints=sum(int(r.get("checkpoints") or 0) for r in runs),
        problems=sum(len(r.get("problems") or []) for r in runs),
        hparams=hparams,
    )
    return row


def _curve_summary(details: dict, keys: Sequence[Signal], *, higher_is_better: bool) -> dict[str, Any] | None:
    """Best and final value of the first of `keys` a run logged. The report's curves hold at most
    1,000 evenly spaced points (first and last kept): `final` is exact, `best` is over those points."""
    for key in (k.value for k in keys):
        for d in details.values():
            curve = (d.get("curves") or {}).get(key)
            if not curve or not curve.get("values"):
                continue
            values = curve["values"]  # non-finite values are null in the report
            finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
            best = (max(finite) if higher_is_better else min(finite)) if finite else None
            last = values[-1]
            return {"series": key, "tag": str(curve.get("tag", key))[:200], "best": best,
                    "final": last if isinstance(last, (int, float)) else None,
                    "nonfinite": any(v is None for v in values), "higher_is_better": higher_is_better}
    return None


# -------------------------------------------------------------------------------------- engines


def available_cpus() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # not Linux
        return max(os.cpu_count() or 1, 1)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _worker_main(conn) -> None:
    """A local worker: run tasks sent over `conn` until None arrives or the pipe closes."""
    limit_threads()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        task, item, settings = message
        try:
            result = task(item, settings)
        except BaseException as e:  # noqa: BLE001 - the task should not raise; if it does, say so
            result = TaskResult(failed_row(item, f"internal error: {type(e).__name__}: {e}"))
        try:
            conn.send(result)
        except Exception as e:  # noqa: BLE001 - e.g. an unpicklable result
            conn.send(TaskResult(failed_row(item, f"the result could not be sent back: {type(e).__name__}: {e}")))


class _Worker:
    def __init__(self, ctx) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        # not daemonic: a worker may start processes of its own (--isolate vets checkpoints in a limited child);
        # it ends with the pool (_stop_all) or when its pipe closes, so it never outlives the driver
        self.process = ctx.Process(target=_worker_main, args=(child,), daemon=False, name="report-gen-worker")
        self.process.start()
        child.close()
        self.item: RunItem | None = None


class LocalPool:
    """Worker processes (see `_context`; one torch/BLAS thread each) fed one run at a time. A worker that dies
    fails the run it held (with its exit signal) and is replaced; the other runs go on."""

    name = "local"

    def __init__(self, jobs: int | None = None) -> None:
        self.jobs = max(int(jobs), 1) if jobs else available_cpus()

    @property
    def workers(self) -> int:
        return self.jobs

    def run(self, task: Callable, settings: TaskSettings, items: Sequence[RunItem]) -> Iterator[tuple[RunItem, TaskResult]]:
        ctx = _context()
        todo = list(reversed(items))
        workers = [_Worker(ctx) for _ in range(min(self.jobs, len(items)))]
        lost = 0  # workers found dead before they took a run, since the last result
        try:
            while True:
                for i, w in enumerate(workers):
                    while w.item is None and todo:
                        item = todo.pop()
                        try:
                            w.conn.send((task, item, settings))
                            w.item = item
                        except (OSError, ValueError):  # died while idle: the run goes to a new worker
                            todo.append(item)
                            dead = w
                            workers[i] = w = _replace(dead, ctx)
                            exit_code = dead.process.exitcode
                            lost += 1
                            if lost > MAX_LOST_WORKERS:  # workers die before any work: do not loop forever
                                reason = (f"no worker process could start ({_describe_exit(exit_code)}, "
                                          f"{lost} times)")
                                while todo:
                                    gone = todo.pop()
                                    yield gone, TaskResult(failed_row(gone, reason))
                busy = [w for w in workers if w.item is not None]
                if not busy:
                    return
                ready = set(multiprocessing.connection.wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
                for w in busy:
                    if w.conn not in ready and w.process.sentinel not in ready:
                        continue
                    item, result = w.item, None
                    if w.conn in ready:
                        try:
                            result = w.conn.recv()
                        except (EOFError, OSError):
                            result = None
                    if result is None:
                        w.process.join(5)
                        reason = f"the worker process died ({_describe_exit(w.process.exitcode)}) while diagnosing this run"
                        result = TaskResult(failed_row(item, reason))
                        workers[workers.index(w)] = _replace(w, ctx)
                    else:
                        w.item = None
                        lost = 0
                    yield item, result
        finally:
            _stop_all(workers)


def _context():
    """forkserver where there is one (Linux, macOS): report_gen and torch are imported once, in the
    server, with one thread per library, and every worker is a cheap fork of it; spawn elsewhere."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(WORKER_PRELOAD))
    from multiprocessing import forkserver

    saved = {v: os.environ.get(v) for v in THREAD_VARS}
    os.environ.update({v: "1" for v in THREAD_VARS})  # the server (and so every worker) starts with them
    try:
        forkserver.ensure_running()
    finally:
        for v, value in saved.items():
            if value is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = value
    return ctx


def _replace(worker: _Worker, ctx) -> _Worker:
    _stop_all([worker], timeout=1)
    return _Worker(ctx)


def _stop_all(workers: list[_Worker], timeout: float = 5.0) -> None:
    """Ask every worker to exit, then wait for all of them (in parallel, not one after another)."""
    for w in workers:
        try:
            w.conn.send(None)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + timeout
    for w in workers:
        w.process.join(max(deadline - time.monotonic(), 0))
    for w in workers:
        if w.process.is_alive():
            w.process.kill()
            w.process.join(1)
        w.conn.close()


class DaskEngine:
    """Tasks on a dask.distributed cluster through its scheduler address. In flight: one task per worker
    thread (so that a dying worker holds one run). A worker that dies while running a task has it
    rescheduled by dask; after `distributed.scheduler.allowed-failures` deaths (3 by default) the run is
    reported failed (KilledWorker) and the sweep goes on."""

    name = "dask"

    def __init__(self, scheduler: str, *, window: int | None = None, timeout: str | None = None) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise InputError("--engine dask needs dask.distributed: pip install 'report_gen[dask]'") from None
        try:
            self.client = Client(scheduler, timeout=timeout or SCHEDULER_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as e:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({type(e).__name__}: {e})") from None
        self.scheduler = scheduler
        self.window = window

    @property
    def workers(self) -> int:
        return max(sum(self.client.nthreads().values()), 1)

    def run(self, task: Callable, settings: TaskSettings, items: Sequence[RunItem]) -> Iterator[tuple[RunItem, TaskResult]]:
        from distributed import as_completed

        window = self.window or self.workers
        todo = iter(items)
        pending: dict[Any, RunItem] = {}
        queue = as_completed(loop=self.client.loop)
        refused: list[tuple[RunItem, TaskResult]] = []

        def submit() -> None:
            """The next run to the cluster; one the client cannot submit (the scheduler is gone) fails."""
            item = next(todo, None)
            if item is None:
                return
            try:
                future = self.client.submit(task, item, settings, key=f"report-gen-run-{uuid.uuid4().hex}", pure=False)
            except Exception as e:  # noqa: BLE001 - a closed client, a lost scheduler
                refused.append((item, TaskResult(failed_row(item, _dask_reason(e)))))
                return
            pending[future] = item
            queue.add(future)

        for _ in range(window):
            submit()
        try:
            while True:
                while refused:
                    yield refused.pop()
                    submit()
                future = next(queue, None)
                if future is None:
                    if not refused:
                        return
                    continue
                item = pending.pop(future)
                try:
                    result = future.result()
                except Exception as e:  # noqa: BLE001 - KilledWorker, a lost connection...
                    result = TaskResult(failed_row(item, _dask_reason(e)))
                future.release()
                yield item, result
                submit()
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        self.client.close()


def _dask_reason(e: BaseException) -> str:
    if type(e).__name__ == "KilledWorker":
        return f"the Dask workers running this run died ({e})"
    return f"the Dask task failed: {type(e).__name__}: {e}"


# --------------------------------------------------------------------------------------- driver


Progress = Callable[[int, int, int, str], None]  # done, failed, total, name of the run just finished


def run_sweep(items: Sequence[RunItem], out: str | Path, settings: TaskSettings, engine, *,
              inputs: Sequence[str] = (), progress: Progress | None = None,
              task: Callable[[RunItem, TaskSettings], TaskResult] = diagnose_run) -> dict[str, Any]:
    """Diagnose every item with `engine`, write each run's files and the index; return the index dict."""
    from report_gen.render.output import OutputFolder

    out = Path(out)
    with OutputFolder(out) as folder, folder.subfolder("runs") as runs_folder:
        return _run(items, out, runs_folder, settings, engine, inputs, progress, task)


def _run(items, out: Path, runs_folder, settings, engine, inputs, progress, task) -> dict[str, Any]:
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    done = failed = 0
    worker_peak = 0.0
    busy_s = cpu_s = 0.0
    remaining = {it.name: it for it in items}
    interrupted = False
    try:
        for item, result in engine.run(task, settings, items):
            remaining.pop(item.name, None)
            row = result.row
            if row.get("status") == "ok" and result.files:
                try:
                    _write_run_files(runs_folder, item.out_name, result.files)
                except (InputError, OSError, ValueError) as e:
                    row = failed_row(item, f"its report could not be written ({e})")
            rows.append(row)
            done += 1
            failed += row.get("status") != "ok"
            worker_peak = max(worker_peak, result.peak_rss_mb or 0.0)
            busy_s += result.seconds
            cpu_s += result.cpu_seconds
            if progress is not None:
                progress(done, failed, len(items), item.name)
    except KeyboardInterrupt:
        interrupted = True
    for item in remaining.values():
        rows.append(failed_row(item, "not run: the sweep was interrupted" if interrupted
                               else "not run: the engine stopped before this run"))
    elapsed = time.perf_counter() - t0
    timing = {"engine": engine.name, "workers": engine.workers, "elapsed_s": round(elapsed, 3),
              "runs_per_s": round(len(items) / elapsed, 3) if elapsed > 0 else None,
              "task_s_total": round(busy_s, 3), "task_cpu_s_total": round(cpu_s, 3),
              "driver_peak_rss_mb": _peak_rss_mb(),
              "worker_peak_rss_mb": worker_peak or None}
    index = build_index(rows, inputs=inputs, settings=settings, timing=timing, interrupted=interrupted)
    write_index(index, out)
    if interrupted:
        raise KeyboardInterrupt
    return index


def _write_run_files(runs_folder, out_name: str, files: dict[str, bytes]) -> None:
    """The run's files under runs/<out_name>/ (render.output.OutputFolder: never through a planted
    symlink, each file whole or not at all)."""
    with runs_folder.subfolder(out_name) as folder:
        for rel, data in files.items():
            *subs, name = local_relpath(rel).split(os.sep)
            _write_nested(folder, subs, name, data)


def _write_nested(folder, subs: list[str], name: str, data: bytes) -> None:
    if not subs:
        folder.write(name, data)
        return
    with folder.subfolder(subs[0]) as sub:
        _write_nested(sub, subs[1:], name, data)


# ---------------------------------------------------------------------------------------- index


def sweep_verdict(summary: dict[str, Any]) -> str:
    v = summary["verdicts"]
    if summary["failed"] or v.get("fail"):
        return "fail"
    if v.get("warn"):
        return "warn"
    if v.get("pass"):
        return "pass"
    return "unknown"


def build_index(rows: list[dict[str, Any]], *, inputs: Sequence[str] = (), settings: TaskSettings | None = None,
                timing: dict[str, Any] | None = None, interrupted: bool = False) -> dict[str, Any]:
    """sweep.json: the rows (sorted by name), their totals, recurring findings and hparam associations."""
    rows = sorted(rows, key=lambda r: r["name"])
    ok = [r for r in rows if r["status"] == "ok"]
    verdicts = {v: 0 for v in ("fail", "warn", "pass", "unknown")}
    counts = {"error": 0, "warning": 0, "info": 0}
    for r in ok:
        verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
        for s, n in (r["counts"] or {}).items():
            counts[s] = counts.get(s, 0) + int(n)
    summary = {"runs": len(rows), "diagnosed": len(ok), "failed": len(rows) - len(ok), "verdicts": verdicts,
               "counts": counts, "interrupted": interrupted}
    summary["verdict"] = sweep_verdict(summary)
    varying, constant = hparam_columns(ok)
    opts = settings.options if settings is not None else None
    cfg = getattr(opts, "config", None)
    return {
        "schema_version": SWEEP_SCHEMA_VERSION,
        "kind": "sweep",
        "generator": {"name": "report_gen", "version": __version__},
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "inputs": [display_url(i) if is_url(i) else i for i in inputs],
        "options": {"formats": list(settings.formats) if settings else [],
                    "select": getattr(opts, "select", None), "ignore": getattr(opts, "ignore", None),
                    "config": getattr(cfg, "source", None), "trust_pickles": bool(getattr(opts, "trust_pickles", False))},
        "summary": summary,
        "hparams": {"varying": varying, "constant": constant},
        "recurring": recurring_findings(ok, varying),
        "runs": rows,
        "timing": timing or {},
    }


def hparam_columns(rows: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """Hparams whose value differs between runs (or that some runs lack), and the constant ones."""
    values: dict[str, set] = {}
    for r in rows:
        for k, v in r["hparams"].items():
            values.setdefault(k, set()).add(_hashable(v))
    varying, constant = [], {}
    for k in sorted(values):
        present = sum(k in r["hparams"] for r in rows)
        if len(values[k]) > 1 or present < len(rows):
            varying.append(k)
        else:
            constant[k] = next(r["hparams"][k] for r in rows if k in r["hparams"])
    return varying, constant


def _hashable(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def recurring_findings(rows: list[dict[str, Any]], varying: Sequence[str]) -> list[dict[str, Any]]:
    """Every finding code with the runs it appears in, most severe and most frequent first, and the
    strongest hparam association of the runs that have it (or None)."""
    groups: dict[str, dict[str, Any]] = {}
    for r in rows:
        for f in r["findings"]:
            g = groups.setdefault(f["code"], {"code": f["code"], "name": f["name"], "category": f["category"],
                                             "severity": f["severity"], "runs": 0, "of": len(rows), "names": set()})
            g["runs"] += 1
            g["names"].add(r["name"])
            if severity_rank(f["severity"]) > severity_rank(g["severity"]):
                g["severity"] = f["severity"]
    out = []
    for g in sorted(groups.values(), key=lambda g: (-severity_rank(g["severity"]), -g["runs"], g["code"])):
        names = g.pop("names")
        g["association"] = associate([r["hparams"] for r in rows], [r["name"] in names for r in rows], varying)
        out.append(g)
    return out


# ------------------------------------------------------------------------- hparam association


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_greater(a: int, flagged: int, condition: int, total: int) -> float:
    """One-sided Fisher exact p: P(X >= a) for X ~ Hypergeometric(total, flagged, condition), the chance
    that `a` or more of the `condition` runs are flagged if flags ignored the hparam."""
    hi = min(flagged, condition)
    lo = max(a, condition - (total - flagged), 0)
    if lo > hi:
        return 0.0 if a > hi else 1.0
    denom = _log_comb(total, condition)
    logs = [_log_comb(flagged, x) + _log_comb(total - flagged, condition - x) - denom for x in range(lo, hi + 1)]
    m = max(logs)
    return min(1.0, math.exp(m) * sum(math.exp(v - m) for v in logs))


def _spread(values: list[Any], n: int) -> list[Any]:
    """At most n of the sorted values, evenly spread (all of them when there are few)."""
    if len(values) <= n:
        return list(values)
    return sorted({values[round(i * (len(values) - 1) / (n - 1))] for i in range(n)})


def _conditions(values: list[Any], flags: list[bool]) -> list[tuple[str, Any, Callable[[Any], bool]]]:
    """Conditions to try on one hparam: thresholds (>= t, <= t) for numbers, equality otherwise. The
    bounds the flagged runs reach are always tried: they are the only thresholds that can be exact."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    if numeric:
        distinct = sorted(set(values))
        if len(distinct) < 2:
            return []
        flagged = [v for v, f in zip(values, flags) if f]
        ge = set(_spread(distinct[1:], MAX_CONDITIONS_PER_HPARAM)) | ({min(flagged)} - {distinct[0]})
        le = set(_spread(distinct[:-1], MAX_CONDITIONS_PER_HPARAM)) | ({max(flagged)} - {distinct[-1]})
        return ([(">=", t, (lambda v, t=t: v >= t)) for t in sorted(ge)]
                + [("<=", t, (lambda v, t=t: v <= t)) for t in sorted(le)])
    counts: dict[Any, int] = {}
    for v, f in zip(values, flags):
        counts[_hashable(v)] = counts.get(_hashable(v), 0) + int(f)
    if len(counts) < 2:
        return []
    common = sorted(counts, key=lambda d: (-counts[d], str(d)))[:MAX_CONDITIONS_PER_HPARAM]
    return [("==", d, (lambda v, d=d: _hashable(v) == d)) for d in common]


def associate(hparams: list[dict[str, Any]], flags: list[bool], varying: Sequence[str]) -> dict[str, Any] | None:
    """The hparam condition that best separates flagged runs from the others, or None.

    For every varying hparam, over the runs that log it, each condition (value >= t, value <= t,
    value == v) is scored by a one-sided Fisher exact test; the smallest p, multiplied by the number of
    conditions tried (Bonferroni), must stay below ASSOCIATION_ALPHA. `exact` says the condition holds
    for every flagged run and for no other one; otherwise the shares are what the index states.
    With few runs nothing is significant, so nothing is claimed.
    """
    tried: list[tuple[float, bool, dict[str, Any]]] = []
    for key in varying:
        pairs = [(h[key], f) for h, f in zip(hparams, flags) if key in h]
        if len(pairs) < 2:
            continue
        values, fl = [p[0] for p in pairs], [p[1] for p in pairs]
        total, flagged = len(pairs), sum(fl)
        if flagged == 0 or flagged == total:
            continue
        for op, value, test in _conditions(values, fl):
            inside = [test(v) for v in values]
            condition = sum(inside)
            a = sum(1 for i, f in zip(inside, fl) if i and f)
            p = fisher_greater(a, flagged, condition, total)
            exact = a == flagged == condition
            tried.append((p, exact, {"hparam": key, "op": op, "value": value, "flagged_with": a, "flagged": flagged,
                                     "others_with": condition - a, "others": total - flagged, "exact": exact}))
    if not tried:
        return None
    p, exact, best = min(tried, key=lambda t: (t[0], not t[1], t[2]["hparam"], t[2]["op"], str(t[2]["value"])))
    adjusted = min(1.0, p * len(tried))
    if adjusted >= ASSOCIATION_ALPHA:
        return None
    if best["op"] in (">=", "<=") and exact:  # state the tightest bound the flagged runs reach
        vals = [h[best["hparam"]] for h, f in zip(hparams, flags) if f and best["hparam"] in h]
        best["value"] = min(vals) if best["op"] == ">=" else max(vals)
    return {**best, "p_value": round(adjusted, 6), "conditions_tried": len(tried)}


# ------------------------------------------------------------------------------------ exit code


def sweep_exit_code(index: dict[str, Any], fail_on: str, fail_on_unknown: bool = False) -> int:
    """0 when no run has a finding at or above fail_on, else 1. A run that could not be diagnosed counts
    as an error: a gate must not pass on runs it never read. fail_on_unknown: also 1 when a run's
    verdict is `unknown` (as `diagnose --fail-on-unknown`)."""
    if fail_on_unknown and any(r["status"] == "ok" and r["verdict"] == "unknown" for r in index["runs"]):
        return 1
    if fail_on == "never":
        return 0
    levels = ("error",) if fail_on == "error" else ("error", "warning")
    for r in index["runs"]:
        if r["status"] != "ok" or any((r["counts"] or {}).get(s) for s in levels):
            return 1
    return 0


def write_index(index: dict[str, Any], out: Path) -> dict[str, Path]:
    """sweep.json, index.html (+ its sorted pages) and index.md in out."""
    from report_gen.render.jsonout import dumps
    from report_gen.render.output import OutputFolder
    from report_gen.render.sweep import render_sweep

    with OutputFolder(out) as folder:
        written = {"json": folder.write_text("sweep.json", dumps(index) + "\n")}
        written.update(render_sweep(index, folder))
    return written
