"""Step-time overhead of the Lightning and HF Trainer ReportGenCallbacks at default settings (CPU).

Trains the small CNN of bench_monitor.py (3x32x32 inputs, batch 64, three conv layers) with each
framework, with and without report_gen's callback (TrainingMonitor defaults: scalar_interval=10,
hist_interval=100, every ReLU hooked), several repetitions interleaved (ABBA order, so drift of a shared
machine hits both sides alike). A timing callback on both sides measures the optimizer steps after a
warm-up (framework set-up, the first steps and the end-of-training save are outside the window) in wall
time and in process CPU time (all threads, TensorBoard's writer threads too). Prints medians and ratios.

    python benchmarks/bench_integrations.py [--steps 300] [--reps 3] [--threads 1] [--only lightning|hf]
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_monitor import small_cnn  # noqa: E402

WARMUP = 20


class Window:
    """Wall and CPU clocks between the start of step WARMUP and the end of the last step."""

    def __init__(self, steps: int) -> None:
        self.steps, self.start, self.result = steps, None, None

    def step_started(self, step: int) -> None:
        if step == WARMUP:
            self.start = (time.perf_counter(), time.process_time())

    def step_ended(self, step: int) -> None:
        if step == self.steps - 1 and self.start is not None:
            n = self.steps - WARMUP
            self.result = ((time.perf_counter() - self.start[0]) / n, (time.process_time() - self.start[1]) / n)


def data(steps: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(steps * batch, 3, 32, 32, generator=gen), torch.randint(0, 10, (steps * batch,), generator=gen)


def run_lightning(steps: int, batch: int, root: str, with_callback: bool) -> tuple[float, float]:
    import lightning.pytorch as L

    from report_gen.integrations.lightning import ReportGenCallback

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = small_cnn()

        def training_step(self, b, i):
            loss = nn.functional.cross_entropy(self.net(b[0]), b[1])
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, module, b, i):
            window.step_started(trainer.global_step)

        def on_train_batch_end(self, trainer, module, out, b, i):
            window.step_ended(trainer.global_step - 1)

    window = Window(steps)
    torch.manual_seed(0)
    x, y = data(steps, batch)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)
    callbacks = [Timer()] + ([ReportGenCallback()] if with_callback else [])
    trainer = L.Trainer(max_epochs=1, default_root_dir=root, accelerator="cpu", devices=1, callbacks=callbacks,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Module(), loader)
    return window.result


def run_hf(steps: int, batch: int, root: str, with_callback: bool) -> tuple[float, float]:
    import transformers

    from report_gen.integrations.hf import ReportGenCallback

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = small_cnn()

        def forward(self, x, labels=None):
            logits = self.net(x)
            return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}

    class Timer(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            window.step_started(state.global_step)

        def on_step_end(self, args, state, control, **kw):
            window.step_ended(state.global_step - 1)

    window = Window(steps)
    torch.manual_seed(0)
    x, y = data(steps, batch)
    dataset = [{"x": xi, "labels": yi} for xi, yi in zip(x, y)]
    args = transformers.TrainingArguments(output_dir=root, max_steps=steps, per_device_train_batch_size=batch,
                                          learning_rate=0.01, report_to="none", save_strategy="no", use_cpu=True,
                                          disable_tqdm=True, dataloader_num_workers=0)
    callbacks = [Timer()] + ([ReportGenCallback()] if with_callback else [])
    transformers.Trainer(model=Model(), args=args, train_dataset=dataset, callbacks=callbacks).train()
    return window.result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", choices=("lightning", "hf"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    frameworks = {"lightning": run_lightning, "hf": run_hf}
    if args.only:
        frameworks = {args.only: frameworks[args.only]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in frameworks.items():
            run(WARMUP + 5, args.batch, f"{tmp}/{name}-warmup", True)  # imports, allocator, kernels
            results: dict[str, list[tuple[float, float]]] = {"baseline": [], "callback": []}
            for rep in range(args.reps):
                order = ["baseline", "callback"] if rep % 2 == 0 else ["callback", "baseline"]
                for side in order:
                    results[side].append(run(args.steps, args.batch, f"{tmp}/{name}-{side}-{rep}", side == "callback"))
                    wall, cpu = results[side][-1]
                    print(f"{name:9s} rep {rep} {side:8s} wall {wall * 1e3:7.2f} ms/step  cpu {cpu * 1e3:7.2f} ms/step",
                          flush=True)
            rows.append((name, results))
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.steps} steps "
          f"({args.steps - WARMUP} timed) x {args.reps} reps, batch {args.batch}, 3x32x32, callbacks at defaults")
    print("| framework | clock | without median ms/step | with ReportGenCallback | overhead |\n|---|---|---|---|---|")
    for name, results in rows:
        for column, clock in enumerate(["wall", "cpu"]):
            base = statistics.median(r[column] for r in results["baseline"])
            with_cb = statistics.median(r[column] for r in results["callback"])
            print(f"| {name} | {clock} | {base * 1e3:.2f} | {with_cb * 1e3:.2f} | {100 * (with_cb / base - 1):+.2f}% |")


if __name__ == "__main__":
    main()
