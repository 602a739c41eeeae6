"""Costs of the hostile-input defences (issue 14), each measured in a fresh subprocess.

    python benchmarks/bench_hostile.py restarts [--restarts 10000] [--per-session 5]
    python benchmarks/bench_hostile.py safetensors [--tensors 10000]
    python benchmarks/bench_hostile.py isolate [--small 20] [--large-mb 256]

`restarts`: one event file of R writing sessions (a TF1 session_log START before each), every
session logging steps 0..k-1 of one scalar and one histogram, so every session restarts both series;
the time of `read_events`. `safetensors`: a file of N tiny tensors; `open_checkpoint` plus a `load`
of every tensor. `isolate`: `open_checkpoint` in process vs in a worker (`readers.isolation`): the
first worker's start, then the per-file cost on small checkpoints and on one large one.

Run a section against another checkout with PYTHONPATH=/path/to/it (the "before" numbers in
benchmarks/README-hostile.md were taken that way on main). The machine is shared: compare ratios
taken side by side, not absolute seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

RESTARTS = textwrap.dedent("""
    import json, sys, time
    sys.path.append(sys.argv[3])
    from tests.builders.event_builders import (make_hist_event, make_scalar_event, make_session_log_event,
                                      make_version_event, write_records)
    restarts, per = int(sys.argv[1]), int(sys.argv[2])
    path = sys.argv[4] + "/events.out.tfevents.1.bench"
    records = [make_version_event()]
    for r in range(restarts):
        records.append(make_session_log_event(0))
        for s in range(per):
            records.append(make_scalar_event("loss", s, float(r)))
            records.append(make_hist_event("w", s, [float(r), 1.0, 2.0]))
    write_records(path, records)
    import numpy as np
    from report_gen.readers.events import read_events
    from report_gen.readers.events.merge import apply_step_policy
    start = time.perf_counter()
    log = read_events([(path, "")])
    took = time.perf_counter() - start
    # the step policy alone, on one series of the same shape (decoding dominates read_events), side by
    # side with the restart-by-restart loop it replaced (main before issue 14, verbatim)
    def one_by_one(steps, sessions):
        n = steps.size
        keep = np.ones(n, dtype=bool)
        restarts = []
        prev_max = np.maximum.accumulate(steps)[:-1]
        new_session = sessions[1:] != sessions[:-1]
        for i in (np.flatnonzero((steps[1:] <= prev_max) & new_session) + 1).tolist():
            drop = keep[:i] & (steps[:i] >= steps[i])
            dropped = int(drop.sum())
            if dropped:
                keep[:i] &= ~drop
                restarts.append((i, dropped))
        return keep, restarts
    steps = np.tile(np.arange(per, dtype=np.int64), restarts)
    sessions = np.repeat(np.arange(restarts, dtype=np.int64), per)
    start = time.perf_counter()
    apply_step_policy(steps, sessions, None)
    policy = time.perf_counter() - start
    start = time.perf_counter()
    one_by_one(steps, sessions)
    old_policy = time.perf_counter() - start
    print(json.dumps({"read_events_s": took, "step_policy_one_series_s": policy,
                      "restart_by_restart_one_series_s": old_policy, "scalars": len(log.scalars),
                      "histogram_steps": int(log.histograms["w"].steps.size),
                      "problems": [(p.kind, p.count) for p in log.problems]}))
""")

SAFETENSORS = textwrap.dedent("""
    import json, sys, time
    import torch
    from safetensors.torch import save_file
    n = int(sys.argv[1])
    path = sys.argv[2] + "/many.safetensors"
    save_file({f"layers.{i}.weight": torch.full((4, 4), float(i)) for i in range(n)}, path)
    from report_gen.readers.checkpoint import open_checkpoint
    start = time.perf_counter()
    ckpt = open_checkpoint(path)
    opened = time.perf_counter() - start
    total = sum(float(ckpt.load(name).sum()) for name in ckpt.tensors)
    took = time.perf_counter() - start
    print(json.dumps({"open_s": opened, "open_and_load_all_s": took, "tensors": len(ckpt.tensors),
                      "checksum": total}))
""")

ISOLATE = textwrap.dedent("""
    import json, sys, time
    import torch
    sys.path.append(sys.argv[3])
    from tests.builders import ckpt_builders as cb
    from report_gen.readers.checkpoint import open_checkpoint
    from report_gen.readers.isolation import Isolation
    small_n, large_mb, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4]
    small = [str(cb.write_lightning(f"{folder}/small{i}.ckpt", cb.tiny_state())) for i in range(small_n)]
    large = folder + "/large.pt"
    n = max(large_mb // 4, 1)
    torch.save({f"layer{i}.weight": torch.randn(1024, 1024) for i in range(n)}, large)  # 4 MiB each

    def best(fn, repeat=3):
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    in_small = best(lambda: [open_checkpoint(p) for p in small]) / small_n
    in_large = best(lambda: open_checkpoint(large))
    iso = Isolation()
    start = time.perf_counter()
    iso.vet(small[0])
    first = time.perf_counter() - start
    iso_small = best(lambda: [iso.vet(p) for p in small]) / small_n
    iso_large = best(lambda: iso.vet(large))
    iso.close()
    iso = Isolation()  # a worker per file (the worker is replaced after a crash): its start, again
    iso.vet(small[0])
    iso.close()
    def fresh(p):
        with Isolation() as one:
            one.vet(p)
    fresh_small = best(lambda: [fresh(p) for p in small[:5]]) / 5
    print(json.dumps({"in_process_small_s": in_small, "in_process_large_s": in_large,
                      "worker_start_s": first, "isolated_small_s": iso_small, "isolated_large_s": iso_large,
                      "fresh_worker_per_file_small_s": fresh_small,
                      "large_mb": n * 4}))
""")


def _run(code: str, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.setdefault("PYTHONPATH", str(ROOT))
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("restarts")
    r.add_argument("--restarts", type=int, default=10_000)
    r.add_argument("--per-session", type=int, default=5)
    s = sub.add_parser("safetensors")
    s.add_argument("--tensors", type=int, default=10_000)
    i = sub.add_parser("isolate")
    i.add_argument("--small", type=int, default=20)
    i.add_argument("--large-mb", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.what == "restarts":
            result = _run(RESTARTS, str(args.restarts), str(args.per_session), str(ROOT), tmp)
        elif args.what == "safetensors":
            result = _run(SAFETENSORS, str(args.tensors), tmp)
        else:
            result = _run(ISOLATE, str(args.small), str(args.large_mb), str(ROOT), tmp)
    print(json.dumps({"what": args.what, **vars(args), **result}))


if __name__ == "__main__":
    main()
