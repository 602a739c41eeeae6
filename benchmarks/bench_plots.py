"""Side by side: the report's figures drawn by two checkouts (e.g. main and a branch), interleaved runs.

For each input folder a report.json is made once (with this checkout). Then, round after round, each
checkout draws that report's figures in a fresh process: the child times importing matplotlib and
`PlotStore.prepare` of the report's plot order (every figure up to the cap), wall and CPU time.
With --whole, each round also times the whole `report-gen diagnose DIR -o OUT -q` of each checkout
(process start to report files). Medians per checkout and the ratio to the first one are printed;
the machine may be shared, so only the ratios mean anything.

    python benchmarks/bench_plots.py --checkout main=/work/main --checkout branch=. --rounds 7 \\
        --whole benchmarks/_data/training_scalars_1000000 sample_runs

Without an input, the 1M-scalar training-loop file of bench_events.py is used (made when missing).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CHILD = """
import json, sys, time
t0 = time.perf_counter()
from report_gen.render.context import build_context
from report_gen.render.plots import PlotStore
report = json.load(open({report!r}))
order = build_context(report)["plot_order"]
t1, c1 = time.perf_counter(), time.process_time()
import matplotlib.figure, matplotlib.backends.backend_agg
t2, c2 = time.perf_counter(), time.process_time()
store = PlotStore(report)
store.prepare(order)
t3, c3 = time.perf_counter(), time.process_time()
print(json.dumps({{"import_s": t2 - t1, "draw_s": t3 - t2, "import_cpu": c2 - c1, "draw_cpu": c3 - c2,
                  "figures": store.figures_drawn}}))
"""


def _env(root: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def draw_once(root: Path, report: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD.format(report=str(report))], env=_env(root), cwd=root,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def diagnose_once(root: Path, folder: Path, out: Path, jobs: int) -> tuple[float, float]:
    """Wall and CPU seconds (the process and the workers it reaped) of one whole diagnose."""
    start, cpu = time.perf_counter(), _children_cpu()
    subprocess.run([sys.executable, "-m", "report_gen", "diagnose", str(folder), "-o", str(out), "-q"]
                   + (["--jobs", str(jobs)] if jobs else []),
                   env=_env(root), cwd=root, capture_output=True, check=False)
    return time.perf_counter() - start, _children_cpu() - cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", type=Path, help="run folders (default: the 1M-scalar training file)")
    parser.add_argument("--checkout", action="append", default=[], metavar="NAME=PATH[@JOBS]",
                        help="a source tree to measure; @JOBS: its whole diagnose runs with --jobs JOBS (repeatable; "
                             "default: this one)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--whole", action="store_true", help="also time the whole diagnose command")
    args = parser.parse_args(argv)
    checkouts = []
    for spec in args.checkout or [f"here={ROOT}"]:
        name, _, rest = spec.partition("=")
        path, _, jobs = rest.partition("@")
        checkouts.append((name, Path(path).resolve(), int(jobs or 0)))
    inputs = args.inputs
    if not inputs:
        sys.path.insert(0, str(HERE))
        from bench_events import make_training_scalar_file

        inputs = [make_training_scalar_file(1_000_000).parent]
    tmp = Path(tempfile.mkdtemp(prefix="bench_plots_"))
    for folder in inputs:
        made = tmp / f"{folder.name}-report"
        subprocess.run([sys.executable, "-m", "report_gen", "diagnose", str(folder), "-o", str(made), "-q",
                        "--format", "json"], env=_env(ROOT), cwd=ROOT, capture_output=True, check=False)
        report = made / "report.json"
        draw: dict[str, list[dict]] = {name: [] for name, _, _ in checkouts}
        whole: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in checkouts}
        for _ in range(args.rounds):
            for name, root, jobs in checkouts:  # interleaved: a burst of load hits every checkout alike
                draw[name].append(draw_once(root, report))
                if args.whole:
                    whole[name].append(diagnose_once(root, folder, tmp / f"{folder.name}-{name}", jobs))
        print(f"{folder} ({args.rounds} rounds, medians; wall / CPU)")
        base: dict[str, float] = {}
        for name, _, _ in checkouts:
            runs = draw[name]
            row = {"per figure ms": [1000 * r["draw_s"] / max(1, r["figures"]) for r in runs],
                   "per figure CPU ms": [1000 * r["draw_cpu"] / max(1, r["figures"]) for r in runs],
                   "import ms": [1000 * r["import_s"] for r in runs],
                   "import+draw ms": [1000 * (r["import_s"] + r["draw_s"]) for r in runs],
                   "import+draw CPU ms": [1000 * (r["import_cpu"] + r["draw_cpu"]) for r in runs]}
            if args.whole:
                row["whole s"] = [w for w, _ in whole[name]]
                row["whole CPU s"] = [c for _, c in whole[name]]
            medians = {k: statistics.median(v) for k, v in row.items()}
            cells = ", ".join(f"{k} {v:.1f}" if "ms" in k else f"{k} {v:.2f}" for k, v in medians.items())
            line = f"  {name:>8}: {runs[0]['figures']} figures, {cells}"
            if not base:
                base = medians
            else:
                line += "\n            ratio to " + checkouts[0][0] + ": " + ", ".join(
                    f"{k} {v / base[k]:.2f}" for k, v in medians.items() if base[k])
            print(line)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
