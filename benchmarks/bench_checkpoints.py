"""Side-by-side: plain `torch.load(weights_only=True)` vs report_gen's lazy reader, same statistics.

Builds a large float32 checkpoint (default 24 tensors of 64 MB = 1.5 GB) in benchmarks/_data/, then
runs each approach in a fresh subprocess and reports wall time, peak RSS (ru_maxrss of the child) and
peak private memory (RssAnon sampled every 5 ms from /proc/self/status), with ratios to file size.

    python benchmarks/bench_checkpoints.py [--tensors 24] [--mb 64] [--keep] [--write-readme]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
README = HERE / "README-checkpoints.md"

CHILD = textwrap.dedent("""
    import json, resource, sys, threading, time
    def rss_anon_kb():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
        return 0
    peak = [0]
    stop = threading.Event()
    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_anon_kb())
            time.sleep(0.005)
    import torch
    from report_gen.facts.weights import weight_stats
    from report_gen.readers.checkpoint import open_checkpoint
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    baseline_anon = rss_anon_kb()
    threading.Thread(target=sample, daemon=True).start()
    mode, path = sys.argv[1], sys.argv[2]
    start = time.perf_counter()
    if mode == "plain":
        state = torch.load(path, weights_only=True, map_location="cpu")
        results = [weight_stats(name, t) for name, t in state.items()]
    else:
        from functools import partial
        from report_gen.readers.checkpoint.tree import release_pages
        ckpt = open_checkpoint(path)
        results = []
        for name in ckpt.tensors:
            t = ckpt.load(name)
            results.append(weight_stats(name, t, source=partial(ckpt.load, name)))  # expensive facts reload
            release_pages(t)
    wall = time.perf_counter() - start
    stop.set()
    peak[0] = max(peak[0], rss_anon_kb())
    print(json.dumps({"wall_s": wall, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "peak_anon_kb": peak[0], "baseline_kb": baseline, "baseline_anon_kb": baseline_anon, "tensors": len(results),
                      "checksum": sum(r.mean for r in results)}))
""")


def build(path: Path, tensors: int, mb: int) -> None:
    """Write the benchmark checkpoint in a child process (keeps this process small)."""
    code = textwrap.dedent(f"""
        import torch
        n = {mb} * 2**20 // 4
        side = int(n ** 0.5)
        g = torch.Generator().manual_seed(0)
        sd = {{f"layer{{i}}.weight": torch.randn(side, n // side, generator=g) * 0.02
               for i in range({tensors})}}
        torch.save(sd, {str(path)!r})
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def run(mode: str, path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path)], check=True, env=env,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(results: dict[str, dict], size: int, tensors: int, mb: int) -> str:
    gib = size / 2**30
    rows = [f"File: {tensors} float32 tensors of {mb} MB, {size / 2**20:,.0f} MiB ({gib:.2f} GiB) "
            f"torch zip format. Machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}.",
            "",
            "| approach | wall time (s) | peak RSS (MiB) | RSS / file | peak private (RssAnon, MiB) "
            "| private / file | above import baseline: RSS / file, private / file |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    labels = {"plain": "torch.load(weights_only=True) + weight_stats",
              "ours": "open_checkpoint + load(name) + weight_stats"}
    for mode, r in results.items():
        rss, anon = r["maxrss_kb"] * 1024, r["peak_anon_kb"] * 1024
        rows.append(f"| {labels[mode]} | {r['wall_s']:.1f} | {rss / 2**20:,.0f} | {rss / size:.0%} "
                    f"| {anon / 2**20:,.0f} | {anon / size:.0%} "
                    f"| {(rss - r['baseline_kb'] * 1024) / size:.0%}, "
                    f"{(anon - r['baseline_anon_kb'] * 1024) / size:.0%} |")
    plain, ours = results["plain"], results["ours"]
    base = results["ours"]
    rows += ["", f"Import baseline (python + torch + report_gen, before reading): RSS "
             f"{base['baseline_kb'] / 1024:,.0f} MiB, private {base['baseline_anon_kb'] / 1024:,.0f} MiB.",
             "", f"Time ratio ours/plain: {ours['wall_s'] / plain['wall_s']:.2f}. "
             f"Both compute identical statistics (checksum of means equal: "
             f"{abs(ours['checksum'] - plain['checksum']) < 1e-9})."]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tensors", type=int, default=24)
    parser.add_argument("--mb", type=int, default=64, help="size of each tensor in MB")
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoint")
    parser.add_argument("--write-readme", action="store_true", help=f"write the table to {README.name}")
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    path = DATA / f"bench_{args.tensors}x{args.mb}MB.pt"
    try:
        if not path.exists():
            t0 = time.perf_counter()
            build(path, args.tensors, args.mb)
            print(f"built {path} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        size = path.stat().st_size
        results = {}
        for mode in ("plain", "ours"):
            subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # warm page cache
            results[mode] = run(mode, path)
            print(mode, results[mode], file=sys.stderr)
        text = table(results, size, args.tensors, args.mb)
        print(text)
        if args.write_readme:
            README.write_text(README_HEAD + text + "\n" + README_TAIL)
    finally:
        if not args.keep and path.exists():
            path.unlink()


README_HEAD = """# Checkpoint reading: memory and time

`python benchmarks/bench_checkpoints.py --write-readme` (each approach in a fresh subprocess, page cache
warm for both). "Private" is anonymous resident memory (RssAnon), i.e. memory the process owns; RSS
also counts file pages mapped by the process.

"""

README_TAIL = """
How report_gen stays small: `open_checkpoint` calls `torch.load(weights_only=True, mmap=True)`, which
maps the file instead of reading it; `load(name)` copies one tensor to float32 and then releases that
tensor's mapped pages (`madvise(MADV_DONTNEED)`; the pages are clean file pages, so this only drops them
from the process), so at any moment about one tensor is resident. Files that `weights_only` refuses go
through the restricted unpickler, which reads each tensor's bytes from its zip entry on demand.
Statistics accumulate in float64 over 1M-element chunks instead of converting whole tensors.
"""

if __name__ == "__main__":
    main()
