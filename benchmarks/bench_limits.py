"""Issue 17's "Done when" targets, each measured side by side with its floor or alternative.

Every case runs both sides in fresh processes, interleaved (A B A B ...), several repetitions, and
reports the medians, their ratio and the load average when it ran. Data is generated into
benchmarks/_data/ (gitignored; reused when present).

    python benchmarks/bench_limits.py yolo        # pickled detection model, 2 busy processes beside it
    python benchmarks/bench_limits.py ckpt --gib 1 # 16 x 4096x4096 float32 (4: 64 tensors)
    python benchmarks/bench_limits.py scalars     # 1M scalars: whole diagnose vs the Rust data server
    python benchmarks/bench_limits.py hist        # 1 GB of histograms: read_events; tbparse at 64/128 MB
    python benchmarks/bench_limits.py runs        # 20 runs, --jobs 1 vs --jobs 2
    ... --reps N --json out.json

Memory is sampled every 20 ms from /proc over the whole process tree: "private" is the sum over the
processes of Private_Dirty (smaps_rollup: written pages no other process maps, i.e. neither the clean
page cache of a mapped file nor pages a forked worker still shares with its parent); "RSS" is the main
process's VmHWM (mapped file pages included).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "_data"
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
# what users run: an installed package has its .pyc files (pip writes them), so neither side may be made
# to recompile its sources on every start by a PYTHONDONTWRITEBYTECODE of the shell the benchmark runs in
ENV.pop("PYTHONDONTWRITEBYTECODE", None)
REPORT_GEN = [sys.executable, "-m", "report_gen"]


# ------------------------------------------------------------------------------------ measuring


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _private_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return sum(int(line.split()[1]) for line in f if line.startswith("Private_Dirty:"))
    except OSError:
        return 0


def _hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
    except OSError:
        return 0


def measure(cmd: list[str], *, until: str | None = None, cwd: str | None = None, env: dict | None = None) -> dict:
    """Wall time of `cmd` from process start to exit (or to a line matching `until` on its stderr),
    peak private memory of its process tree, peak RSS of the main process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env or ENV, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE if until else subprocess.DEVNULL, text=True)
    peak = {"private": 0, "hwm": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["private"] = max(peak["private"], sum(_private_kb(p) for p in _tree(proc.pid)))
            peak["hwm"] = max(peak["hwm"], _hwm_kb(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wall = None
    if until:
        for line in proc.stderr:
            if until in line:
                wall = time.perf_counter() - t0
                proc.terminate()
                break
    _, status, usage = os.wait4(proc.pid, 0)  # CPU of the process and of the workers it reaped
    proc.returncode = os.waitstatus_to_exitcode(status)
    if wall is None:
        wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    if proc.returncode not in (0, 1, -15) and until is None:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "private_mb": peak["private"] / 1024,
            "rss_mb": peak["hwm"] / 1024}


def loadavg() -> float:
    return os.getloadavg()[0]


def side_by_side(sides: dict[str, list[str] | dict], reps: int) -> dict:
    """Run every side `reps` times, interleaved (rotating the order each round), after one untimed run of
    each (a second run is what users time: byte code and compiled templates written, the file in the page
    cache for both sides alike)."""
    runs: dict[str, list[dict]] = {k: [] for k in sides}
    names = list(sides)
    for name in names:
        spec = sides[name]
        measure(**spec) if isinstance(spec, dict) else measure(spec)
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            spec = sides[name]
            res = measure(**spec) if isinstance(spec, dict) else measure(spec)
            res["load"] = loadavg()
            runs[name].append(res)
            print(f"  [{r + 1}/{reps}] {name}: {res['wall_s']:.2f} s (CPU {res['cpu_s']:.2f} s), "
                  f"private {res['private_mb']:.0f} MB, "
                  f"load {res['load']:.1f}", file=sys.stderr, flush=True)
    return {name: {"median_wall_s": statistics.median(x["wall_s"] for x in rs),
                   "median_cpu_s": statistics.median(x["cpu_s"] for x in rs),
                   "median_private_mb": statistics.median(x["private_mb"] for x in rs),
                   "median_rss_mb": statistics.median(x["rss_mb"] for x in rs),
                   "load": statistics.median(x["load"] for x in rs), "runs": rs} for name, rs in runs.items()}


def show(title: str, result: dict, ours: str, base: str, extra: str = "") -> None:
    a, b = result[ours], result[base]
    print(f"\n## {title}")
    for name in (ours, base):
        r = result[name]
        print(f"  {name:<44} median wall {r['median_wall_s']:7.2f} s   CPU {r['median_cpu_s']:7.2f} s   "
              f"private {r['median_private_mb']:7.0f} MB   "
              f"RSS {r['median_rss_mb']:7.0f} MB   (load {r['load']:.1f}, {len(r['runs'])} runs)")
    print(f"  ratio {ours} / {base}: wall {a['median_wall_s'] / b['median_wall_s']:.2f}x, "
          f"CPU {a['median_cpu_s'] / b['median_cpu_s']:.2f}x {extra}")


# ------------------------------------------------------------------------------------ the cases


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def _diagnose(path: str | Path, *extra: str) -> list[str]:
    out = tempfile.mkdtemp(prefix="bench_out_")
    return REPORT_GEN + ["diagnose", str(path), "-o", out, "-q", *extra]


def case_yolo(reps: int) -> dict:
    """A YOLOv5n-class detector pickled whole (torch.save(model), fp16, ~3.7 MB), with two CPU-bound
    processes running on the machine during both sides."""
    path = DATA / "yolo_like" / "yolo_like.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(_python(f"""
            import sys, torch; sys.path.insert(0, {str(HERE)!r})
            import yolo_like
            torch.manual_seed(0)
            model = yolo_like.build().half()
            torch.save(model, {str(path)!r})
            print(sum(p.numel() for p in model.parameters()))
        """), check=True, env=ENV)
    floor = _python(f"""
        import sys, torch; sys.path.insert(0, {str(HERE)!r})
        import yolo_like
        m = torch.load({str(path)!r}, weights_only=False)
        s = sum(float(t.float().sum()) for t in m.state_dict().values())
    """)
    # no OMP_NUM_THREADS on either side: torch's default thread pool is what oversubscribed the cores
    env = {k: v for k, v in ENV.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        result = side_by_side({"report-gen diagnose": {"cmd": _diagnose(path), "env": env},
                               "floor: torch.load + sum()": {"cmd": floor, "env": env}}, reps)
    finally:
        for h in hogs:
            h.kill()
    result["file_mb"] = path.stat().st_size / 1e6
    show(f"pickled detection model ({result['file_mb']:.1f} MB), 2 busy processes beside", result,
         "report-gen diagnose", "floor: torch.load + sum()", "(target <= 1.5x)")
    return result


def _make_ckpt(gib: int) -> Path:
    path = DATA / f"ckpt_{gib}g.pt"
    if not path.exists():
        free = shutil.disk_usage(DATA).free
        if free < gib * (1 << 30) * 3:
            raise SystemExit(f"not enough free disk for a {gib} GiB checkpoint ({free / 2**30:.0f} GiB free)")
        subprocess.run(_python(f"""
            import torch
            from collections import OrderedDict
            g = torch.Generator().manual_seed(0)
            torch.save(OrderedDict((f"layer{{i}}.weight", torch.randn(4096, 4096, generator=g) * 0.02)
                                   for i in range({16 * gib})), {str(path)!r})
        """), check=True, env=ENV)
    return path


def case_ckpt(reps: int, gib: int) -> dict:
    """A float32 state dict of 16 x gib tensors of 4096x4096: whole diagnose vs mmap load + sum()."""
    path = _make_ckpt(gib)
    floor = _python(f"""
        import torch
        sd = torch.load({str(path)!r}, mmap=True, weights_only=True)
        s = sum(float(t.sum()) for t in sd.values())
    """)
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # page cache warm for both
    tiny = DATA / "ckpt_tiny.pt"
    subprocess.run(_python(f"import torch; torch.save({{'layer0.weight': torch.zeros(4, 4)}}, {str(tiny)!r})"),
                   check=True, env=ENV)
    result = side_by_side({"report-gen diagnose": _diagnose(path), "floor: torch.load(mmap) + sum()": floor}, reps)
    result["import_baseline"] = measure(_diagnose(tiny))  # the same command on a 64-byte checkpoint
    size_mb = path.stat().st_size / 2**20
    result["file_mb"] = size_mb
    ours = result["report-gen diagnose"]
    base = result["import_baseline"]["private_mb"]
    show(f"{gib} GiB float32 checkpoint", result, "report-gen diagnose", "floor: torch.load(mmap) + sum()",
         f"(target <= 3x); private memory {ours['median_private_mb'] / size_mb:.2f}x the file, "
         f"{(ours['median_private_mb'] - base) / size_mb:.2f}x above the {base:.0f} MB of the same command on a "
         f"64-byte checkpoint (target < 0.25x)")
    return result


def case_scalars(reps: int) -> dict:
    """1M scalars: whole `report-gen diagnose` (process start to report files) vs the Rust data server's
    load of the same file (start to "Finished load cycle"), for the issue's file (ten tags of one length)
    and for one a training loop writes (loss, accuracy, lr, grad_norm each step, val/loss every 100)."""
    sys.path.insert(0, str(HERE))
    import bench_events
    import tensorboard_data_server

    server = Path(tensorboard_data_server.__file__).parent / "bin" / "server"
    results = {}
    for title, path in (("1M scalars, ten tags of one length (54 MB)", bench_events.make_scalar_file(1_000_000)),
                        ("1M scalars as a training loop logs them (49 MB)",
                         bench_events.make_training_scalar_file(1_000_000))):
        port_file = Path(tempfile.mkdtemp()) / "port"
        rust = {"cmd": [str(server), "--logdir", str(path.parent), "--port", "0", "--port-file", str(port_file),
                        "--reload", "once", "-v"], "until": "Finished load cycle"}
        result = side_by_side({"report-gen diagnose": _diagnose(path.parent), "tensorboard_data_server": rust}, reps)
        show(title, result, "report-gen diagnose", "tensorboard_data_server", "(target <= 1.5x)")
        results[title] = result
    return results


def make_hist(target_bytes: int = 1 << 30) -> Path:
    """torch's own add_histogram records (default 'tensorflow' buckets) of 200 slowly drifting weight
    tensors, step by step like a training loop, until the file reaches `target_bytes`. The generator is
    deterministic, so a smaller file is a prefix (in records) of a larger one."""
    path = DATA / f"hist_{target_bytes >> 20}m" / "events.out.tfevents.1700000000.bench.1.0"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(_python(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from builders import event_builders as eb
        from torch.utils.tensorboard.summary import histogram
        from tensorboard.compat.proto import event_pb2
        pos = [1e-12]
        while pos[-1] < 1e20:
            pos.append(pos[-1] * 1.1)
        edges = [-x for x in pos[::-1]] + [0] + pos
        rng = np.random.default_rng(0)
        base = [rng.standard_normal(4096) * 0.02 * (1 + t % 7) for t in range(200)]
        size, step = 0, 0
        with open({str(path) + ".tmp"!r}, "wb") as out:
            out.write(eb.frame(eb.make_version_event()))
            while size < {target_bytes}:
                for t in range(200):
                    summ = histogram(f"weight_hist/layer{{t}}.weight", base[t] * (1 + 1e-4 * step), edges)
                    rec = event_pb2.Event(wall_time=1.7e9 + step, step=step, summary=summ).SerializeToString()
                    size += out.write(eb.frame(rec))
                step += 1
        print(step, "steps")
    """), check=True, env=ENV)
    Path(str(path) + ".tmp").rename(path)
    return path


def case_hist(reps: int, tbparse_reps: int, big_mb: int = 1024, small_mb: tuple[int, ...] = (64, 128)) -> dict:
    """Histogram files of torch add_histogram records. tbparse takes minutes (and several GB) on 1 GB, so
    it is measured side by side with read_events on two prefix-sized files of the same generator (its
    time per MB at both sizes shows it is linear), and read_events and the whole diagnose alone on the
    1 GB file; the 1 GB ratio is tbparse's per-MB time at the larger small size times 1 GB, over ours."""
    def read_events_cmd(path: Path) -> list[str]:
        return _python(f"""
            from report_gen.readers.events import read_events
            data = read_events([({str(path)!r}, "")])
            assert sum(len(h) for h in data.histograms.values()) > 0
        """)

    def tbparse_cmd(path: Path) -> list[str]:
        return _python(f"""
            from tbparse import SummaryReader
            r = SummaryReader({str(path)!r}, pivot=False)
            n = len(r.histograms)
        """)

    result: dict = {"small": {}}
    for mb in small_mb:
        path = make_hist(mb << 20)
        res = side_by_side({"report_gen read_events": read_events_cmd(path), "tbparse": tbparse_cmd(path)},
                           min(reps, tbparse_reps))
        res["file_mb"] = path.stat().st_size / 2**20
        result["small"][mb] = res
        show(f"{res['file_mb']:.0f} MiB of histograms", res, "report_gen read_events", "tbparse")
    path = make_hist(big_mb << 20)
    big = side_by_side({"report_gen read_events": read_events_cmd(path), "report-gen diagnose": _diagnose(path.parent)},
                       reps)
    size = big["file_mb"] = path.stat().st_size / 2**20
    result["big"] = big
    largest = result["small"][max(small_mb)]
    per_mb = {mb: r["tbparse"]["median_wall_s"] / r["file_mb"] for mb, r in result["small"].items()}
    per_mb_cpu = {mb: r["tbparse"]["median_cpu_s"] / r["file_mb"] for mb, r in result["small"].items()}
    tb_wall = per_mb[max(small_mb)] * size
    tb_cpu = per_mb_cpu[max(small_mb)] * size
    ours = big["report_gen read_events"]
    print(f"\n## {size:.0f} MiB of histograms: report_gen alone, tbparse extrapolated")
    for name, r in big.items():
        if isinstance(r, dict) and "runs" in r:
            print(f"  {name:<44} median wall {r['median_wall_s']:7.2f} s   CPU {r['median_cpu_s']:7.2f} s   "
                  f"peak RSS {r['median_rss_mb']:7.0f} MB   private {r['median_private_mb']:7.0f} MB   "
                  f"(load {r['load']:.1f}, {len(r['runs'])} runs)")
    for what, per in (("wall", per_mb), ("CPU", per_mb_cpu)):
        print(f"  tbparse {what} per MiB: " + ", ".join(f"{v:.3f} s at {mb} MiB" for mb, v in per.items())
              + f" (largest / smallest: {max(per.values()) / min(per.values()):.2f}; 1.00 = linear)")
    print(f"  tbparse on {size:.0f} MiB, extrapolated linearly: {tb_wall:.0f} s wall, {tb_cpu:.0f} s CPU")
    print(f"  ratio tbparse (extrapolated) / report_gen read_events: wall {tb_wall / ours['median_wall_s']:.1f}x, "
          f"CPU {tb_cpu / ours['median_cpu_s']:.1f}x (target >= 50x); measured at {max(small_mb)} MiB: wall "
          f"{largest['tbparse']['median_wall_s'] / largest['report_gen read_events']['median_wall_s']:.1f}x, CPU "
          f"{largest['tbparse']['median_cpu_s'] / largest['report_gen read_events']['median_cpu_s']:.1f}x; "
          f"read_events peak RSS on {size:.0f} MiB {ours['median_rss_mb']:.0f} MB (target < 1 GB)")
    result["tbparse_extrapolated"] = {"wall_s": tb_wall, "cpu_s": tb_cpu, "per_mb_wall_s": per_mb,
                                      "per_mb_cpu_s": per_mb_cpu}
    return result


def make_runs(n: int = 20) -> Path:
    """N runs of a small CNN-like model: 200k-scalar event file with weight/grad histograms, 3 checkpoints."""
    folder = DATA / f"runs_{n}"
    if (folder / "done").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run(_python(f"""
        import sys, numpy as np, torch
        from pathlib import Path
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from builders import event_builders as eb
        rng = np.random.default_rng(0)
        for r in range({n}):
            run = Path({str(folder)!r}) / f"run{{r:02d}}"
            (run / "checkpoints").mkdir(parents=True)
            recs = [eb.make_version_event()]
            for s in range(20000):
                recs.append(eb.make_scalar_event("train/loss", s, 2.0 / (1 + s * 1e-3) + 0.01 * rng.standard_normal(),
                                                 1.7e9 + s))
                recs.append(eb.make_scalar_event("train/lr", s, 1e-3, 1.7e9 + s))
                if s % 500 == 0:
                    for layer in range(8):
                        w = rng.standard_normal(2000) * 0.05
                        recs.append(eb.make_hist_event(f"weight_hist/layer{{layer}}.weight", s, w, 1.7e9 + s))
                        recs.append(eb.make_hist_event(f"grad_hist/layer{{layer}}.weight", s, w * 1e-3, 1.7e9 + s))
            eb.write_records(run / "events.out.tfevents.1700000000.bench", recs)
            g = torch.Generator().manual_seed(r)
            state = {{f"layer{{i}}.weight": torch.randn(256, 256, generator=g) * 0.05 for i in range(8)}}
            for k, step in enumerate((5000, 10000, 20000)):
                torch.save({{"model": {{n: v * (1 + 0.1 * k) for n, v in state.items()}}, "step": step}},
                           run / "checkpoints" / f"step_{{step}}.pt")
        (Path({str(folder)!r}) / "done").write_text("ok")
    """), check=True, env=ENV)
    return folder


def case_runs(reps: int) -> dict:
    folder = make_runs()
    result = side_by_side({"--jobs 2": _diagnose(folder, "--jobs", "2"), "--jobs 1": _diagnose(folder, "--jobs", "1")},
                          reps)
    show("20 runs (each 40k scalars, 656 histograms, 3 checkpoints)", result, "--jobs 2", "--jobs 1",
         "(target: close to 0.5x with two free cores)")
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", choices=("yolo", "ckpt", "scalars", "hist", "runs"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--gib", type=int, default=1)
    ap.add_argument("--tbparse-reps", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    DATA.mkdir(exist_ok=True)
    print(f"{args.case}: load average {loadavg():.1f} on {os.cpu_count()} cores", file=sys.stderr)
    if args.case == "yolo":
        result = case_yolo(args.reps)
    elif args.case == "ckpt":
        result = case_ckpt(args.reps, args.gib)
    elif args.case == "scalars":
        result = case_scalars(args.reps)
    elif args.case == "hist":
        result = case_hist(args.reps, args.tbparse_reps)
    else:
        result = case_runs(args.reps)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
