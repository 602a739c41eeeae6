"""Training-side helper that logs exactly what report_gen reads (DESIGN §6 default tags).

    with TrainingMonitor("runs/exp1", model=model) as monitor:
        for step, (x, y) in enumerate(loader):
            loss = criterion(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            monitor.log_training_step(model, x, step, loss=loss, optimizer=optimizer)
            optimizer.step()

Call `log_training_step` on every step: steps that are not due cost a modulo and a flag check.
Tags written: `train/loss`, `train/lr`, `train/grad_norm`, `update_ratio/<param>`,
`activation_stats/<layer>` (add_scalars: mean, std, max, min) every `scalar_interval` steps;
`weight_hist/<param>`, `grad_hist/<param>`, `activations/<layer>` every `hist_interval` steps.

Activations come from the training forward itself: forward hooks registered once record reduced
statistics (sums, min, max and a strided sample of at most `hist_sample` values) only during the
forward of a step due for logging (the monitor arms them after logging step s when step s + 1 is
due, so call it every step), and only in training mode (validation passes are ignored). When that
forward was not captured (first call without `model=`/`watch()`, or steps not called one by one),
`inputs` given to `log_training_step` are run once more without gradients in eval mode instead.

Update ratios ||ΔW|| / ||W|| need one optimizer step between two calls: with `log_training_step`
the weights are snapshotted on a due step and compared at the next call; with the split API
(`log_gradients` before `optimizer.step()`, `log_after_step` after it) the ratio is exact.

DistributedDataParallel/DataParallel models are unwrapped (`.module`); only rank 0 writes; the loss
and activation statistics are all-reduced across ranks (every rank must call the monitor on the same
steps with the same seed); activation histograms use rank 0's own sample; gradients are already
averaged by DDP and weights are identical.
"""
from __future__ import annotations

import math
import os
import random
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from report_gen.facts.activations import activation_kind, even_indices
from report_gen.vocab import WRITTEN

_DEFAULT_KINDS = ("relu-like", "sigmoid", "tanh")
_HIST_BINS = 30


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce(tensor: torch.Tensor, op: Any) -> torch.Tensor:
    """In-place all_reduce when a process group with more than one rank exists."""
    if _world_size() > 1:
        dist.all_reduce(tensor, op=op)
    return tensor


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def default_layers(model: nn.Module, cap: int = 16) -> list[str]:
    """ReLU-like, sigmoid and tanh modules of the model, at most `cap` evenly spread over depth."""
    names = [name for name, m in model.named_modules()
             if name and activation_kind(type(m).__name__) in _DEFAULT_KINDS]
    return [names[i] for i in even_indices(len(names), cap)]


@dataclass
class _LayerRecord:
    """Running reduction of one layer's outputs during one armed forward (tensors stay on device)."""

    total: torch.Tensor
    total_sq: torch.Tensor
    count: int
    low: torch.Tensor
    high: torch.Tensor
    samples: list[torch.Tensor] = field(default_factory=list)


class _ActivationCapture:
    """Forward hooks that do nothing unless armed for a step."""

    def __init__(self, hist_sample: int) -> None:
        self.hist_sample = hist_sample
        self.step: int | None = None        # the step whose forward is being recorded
        self.with_histogram = False
        self.any_mode = False               # also record eval-mode forwards (the inputs fallback)
        self.records: dict[str, _LayerRecord] = {}

    def arm(self, step: int | None, with_histogram: bool = False) -> None:
        self.step, self.with_histogram, self.records = step, with_histogram, {}

    def hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def record(module: nn.Module, _args: Any, output: Any) -> None:
            if self.step is None or not (module.training or self.any_mode):
                return
            if isinstance(output, torch.Tensor) and output.is_floating_point() and output.numel():
                self._add(name, output.detach())
        return record

    def _add(self, name: str, x: torch.Tensor) -> None:
        low, high = torch.aminmax(x)
        rec = self.records.get(name)
        if rec is None:
            zero = torch.zeros((), dtype=torch.float64, device=x.device)
            rec = self.records[name] = _LayerRecord(zero, zero.clone(), 0, low.double(), high.double())
        # float32 reductions (cascade-summed by torch) are ~10x faster than float64 ones
        rec.total = rec.total + x.sum().double()
        rec.total_sq = rec.total_sq + torch.linalg.vector_norm(x).double().square()
        rec.count += x.numel()
        rec.low = torch.minimum(rec.low, low.double())
        rec.high = torch.maximum(rec.high, high.double())
        if self.with_histogram:
            flat = x.reshape(-1)
            # a copy: a view would keep the whole output alive and see later in-place ops
            rec.samples.append(flat[:: max(1, flat.numel() // self.hist_sample)][: self.hist_sample].clone())


@dataclass
class _Plan:
    """What is due at one step."""

    step: int
    scalars: bool
    histograms: bool
    activations: bool


class TrainingMonitor:
    """Logs weights, gradients, update ratios, activations and training scalars for report_gen."""

    def __init__(self, log_dir_or_writer: str | os.PathLike | Any, *,
                 layers: list[str] | None = None, hist_interval: int = 100, scalar_interval: int = 10,
                 activation_sample_prob: float = 1.0, rank: int | None = None, seed: int = 0,
                 model: nn.Module | None = None, hist_sample: int = 4096, log_grad_norm: bool = True) -> None:
        """Create the monitor; only rank 0 opens (or uses) a writer.

        log_dir_or_writer: a log directory (the monitor owns and closes its SummaryWriter) or an
        existing SummaryWriter (flushed, not closed). layers: module names whose outputs are logged
        (default: every ReLU-like/sigmoid/tanh module, at most 16). activation_sample_prob: chance
        that a due step also logs activations (seeded, identical on every rank). rank: defaults to
        torch.distributed's rank when initialised, else 0. model: attach hooks now so the very
        first step's forward is captured (else done by the first log call). hist_sample: most
        activation values kept per layer for a histogram. log_grad_norm: write `train/grad_norm`
        (off when the training framework already logs it under that tag, e.g. the HF Trainer).
        A writer may be any SummaryWriter-like object (torch's, tensorboardX's).
        """
        if hist_interval < 1 or scalar_interval < 1:
            raise ValueError("hist_interval and scalar_interval must be >= 1")
        if not 0.0 <= activation_sample_prob <= 1.0:
            raise ValueError("activation_sample_prob must be within [0, 1]")
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.rank = rank
        self.hist_interval = hist_interval
        self.scalar_interval = scalar_interval
        self.activation_sample_prob = activation_sample_prob
        self.log_grad_norm = log_grad_norm
        self._owns_writer = isinstance(log_dir_or_writer, (str, os.PathLike))
        self._writer: SummaryWriter | None = None
        if rank == 0:
            self._writer = SummaryWriter(os.fspath(log_dir_or_writer)) if self._owns_writer else log_dir_or_writer
        self._requested_layers = layers
        self._layers: list[str] = []
        self._rng = random.Random(seed)
        self._capture = _ActivationCapture(hist_sample)
        self._handles: list[Any] = []
        self._watched: nn.Module | None = None
        self._plan: _Plan | None = None
        self._snapshot: tuple[int, dict[str, torch.Tensor]] | None = None
        self._closed = False
        if model is not None:
            self.watch(model)

    # ------------------------------------------------------------------ public API

    @property
    def layers(self) -> list[str]:
        """Names of the modules whose activations are logged (empty before a model is attached)."""
        return list(self._layers)

    def watch(self, model: nn.Module, first_step: int = 0) -> None:
        """Register the activation hooks once and arm them for the forward of `first_step`."""
        self._register(unwrap(model))
        self._arm(first_step)

    def log_training_step(self, model: nn.Module, inputs: Any = None, step: int = 0, *,
                          loss: Any = None, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Log everything due at `step`: call after loss.backward() and before optimizer.zero_grad()."""
        net = self._attach(model)
        with torch.no_grad():
            self._flush_update_ratios(net, step - 1)
            plan = self._plan_for(step)
            self._log_scalars(plan, loss, optimizer)
            self._log_gradients(net, plan)
            self._log_weights(net, plan)
            self._log_activations(net, plan, inputs)
            self._take_snapshot(net, plan)
        self._arm(step + 1)

    def log_gradients(self, model: nn.Module, step: int) -> None:
        """Split API, before optimizer.step(): gradient histograms, grad norm, weight snapshot."""
        net = self._attach(model)
        with torch.no_grad():
            plan = self._plan_for(step)
            self._log_gradients(net, plan)
            self._take_snapshot(net, plan)

    def log_after_step(self, model: nn.Module, step: int, *, loss: Any = None,
                       optimizer: torch.optim.Optimizer | None = None, inputs: Any = None) -> None:
        """Split API, after optimizer.step(): update ratios, weights, activations, loss and lr."""
        net = self._attach(model)
        with torch.no_grad():
            self._flush_update_ratios(net, step)
            plan = self._plan_for(step)
            self._log_scalars(plan, loss, optimizer)
            self._log_weights(net, plan)
            self._log_activations(net, plan, inputs)
        self._arm(step + 1)

    def close(self) -> None:
        """Remove the hooks, flush, and close the writer if the monitor created it (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._capture.arm(None)
        self._snapshot = None
        if self._writer is not None and not self._closed:
            self._writer.flush()
            if self._owns_writer:
                self._writer.close()
        self._closed = True

    def __enter__(self) -> "TrainingMonitor":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ scheduling

    def _attach(self, model: nn.Module) -> nn.Module:
        if self._closed:
            raise RuntimeError("TrainingMonitor is closed")
        net = unwrap(model)
        self._register(net)  # a first call comes after this step's forward: nothing to arm
        return net

    def _register(self, net: nn.Module) -> None:
        """Register the forward hooks on the chosen layers of `net` (once)."""
        if self._watched is net:
            return
        if self._watched is not None:
            raise ValueError("this TrainingMonitor already watches another model")
        named = dict(net.named_modules())
        layers = self._requested_layers if self._requested_layers is not None else default_layers(net)
        unknown = [name for name in layers if name not in named]
        if unknown:
            raise ValueError(f"TrainingMonitor: layer(s) not in the model: {', '.join(unknown[:5])}")
        self._layers = list(layers)
        self._handles = [named[name].register_forward_hook(self._capture.hook(name)) for name in self._layers]
        self._watched = net

    def _plan_for(self, step: int) -> _Plan:
        """The plan armed for this step, or a new one (one seeded coin per due step)."""
        if self._plan is None or self._plan.step != step:
            scalars, histograms = step % self.scalar_interval == 0, step % self.hist_interval == 0
            coin = (scalars or histograms) and self._rng.random() < self.activation_sample_prob
            self._plan = _Plan(step, scalars, histograms, coin)
        return self._plan

    def _arm(self, step: int) -> None:
        """Arm the hooks for the forward of `step` if its activations are due."""
        plan = self._plan_for(step)
        self._capture.arm(step if plan.activations else None, plan.histograms)

    # ------------------------------------------------------------------ logging

    def _log_scalars(self, plan: _Plan, loss: Any, optimizer: torch.optim.Optimizer | None) -> None:
        if not plan.scalars:
            return
        if loss is not None:
            total = torch.tensor(float(loss), dtype=torch.float64, device=self._device())
            _all_reduce(total, dist.ReduceOp.SUM)
            self._scalar(WRITTEN.train_loss, float(total) / _world_size(), plan.step)
        if optimizer is not None and optimizer.param_groups:
            self._scalar(WRITTEN.lr, float(optimizer.param_groups[0]["lr"]), plan.step)

    def _log_gradients(self, net: nn.Module, plan: _Plan) -> None:
        if not (plan.scalars or plan.histograms):
            return
        grads = [(name, p.grad) for name, p in net.named_parameters() if p.grad is not None]
        if plan.scalars and grads and self.log_grad_norm:
            device = self._device()
            norms = torch.stack([torch.linalg.vector_norm(g).to(device) for _, g in grads])
            self._scalar(WRITTEN.grad_norm, float(torch.linalg.vector_norm(norms)), plan.step)
        if plan.histograms:
            for name, grad in grads:
                self._histogram(WRITTEN.grad_hist + name, grad, plan.step)

    def _log_weights(self, net: nn.Module, plan: _Plan) -> None:
        if plan.histograms:
            for name, param in net.named_parameters():
                self._histogram(WRITTEN.weight_hist + name, param, plan.step)

    def _take_snapshot(self, net: nn.Module, plan: _Plan) -> None:
        if plan.scalars:
            self._snapshot = (plan.step, {name: p.detach().clone() for name, p in net.named_parameters()
                                          if p.requires_grad})

    def _flush_update_ratios(self, net: nn.Module, snapshot_step: int) -> None:
        """Log ||W_now - W_then|| / ||W_then|| for a snapshot taken at `snapshot_step` (else drop it).

        Parameters whose snapshot norm is 0 (e.g. zero-initialised biases) have no ratio and are skipped.
        """
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is None or snapshot[0] != snapshot_step:
            return
        params = dict(net.named_parameters())
        names = [name for name in snapshot[1] if name in params]
        if not names:
            return
        device = self._device()
        scales = torch.stack([torch.linalg.vector_norm(snapshot[1][n]).to(device) for n in names])
        deltas = torch.stack([torch.linalg.vector_norm(params[n].detach() - snapshot[1][n]).to(device)
                              for n in names])
        for name, delta, scale in zip(names, deltas.tolist(), scales.tolist()):
            if scale > 0:
                self._scalar(WRITTEN.update_ratio + name, delta / scale, snapshot_step)

    def _log_activations(self, net: nn.Module, plan: _Plan, inputs: Any) -> None:
        if not plan.activations or not self._layers:
            return
        if self._capture.step != plan.step and inputs is not None:
            self._capture_with_extra_forward(net, plan, inputs)
        records = self._capture.records if self._capture.step == plan.step else {}
        stats = self._reduce_across_ranks(records)
        self._capture.arm(None)
        for name, (total, total_sq, count, low, high) in zip(self._layers, stats.tolist()):
            if count == 0:
                continue
            mean = total / count
            var = max(total_sq / count - mean * mean, 0.0) * count / max(count - 1, 1)
            if plan.scalars and self._writer is not None:
                stats = dict(zip(WRITTEN.act_stat_keys, (mean, math.sqrt(var), high, low)))  # mean, std, max, min
                self._writer.add_scalars(WRITTEN.act_stats + name, stats, plan.step)
            if plan.histograms and name in records and records[name].samples:
                self._histogram(WRITTEN.act_hist + name, torch.cat(records[name].samples), plan.step)

    def _capture_with_extra_forward(self, net: nn.Module, plan: _Plan, inputs: Any) -> None:
        """Run `inputs` once more (no grad, eval mode) with the hooks armed for this step.

        A failure (e.g. a whole (inputs, targets) batch passed) only warns: logging never stops training.
        """
        self._capture.arm(plan.step, plan.histograms)
        self._capture.any_mode = True
        was_training = net.training
        try:
            net.eval()
            if isinstance(inputs, dict):
                net(**inputs)
            elif isinstance(inputs, (tuple, list)):
                net(*inputs)
            else:
                net(inputs)
        except Exception as exc:  # user model code: report, keep training
            self._capture.arm(None)
            warnings.warn(f"TrainingMonitor: step {plan.step}: running `inputs` through the model for "
                          f"activation statistics failed ({type(exc).__name__}: {exc}); skipped", stacklevel=4)
        finally:
            net.train(was_training)
            self._capture.any_mode = False

    def _reduce_across_ranks(self, records: dict[str, _LayerRecord]) -> torch.Tensor:
        """(layers, 5) float64 rows: sum, sum of squares, count, min, max — all-reduced over ranks."""
        device = self._device()
        sums = torch.zeros(len(self._layers), 3, dtype=torch.float64, device=device)
        extremes = torch.full((len(self._layers), 2), -math.inf, dtype=torch.float64, device=device)
        for i, name in enumerate(self._layers):
            rec = records.get(name)
            if rec is not None:
                sums[i, :2] = torch.stack([rec.total, rec.total_sq]).to(device)
                sums[i, 2] = rec.count
                extremes[i] = torch.stack([-rec.low, rec.high]).to(device)
        _all_reduce(sums, dist.ReduceOp.SUM)
        _all_reduce(extremes, dist.ReduceOp.MAX)
        return torch.cat([sums, -extremes[:, :1], extremes[:, 1:]], dim=1).cpu()

    def _device(self) -> torch.device:
        params = self._watched.parameters() if self._watched is not None else iter(())
        first = next(params, None)
        return first.device if first is not None else torch.device("cpu")

    # ------------------------------------------------------------------ writing

    def _scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)

    def _histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        """Write a histogram; NaN/Inf values are counted in num/min/max/sum but not bucketed."""
        if self._writer is None or values.numel() == 0:
            return
        v = values.detach().reshape(-1).double().cpu()
        finite = v[torch.isfinite(v)].numpy()
        if finite.size:
            counts, edges = np.histogram(finite, bins=_HIST_BINS)
            limits, bucket_counts = edges.tolist(), [0.0] + counts.astype(float).tolist()
        else:
            limits, bucket_counts = [0.0], [0.0]
        self._writer.add_histogram_raw(tag, min=float(v.min()), max=float(v.max()), num=v.numel(),
                                       sum=float(v.sum()), sum_squares=float(v.square().sum()),
                                       bucket_limits=limits, bucket_counts=bucket_counts, global_step=step)
