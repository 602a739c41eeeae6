"""Side-by-side speed and memory: report_gen's read_events vs tbparse vs TensorBoard's EventAccumulator.

Generates two event files into benchmarks/_data/ (reused when present with the same size):

- scalars: N legacy ``simple_value`` scalar events over 10 tags (what torch's add_scalar writes);
- histograms: TAGS x STEPS legacy HistogramProto events with BINS buckets (what add_histogram writes).

Each tool reads each file, everything kept, in a fresh subprocess; the child reports the wall time of
the read alone (wall and CPU) and its own peak RSS (VmHWM, imports included). tbparse reads scalars, histograms,
tensors, text and hparams (its ``images`` needs TensorFlow installed; the files hold no images). Run:

    python benchmarks/bench_events.py                      # defaults: 1M scalars, 200 x 500 histograms
    python benchmarks/bench_events.py --scalars 100000 --hist-tags 20 --tools report_gen,tbparse
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "_data"
TOOLS = ("report_gen", "tbparse", "event_accumulator")

# Code run in the child; {path} is the event file. Each prints nothing: the harness reads the JSON line.
READERS = {
    "report_gen": """
from report_gen.readers.events import read_events
data = read_events([({path!r}, "")])
n = len(data.scalars) + sum(len(h) for h in data.histograms.values())
""",
    "tbparse": """
from tbparse import SummaryReader
reader = SummaryReader({path!r}, pivot=False)
n = len(reader.scalars) + len(reader.histograms) + len(reader.tensors) + len(reader.text) + len(reader.hparams)
""",
    "event_accumulator": """
from tensorboard.backend.event_processing import event_accumulator as ea
acc = ea.EventAccumulator({path!r}, size_guidance={{k: 0 for k in ea.DEFAULT_SIZE_GUIDANCE}})
acc.Reload()
tags = acc.Tags()
n = sum(len(acc.Scalars(t)) for t in tags["scalars"]) + sum(len(acc.Histograms(t)) for t in tags["histograms"])
""",
}

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
{imports}
t0, c0 = time.perf_counter(), time.process_time()
{body}
elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0


def peak_rss_mb():
    # VmHWM is this process's own high-water mark; ru_maxrss would include the parent's at fork time
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


print(json.dumps({{"seconds": elapsed, "cpu_seconds": cpu, "values": n, "peak_rss_mb": peak_rss_mb()}}))
"""
IMPORTS = {
    "report_gen": "import report_gen.readers.events",
    "tbparse": "import tbparse",
    "event_accumulator": "from tensorboard.backend.event_processing import event_accumulator",
}


def _builders():
    sys.path.insert(0, str(ROOT / "tests"))
    from builders import event_builders

    return event_builders


def make_training_scalar_file(n: int) -> Path:
    """N simple_value scalars as a training loop logs them: train/loss, train/accuracy, lr and grad_norm
    every step (four tag lengths, so record lengths cycle) and val/loss every 100 steps."""
    path = DATA / f"training_scalars_{n}" / "events.out.tfevents.1700000000.bench.1.0"
    if path.exists():
        return path
    import numpy as np

    eb = _builders()
    values = np.random.default_rng(0).standard_normal(n + 8).tolist()
    records, step = [eb.make_version_event()], 0
    while len(records) <= n:
        for tag in ("train/loss", "train/accuracy", "lr", "grad_norm"):
            records.append(eb.make_scalar_event(tag, step, values[len(records) - 1], 1.7e9 + step))
        if step % 100 == 0:
            records.append(eb.make_scalar_event("val/loss", step, 1.0, 1.7e9 + step))
        step += 1
    return eb.write_records(path, records[:n + 1])


def make_scalar_file(n: int) -> Path:
    """N simple_value scalars over 10 tags, steps n // 10."""
    path = DATA / f"scalars_{n}" / "events.out.tfevents.1700000000.bench.1.0"
    if path.exists():
        return path
    import numpy as np

    eb = _builders()
    tags = [f"train/metric_{i}" for i in range(10)]
    values = np.random.default_rng(0).standard_normal(n).tolist()
    records = [eb.make_version_event()]
    records += [eb.make_scalar_event(tags[i % 10], i // 10, values[i], 1.7e9 + i * 1e-3) for i in range(n)]
    return eb.write_records(path, records)


def make_hist_file(tags: int, steps: int, bins: int) -> Path:
    """TAGS x STEPS histograms of BINS buckets each, written step by step like a training loop."""
    path = DATA / f"hist_{tags}x{steps}x{bins}" / "events.out.tfevents.1700000000.bench.1.0"
    if path.exists():
        return path
    import numpy as np

    eb = _builders()
    rng = np.random.default_rng(0)
    sample = rng.standard_normal(4096)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        out.write(eb.frame(eb.make_version_event()))
        for step in range(steps):
            for t in range(tags):
                values = sample * (1 + 0.001 * step) + 0.01 * t
                out.write(eb.frame(eb.make_hist_event(f"weights/layer{t}.weight", step, values,
                                                      1.7e9 + step, bins=bins)))
    return path


def run_tool(tool: str, path: Path) -> dict:
    code = CHILD.format(root=str(ROOT), imports=IMPORTS[tool], body=READERS[tool].format(path=str(path)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict[str, dict]]) -> str:
    lines = ["| file | tool | wall (s) | CPU (s) | peak RSS (MB) | values | wall vs report_gen "
             "| CPU vs report_gen | RSS vs report_gen |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, by_tool in results.items():
        base = by_tool.get("report_gen", {})
        for tool, r in by_tool.items():
            if "error" in r:
                lines.append(f"| {label} | {tool} | error: {r['error']} | | | | | | |")
                continue
            ratios = [r[k] / base[k] if k in base else float("nan")
                      for k in ("seconds", "cpu_seconds", "peak_rss_mb")]
            lines.append(f"| {label} | {tool} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['peak_rss_mb']:.0f} "
                         f"| {r['values']} | {ratios[0]:.1f}x | {ratios[1]:.1f}x | {ratios[2]:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scalars", type=int, default=1_000_000, help="scalar events in the scalar file")
    parser.add_argument("--hist-tags", type=int, default=200)
    parser.add_argument("--hist-steps", type=int, default=500)
    parser.add_argument("--hist-bins", type=int, default=64)
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma list out of {','.join(TOOLS)}")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    tools = [t for t in args.tools.split(",") if t]
    files = {}
    if args.scalars:
        t0 = time.perf_counter()
        files[f"{args.scalars:,} scalars"] = make_scalar_file(args.scalars)
        print(f"scalar file ready in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    if args.hist_tags and args.hist_steps:
        t0 = time.perf_counter()
        files[f"{args.hist_tags}x{args.hist_steps} histograms"] = make_hist_file(
            args.hist_tags, args.hist_steps, args.hist_bins)
        print(f"histogram file ready in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    results: dict[str, dict[str, dict]] = {}
    for label, path in files.items():
        label = f"{label} ({os.path.getsize(path) / 1e6:.0f} MB)"
        for tool in tools:
            print(f"{label}: {tool} ...", file=sys.stderr, flush=True)
            results.setdefault(label, {})[tool] = run_tool(tool, path)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
