"""A transformers TrainerCallback that logs what report_gen's rules read into the run's folder.

    from report_gen.integrations.hf import ReportGenCallback

    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[ReportGenCallback()])
    trainer.train()                      # then: report-gen diagnose <args.output_dir>

What it writes, with report_gen.monitor.TrainingMonitor (same tags and intervals, DESIGN §6): weight and
gradient histograms, update ratios and activation statistics of the activation layers. The Trainer's
own logs (`loss`, `grad_norm`, `learning_rate`, `eval_*`, every `logging_steps`) are not written again:
report_gen reads them from the `trainer_state.json` the Trainer leaves in every `checkpoint-N/` (and
from its TensorBoard folder with `report_to="tensorboard"`); a second copy would only be reported as a
duplicate series.

Where: a new event file in `args.output_dir`, the folder that also holds the Trainer's `checkpoint-N/`
folders, so the events and the checkpoints are one run for report_gen (with `report_to="tensorboard"`
the Trainer's `runs/<date>_<host>/` folder sits inside it and joins the same run). `log_dir=` overrides.

Steps: the Trainer's `global_step` before the update (0 for the first optimizer step). Gradients are
taken in `on_pre_optimizer_step`, after the Trainer clipped them (the logged `grad_norm` is the norm
before clipping); update ratios, weights and activations in `on_optimizer_step`.

Checkpoints: the Trainer's `checkpoint-N/` folders already hold the optimizer state (`optimizer.pt`),
so nothing is added. With `save_strategy="no"` the callback asks the Trainer for one checkpoint at the
end of training (its usual `checkpoint-N/`, optimizer state and trainer_state.json included);
`save_checkpoints=False` turns that off.

Distributed: every process runs the hooks (statistics are all-reduced by the monitor); only the world
process zero writes. transformers is imported when `ReportGenCallback` is first looked up.
"""
from __future__ import annotations

import os
from typing import Any

from report_gen.integrations._shared import lazy_class, monitor_options


def _build() -> type:
    try:
        from transformers import TrainerCallback
    except ImportError as error:
        raise ImportError("report_gen.integrations.hf needs transformers: pip install transformers") from error
    if not hasattr(TrainerCallback, "on_pre_optimizer_step"):  # the hooks on either side of optimizer.step()
        import transformers

        raise ImportError(f"report_gen.integrations.hf needs transformers >= 4.46 (installed: "
                          f"{transformers.__version__}): pip install -U transformers")

    class ReportGenCallback(TrainerCallback):
        """Logs weights, gradients, update ratios and activations for report_gen.

        log_dir: where to write the event file (default: the Trainer's `output_dir`).
        save_checkpoints: with `save_strategy="no"`, have the Trainer save one checkpoint at the end.
        monitor_options: TrainingMonitor options (hist_interval=100, scalar_interval=10, layers=None,
        activation_sample_prob=1.0, seed=0, hist_sample=4096).
        """

        def __init__(self, log_dir: str | os.PathLike | None = None, *, save_checkpoints: bool = True,
                     **monitor_opts: Any) -> None:
            self.log_dir = None if log_dir is None else os.fspath(log_dir)
            self.save_checkpoints = save_checkpoints
            self._options = monitor_options(monitor_opts)
            self.monitor = None

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            from report_gen.monitor import TrainingMonitor

            rank = 0 if state.is_world_process_zero else max(1, args.process_index)
            self.monitor = TrainingMonitor(self.log_dir or args.output_dir, rank=rank, log_grad_norm=False,
                                           **self._options)
            if model is not None:
                self.monitor.watch(model, first_step=state.global_step)

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None,
                                  **kwargs: Any) -> None:
            if self.monitor is not None and model is not None:
                self.monitor.log_gradients(model, state.global_step)

        def on_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if self.monitor is not None and model is not None:
                self.monitor.log_after_step(model, state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.save_checkpoints and args.save_strategy == "no" and state.global_step >= state.max_steps:
                control.should_save = True  # the Trainer's own checkpoint-N/, optimizer state included

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.monitor is not None:
                self.monitor.close()
                self.monitor = None

    return ReportGenCallback


def __getattr__(name: str) -> Any:
    if name == "ReportGenCallback":
        return lazy_class(globals(), name, _build)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
