"""Step-time overhead of TrainingMonitor at default settings on a small CNN (CPU).

Trains the same small CNN (32x32 inputs, batch 64, three conv layers) with and without the
monitor, several repetitions interleaved (ABBA order, so drift of a shared machine hits both
sides alike), and prints the median step time of each side and the overhead, both in wall time
and in process CPU time (all threads, including TensorBoard's writer threads). On a machine
shared with other work, CPU time with --threads 1 is the steadier of the two.

    python benchmarks/bench_monitor.py [--steps 500] [--reps 3] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from report_gen.monitor import TrainingMonitor  # noqa: E402


def small_cnn() -> nn.Module:
    """Three 3x3 conv layers with ReLU and pooling, then a linear classifier (10 classes)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, 10))


def train(steps: int, batch: int, log_dir: str | None) -> tuple[float, float]:
    """(wall, CPU) seconds per step for `steps` SGD steps on synthetic data; monitored if log_dir is set."""
    torch.manual_seed(0)
    model = small_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    data = [(torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))) for _ in range(8)]
    monitor = TrainingMonitor(log_dir, model=model) if log_dir else None
    try:
        start, start_cpu = time.perf_counter(), time.process_time()
        for step in range(steps):
            x, y = data[step % len(data)]
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            if monitor:
                monitor.log_training_step(model, x, step, loss=loss, optimizer=optimizer)
            optimizer.step()
        return (time.perf_counter() - start) / steps, (time.process_time() - start_cpu) / steps
    finally:
        if monitor:
            monitor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train(20, args.batch, None)  # warm-up: allocator, kernels, imports
    runs: dict[str, list[tuple[float, float]]] = {"baseline": [], "monitor": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            order = ["baseline", "monitor"] if rep % 2 == 0 else ["monitor", "baseline"]
            for side in order:
                log_dir = f"{tmp}/rep{rep}" if side == "monitor" else None
                runs[side].append(train(args.steps, args.batch, log_dir))
                wall, cpu = runs[side][-1]
                print(f"rep {rep} {side:8s} wall {wall * 1e3:7.2f} ms/step  cpu {cpu * 1e3:7.2f} ms/step", flush=True)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.steps} steps x "
          f"{args.reps} reps, batch {args.batch}, 3x32x32, monitor at defaults")
    print("| clock | baseline median ms/step | monitor median ms/step | overhead |\n|---|---|---|---|")
    for clock, base, mon, overhead in median_overhead(runs["baseline"], runs["monitor"]):
        print(f"| {clock} | {base:.2f} | {mon:.2f} | {overhead:+.2f}% |")


def median_overhead(baseline: list[tuple[float, float]], other: list[tuple[float, float]]):
    """(clock, baseline ms, other ms, overhead %) for wall and CPU, from per-run (wall, cpu) seconds per step."""
    for column, clock in enumerate(["wall", "cpu"]):
        base = statistics.median(r[column] for r in baseline)
        with_it = statistics.median(r[column] for r in other)
        yield clock, base * 1e3, with_it * 1e3, 100 * (with_it / base - 1)


if __name__ == "__main__":
    main()
