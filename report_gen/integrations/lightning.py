"""A Lightning callback that logs what report_gen's rules read, through the run's own logger.

    from report_gen.integrations.lightning import ReportGenCallback

    trainer = lightning.pytorch.Trainer(max_epochs=10, callbacks=[ReportGenCallback()])
    trainer.fit(model, loaders)          # then: report-gen diagnose lightning_logs/version_0

What it writes, with report_gen.monitor.TrainingMonitor (same tags and intervals, DESIGN §6): weight and
gradient histograms, update ratios, activation statistics of the activation layers, `train/loss` (the
loss `training_step` returned), `train/lr` and `train/grad_norm`. Where: into the first logger's
SummaryWriter when it is a TensorBoardLogger (one event stream, beside the metrics you log yourself),
else into a new event file in `trainer.log_dir` (a CSVLogger's `version_N/`, or `default_root_dir`).

Steps are optimizer steps: gradients are taken in `on_before_optimizer_step` (after backward, before
clipping and the update), weights, update ratios and the loss in `on_train_batch_end` after the
update. With gradient accumulation the activations of every micro-batch of a due step are pooled.

Checkpoints: Lightning's ModelCheckpoint (on by default) already saves the weights and the optimizer
state, so nothing is added. When the trainer has no checkpoint callback (`enable_checkpointing=False`),
the callback saves a full Lightning checkpoint (`trainer.save_checkpoint`, optimizer state included)
at the end of every training epoch into `<log dir>/checkpoints/`, keeping the newest `keep_checkpoints`.

Distributed: every rank runs the hooks (loss and activation statistics are all-reduced by the monitor);
only global rank 0 writes events and checkpoints.

Both import names work: the class derives from `lightning.pytorch.Callback` and from
`pytorch_lightning.Callback`, whichever of the two are installed, so either Trainer accepts it. The
frameworks are imported when `ReportGenCallback` is first looked up, not by `import report_gen`.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

from report_gen.integrations._shared import lazy_class, monitor_options

_FLAVOURS = ("lightning.pytorch", "pytorch_lightning")


def _flavours() -> list[Any]:
    """The installed Lightning packages (`lightning.pytorch`, `pytorch_lightning`), imported."""
    found, error = [], None
    for name in _FLAVOURS:
        try:
            found.append(importlib.import_module(name))
        except ImportError as missing:
            error = missing
    if not found:
        raise ImportError("report_gen.integrations.lightning needs Lightning: pip install lightning "
                          "(or pytorch_lightning)") from error
    return found


def _build() -> type:
    flavours = _flavours()
    tensorboard_loggers = tuple(m.loggers.TensorBoardLogger for m in flavours)

    class ReportGenCallback(*(m.Callback for m in flavours)):  # type: ignore[misc]
        """Logs weights, gradients, update ratios, activations, loss, lr and grad norm for report_gen.

        log_dir: write a new event file there instead of the trainer's logger / log dir.
        log_loss: log the loss returned by `training_step` as `train/loss` (on by default: report_gen
        reads it whatever tags your own `self.log` calls use).
        save_checkpoints: when the trainer has no ModelCheckpoint, save one per epoch (see the module
        docstring); keep_checkpoints: how many of those to keep.
        monitor_options: TrainingMonitor options (hist_interval=100, scalar_interval=10, layers=None,
        activation_sample_prob=1.0, seed=0, hist_sample=4096).
        """

        def __init__(self, log_dir: str | os.PathLike | None = None, *, log_loss: bool = True,
                     save_checkpoints: bool = True, keep_checkpoints: int = 3, **monitor_opts: Any) -> None:
            super().__init__()
            if keep_checkpoints < 1:
                raise ValueError("keep_checkpoints must be >= 1")
            self.log_dir = None if log_dir is None else os.fspath(log_dir)
            self.log_loss = log_loss
            self.save_checkpoints = save_checkpoints
            self.keep_checkpoints = keep_checkpoints
            self._options = monitor_options(monitor_opts)
            self.monitor = None
            self._run_dir: str | None = None
            self._pending: int | None = None      # optimizer step whose gradients were logged
            self._saving = False
            self._saved: list[str] = []

        # -------------------------------------------------------------- set-up and tear-down

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            from report_gen.monitor import TrainingMonitor

            target = self._writer_or_dir(trainer)
            self.monitor = TrainingMonitor(target, rank=trainer.global_rank, **self._options)
            self.monitor.watch(pl_module, first_step=trainer.global_step)
            self._pending = None
            self._saving = self.save_checkpoints and not trainer.checkpoint_callbacks

        def _writer_or_dir(self, trainer: Any) -> Any:
            """The TensorBoardLogger's SummaryWriter, else a folder (`log_dir` or the trainer's log dir)."""
            run_dir = trainer.log_dir  # a collective: every rank asks
            self._run_dir = self.log_dir or run_dir or trainer.default_root_dir
            if self.log_dir is None and trainer.loggers and isinstance(trainer.loggers[0], tensorboard_loggers):
                if trainer.global_rank == 0:
                    return trainer.loggers[0].experiment
            return self._run_dir

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self._close()

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            self._close()  # a crashed run is the one to diagnose: flush what was logged

        def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
            self._close()

        def _close(self) -> None:
            if self.monitor is not None:
                self.monitor.close()
                self.monitor = None

        # -------------------------------------------------------------- every optimizer step

        def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
            if self.monitor is None or self._pending == trainer.global_step:
                return  # manual optimisation with several optimizers: once per step
            self._pending = trainer.global_step
            self.monitor.log_gradients(pl_module, self._pending)

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                               batch_idx: int) -> None:
            if self.monitor is None or self._pending is None:
                return  # a micro-batch of an accumulated step: no update yet
            step, self._pending = self._pending, None
            loss = _loss_of(outputs) if self.log_loss else None
            optimizer = trainer.optimizers[0] if trainer.optimizers else None
            self.monitor.log_after_step(pl_module, step, loss=loss, optimizer=optimizer)

        # -------------------------------------------------------------- checkpoints

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if not self._saving:
                return
            path = os.path.join(self._run_dir, "checkpoints",
                                f"report_gen-epoch={trainer.current_epoch}-step={trainer.global_step}.ckpt")
            trainer.save_checkpoint(path)  # every rank calls it; the strategy writes on rank 0
            if path not in self._saved:
                self._saved.append(path)
            while len(self._saved) > self.keep_checkpoints:
                trainer.strategy.remove_checkpoint(self._saved.pop(0))

    return ReportGenCallback


def _loss_of(outputs: Any) -> Any:
    """The loss in what `training_step` returned (a tensor or a dict with "loss"), else None."""
    if isinstance(outputs, dict):
        outputs = outputs.get("loss")
    return outputs if outputs is not None and getattr(outputs, "numel", lambda: 0)() == 1 else None


def __getattr__(name: str) -> Any:
    if name == "ReportGenCallback":
        return lazy_class(globals(), name, _build)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
