"""Sweep throughput: runs/second against the number of runs and --jobs, local disk and local S3.

    python benchmarks/bench_sweep.py                      # 10, 100, 1000 runs x jobs 1, 2 x disk, S3
    python benchmarks/bench_sweep.py --sizes 10,100 --storage disk

Each configuration runs in a fresh Python process (so peak memory is that configuration's): it
discovers the sweep, runs it through the local pool (`report-gen sweep --jobs J`, per-run report.json
only, so the numbers measure the sweep machinery and the diagnosis, not HTML plotting), and reports

* wall: discovery + sweep + index, seconds
* start: until the first run's result (the pool's one-time import of torch and report_gen)
* runs/s: all runs / wall;  steady runs/s: runs after the first / time after the first result
* CPU ms/run: the workers' CPU time per run (what a run costs, however busy the machine is)
* in flight: after the first result, the runs' summed task time / the time they took, i.e. how many runs
  the engine kept going at once (jobs=2 should give ~2; whether they go twice as fast needs two free cores)
* load: the 1-minute load average when the configuration ended (the machine is shared)
* driver MB, worker MB: peak resident memory of the driving process and of the largest worker (a
  worker's includes the pages it shares with the fork server: torch and report_gen, ~300 MB)

The runs are the test suite's tiny generated runs (tests/builders/sweep_kit.py: event file + 2 checkpoints,
a fifth with a NaN loss), written once under benchmarks/_data/. S3 is moto's server on 127.0.0.1
(in this orchestrating process), read through s3fs; each S3 configuration starts with an empty cache.
Absolute numbers depend on the machine and its load; read the ratios: steady runs/s should stay flat
as runs grow (cost linear in runs), and two jobs should give about twice one job's steady rate.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = HERE / "_data"
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))


def one(args) -> None:
    """Run one configuration in this process and print its measurements as JSON."""
    from report_gen.engine import Options
    from report_gen.storage import StorageSettings
    from report_gen.sweep import LocalPool, TaskSettings, _peak_rss_mb, discover_sweep, run_sweep

    storage = StorageSettings(options=json.loads(args.storage_options or "{}"), cache_dir=args.cache_dir)
    t0 = time.perf_counter()
    items = discover_sweep([args.target], storage)
    t_discovered = time.perf_counter()
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        index = run_sweep(items, out, TaskSettings(Options(storage=storage), ("json",)), LocalPool(args.jobs),
                          inputs=[args.target], progress=lambda *a: stamps.append(time.perf_counter()))
    t_end = time.perf_counter()
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else None
    print(json.dumps({
        "runs": len(items), "failed": index["summary"]["failed"], "discover_s": t_discovered - t0,
        "wall_s": t_end - t0, "start_s": stamps[0] - t_discovered, "runs_per_s": len(items) / (t_end - t0),
        "steady_runs_per_s": steady,
        "driver_mb": _peak_rss_mb(),
        "worker_mb": index["timing"].get("worker_peak_rss_mb"),
        "cpu_ms_per_run": 1000 * index["timing"].get("task_cpu_s_total", 0) / max(len(items), 1),
        "in_flight": (index["timing"]["task_s_total"] * (len(items) - 1) / len(items) / (stamps[-1] - stamps[0])
                      if len(stamps) > 1 and stamps[-1] > stamps[0] else None),
        "load": os.getloadavg()[0],
    }))


def sweep_data(n: int) -> Path:
    from builders import sweep_kit

    root = DATA / f"sweep-{n}"
    if not (root / ".complete").exists():
        sweep_kit.write_sweep(root, n)
        (root / ".complete").write_text("ok")
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,100,1000")
    p.add_argument("--jobs", default="1,2")
    p.add_argument("--storage", default="disk,s3")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    p.add_argument("--storage-options", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    p.add_argument("--jobs-one", type=int, dest="jobs_one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        args.jobs = args.jobs_one
        one(args)
        return
    sizes = [int(x) for x in args.sizes.split(",")]
    jobs = [int(x) for x in args.jobs.split(",")]
    kinds = args.storage.split(",")
    s3 = None
    if "s3" in kinds:
        from builders import sweep_kit

        s3 = sweep_kit.S3()
        s3.bucket("bench")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    rows = []
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    for n in sizes:
        local = sweep_data(n)
        targets = {"disk": (str(local), None)}
        if s3 is not None:
            s3.upload(local, f"bench/sweep-{n}")
            targets["s3"] = (f"s3://bench/sweep-{n}", json.dumps(s3.options))
        for kind in kinds:
            target, options = targets[kind]
            for j in jobs:
                with tempfile.TemporaryDirectory() as cache:
                    cmd = [sys.executable, __file__, "--one", "--target", target, "--jobs-one", str(j),
                           "--cache-dir", cache] + (["--storage-options", options] if options else [])
                    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                rows.append({"n": n, "storage": kind, "jobs": j, **result})
                r = rows[-1]
                print(f"{n:>5} runs  {kind:<4} jobs={j}  wall {r['wall_s']:7.1f} s  start {r['start_s']:5.1f} s  "
                      f"{r['runs_per_s']:5.2f} runs/s  steady {r['steady_runs_per_s'] or 0:5.2f} runs/s  "
                      f"cpu {r.get('cpu_ms_per_run', 0):4.0f} ms/run  in flight {r['in_flight'] or 0:4.2f}  "
                      f"load {r['load']:4.1f}  "
                      f"driver {r['driver_mb']:4.0f} MB  worker {r['worker_mb'] or 0:4.0f} MB", flush=True)
    if s3 is not None:
        s3.stop()
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    print()
    print("| runs | storage | jobs | wall s | start s | runs/s | steady runs/s | CPU ms/run | in flight | driver MB "
          "| worker MB | load |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']} | {r['storage']} | {r['jobs']} | {r['wall_s']:.1f} | {r['start_s']:.1f} | "
              f"{r['runs_per_s']:.2f} | {r['steady_runs_per_s'] or 0:.2f} | {r.get('cpu_ms_per_run', 0):.0f} | "
              f"{r['in_flight'] or 0:.2f} | {r['driver_mb']:.0f} | {r['worker_mb'] or 0:.0f} | {r['load']:.1f} |")
    (DATA / "bench_sweep.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
