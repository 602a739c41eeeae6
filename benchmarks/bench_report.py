"""End-to-end time of `report-gen diagnose` on a generated run, with the breakdown by phase.

The run: a 150-parameter model (75 Linear layers, weight + bias), 50 logged steps of weight and
gradient histograms per parameter (15,000 histograms), scalar curves, and 10 checkpoints with Adam
state. Target (issue 5): under 15 s on the 2-core CI machine.

    python benchmarks/bench_report.py [--keep]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "_data" / "report_run"


def build_run(path: Path, layers: int = 75, steps: int = 50, checkpoints: int = 10) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from builders import event_builders as eb

    if (path / "done").exists():
        return path
    shutil.rmtree(path, ignore_errors=True)
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(32, 32) for _ in range(layers)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(64, 32)
    records = [eb.make_version_event()]
    (path / "checkpoints").mkdir(parents=True)
    total = steps * 10
    for step in range(total):
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        records.append(eb.make_scalar_event("train/loss", step, loss.item(), 1.7e9 + step))
        records.append(eb.make_scalar_event("train/lr", step, 1e-3, 1.7e9 + step))
        if step % 10 == 0:
            for name, p in model.named_parameters():
                records.append(eb.make_hist_event(f"weight_hist/{name}", step, p.detach().numpy().ravel(), 1.7e9 + step))
                records.append(eb.make_hist_event(f"grad_hist/{name}", step, p.grad.numpy().ravel(), 1.7e9 + step))
        opt.step()
        if step % (total // checkpoints) == total // checkpoints - 1:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step},
                       path / "checkpoints" / f"step_{step}.pt")
    eb.write_records(path / "events.out.tfevents.1700000000.bench", records)
    (path / "done").write_text("ok")
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the generated run in benchmarks/_data/")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    run = build_run(DATA)
    print(f"generated run in {time.perf_counter() - t:.1f} s: {run}")

    from report_gen.engine import Options, diagnose
    from report_gen.render import render

    t0 = time.perf_counter()
    report = diagnose([str(run)], Options())
    t1 = time.perf_counter()
    out = Path(tempfile.mkdtemp())
    t2 = time.perf_counter()
    render(report, out)
    t3 = time.perf_counter()
    timing = report["timing"]
    rows = [("read (discover, events, checkpoints)", timing["read_s"]), ("facts (weights, dynamics, gradients)", timing["facts_s"]),
            ("rules", timing["rules_s"]), ("evidence for plots", timing["details_s"]),
            ("render (plots + HTML + Markdown + JSON)", t3 - t2)]
    print(f"\n{'phase':<42}{'seconds':>9}")
    for name, secs in rows:
        print(f"{name:<42}{secs:>9.2f}")
    total = (t1 - t0) + (t3 - t2)
    print(f"{'total':<42}{total:>9.2f}   (target < 15 s)")
    print(f"findings: {report['summary']['counts']}, html {(out / 'report.html').stat().st_size / 1e3:.0f} kB")
    shutil.rmtree(out)
    if not args.keep:
        shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
