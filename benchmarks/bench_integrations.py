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
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_monitor import median_overhead, small_cnn  # noqa: E402

WARMUP = 20


class SelfTime:
    """Process CPU time spent inside report_gen's code: the callback's hooks and the forward hooks' reductions.

    A steadier number than the A/B difference on a loaded machine (it does not depend on the other
    side's run), but a lower bound: it leaves out what report_gen's work costs the rest of the step
    (caches, allocator, TensorBoard's writer thread).
    """

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, function):
        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - start
        return timed

    def instrument(self, callback) -> None:
        from report_gen import monitor

        for name in ("on_before_optimizer_step", "on_train_batch_end", "on_pre_optimizer_step", "on_optimizer_step",
                     "on_log"):
            if name in type(callback).__dict__:
                setattr(callback, name, self.wrap(getattr(callback, name)))
        if not hasattr(monitor._ActivationCapture._add, "__wrapped_by_bench__"):
            original = monitor._ActivationCapture._add
            timed = self.wrap(original)
            timed.__wrapped_by_bench__ = True
            monitor._ActivationCapture._add = timed


SELF = SelfTime()


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


def _instrumented(callback):
    SELF.instrument(callback)
    return callback


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
    callbacks = [Timer()] + ([_instrumented(ReportGenCallback())] if with_callback else [])
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
    callbacks = [Timer()] + ([_instrumented(ReportGenCallback())] if with_callback else [])
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
            SELF.seconds = 0.0
            for rep in range(args.reps):
                order = ["baseline", "callback"] if rep % 2 == 0 else ["callback", "baseline"]
                for side in order:
                    results[side].append(run(args.steps, args.batch, f"{tmp}/{name}-{side}-{rep}", side == "callback"))
                    wall, cpu = results[side][-1]
                    print(f"{name:9s} rep {rep} {side:8s} wall {wall * 1e3:7.2f} ms/step  cpu {cpu * 1e3:7.2f} ms/step",
                          flush=True)
            rows.append((name, results, SELF.seconds / (args.reps * args.steps)))
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.steps} steps "
          f"({args.steps - WARMUP} timed) x {args.reps} reps, batch {args.batch}, 3x32x32, callbacks at defaults")
    print("| framework | clock | without median ms/step | with ReportGenCallback | overhead |\n|---|---|---|---|---|")
    for name, results, _ in rows:
        for clock, base, with_cb, overhead in median_overhead(results["baseline"], results["callback"]):
            print(f"| {name} | {clock} | {base:.2f} | {with_cb:.2f} | {overhead:+.2f}% |")
    print("\n| framework | report_gen's own CPU ms/step (hooks + activation reductions) | share of the step without it |"
          "\n|---|---|---|")
    for name, results, own in rows:
        base_cpu = next(b for clock, b, _, _ in median_overhead(results["baseline"], results["callback"]) if clock == "cpu")
        print(f"| {name} | {own * 1e3:.3f} | {100 * own * 1e3 / base_cpu:.2f}% |")


if __name__ == "__main__":
    main()
