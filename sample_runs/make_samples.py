"""Regenerate the bundled sample runs: tiny real trainings on synthetic data, CPU only, deterministic.

Usage::

    python sample_runs/make_samples.py [--out sample_runs] [--only NAME ...] [--epochs N]

Each run writes ``<out>/<name>/`` (cleared first) with TensorBoard event files, ``checkpoints/`` and a
``probe.pt`` input batch, then prints a one-line summary with the numbers that show its fault. The
model of a run is rebuilt with ``sample_runs/models.py:<name>``.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch
import torchvision
from safetensors.torch import save_file
from torch import nn
from torch.utils.tensorboard import SummaryWriter

HERE = Path(__file__).resolve().parent
PROBE_SIZE = 16  # samples in probe.pt
MAX_SCALAR_POINTS = 300  # per-step scalars are thinned to at most about this many points


def _load_models() -> ModuleType:
    """Import ``models.py`` next to this file by path (``sample_runs`` is not a package)."""
    spec = importlib.util.spec_from_file_location("sample_runs_models", HERE / "models.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


models = _load_models()


# ----------------------------------------------------------------------------------------- data

@dataclass(frozen=True)
class Split:
    """A train/validation split of inputs and integer labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def bar_images(n: int, gen: torch.Generator, noise: float = 0.4) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images 1 x 12 x 12 of one bright bar each; the label is its orientation.

    Classes: 0 horizontal, 1 vertical, 2 diagonal, 3 anti-diagonal. Bars are 7 pixels long at a
    random position with random brightness, on Gaussian noise.
    """
    size = models.IMAGE_SIZE
    directions = ((0, 1), (1, 0), (1, 1), (1, -1))
    labels = torch.randint(0, len(directions), (n,), generator=gen)
    centres = torch.randint(3, size - 3, (n, 2), generator=gen)
    brightness = 0.7 + 0.6 * torch.rand(n, generator=gen)
    images = noise * torch.randn(n, 1, size, size, generator=gen)
    offsets = torch.arange(-3, 4)
    for i in range(n):
        dr, dc = directions[int(labels[i])]
        rows = centres[i, 0] + dr * offsets
        cols = centres[i, 1] + dc * offsets
        images[i, 0, rows, cols] += brightness[i]
    return images, labels


def tabular(n: int, gen: torch.Generator, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples from a Gaussian mixture: ``centres`` is (classes, modes, features), unit noise.

    With two modes per class the classes are not linearly separable.
    """
    classes, modes, features = centres.shape
    labels = torch.randint(0, classes, (n,), generator=gen)
    mode = torch.randint(0, modes, (n,), generator=gen)
    return centres[labels, mode] + torch.randn(n, features, generator=gen), labels


def image_split(seed: int, n_train: int = 1024, n_val: int = 512) -> Split:
    """Bar images for training and a held-out validation set."""
    gen = torch.Generator().manual_seed(seed)
    return Split(*bar_images(n_train, gen), *bar_images(n_val, gen))


def tabular_split(seed: int, n_train: int = 2048, n_val: int = 512, spread: float = 1.5,
                  label_noise: float = 0.0) -> Split:
    """Gaussian-mixture tabular data; ``label_noise`` of the *training* labels are replaced at random."""
    gen = torch.Generator().manual_seed(seed)
    centres = spread * torch.randn(models.TABULAR_CLASSES, 2, models.TABULAR_FEATURES, generator=gen)
    x_train, y_train = tabular(n_train, gen, centres)
    x_val, y_val = tabular(n_val, gen, centres)
    noisy = torch.rand(n_train, generator=gen) < label_noise
    y_train = torch.where(noisy, torch.randint(0, models.TABULAR_CLASSES, (n_train,), generator=gen), y_train)
    return Split(x_train, y_train, x_val, y_val)


# ----------------------------------------------------------------------------------------- tags

@dataclass(frozen=True)
class TagScheme:
    """Where a run logs each signal. ``grad_norm`` None means the run does not log it."""

    train_loss: str
    val_loss: str
    train_acc: str
    val_acc: str
    lr: str
    grad_norm: str | None
    weights: str  # prefix of weight histograms: f"{weights}/{param name}"
    grads: str  # prefix of gradient histograms


TUTORIAL_TAGS = TagScheme("train/loss", "val/loss", "train/acc", "val/acc", "train/lr", "train/grad_norm",
                          "weight_hist", "grad_hist")
MLP_TAGS = TagScheme("loss/train", "loss/val", "accuracy/train", "accuracy/val", "learning_rate", None,
                     "weights", "gradients")


# ----------------------------------------------------------------------------------------- runs

@dataclass
class History:
    """What a run measured while training, for its summary."""

    train_loss: list[float] = field(default_factory=list)  # per logged step
    epoch_train_loss: list[float] = field(default_factory=list)
    epoch_train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)  # per epoch
    val_acc: list[float] = field(default_factory=list)
    first_nonfinite_step: int | None = None


@dataclass
class FaultContext:
    """Everything a run's fault summary may look at once training has finished."""

    model: nn.Module
    initial_state: dict[str, torch.Tensor]
    split: Split
    history: History


Optimizers = Callable[[nn.Module], torch.optim.Optimizer]
Schedules = Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]


@dataclass(frozen=True)
class RunConfig:
    """One sample run: data, optimizer, schedule, logging convention and how its fault is measured.

    The model is ``models.<name>()``. Histograms, activations and checkpoints are written at
    ``hist_points`` / ``checkpoints`` epochs spread evenly over training (and at the last epoch).
    Training stops ``nan_patience`` steps after the loss first becomes non-finite.
    """

    name: str
    data: Callable[[], Split]
    optimizer: Optimizers
    epochs: int
    batch_size: int
    tags: TagScheme
    fault: Callable[[FaultContext], dict[str, float]]
    schedule: Schedules | None = None
    checkpoint_format: str = "training-dict"  # or "safetensors"
    checkpoints: int = 5
    hist_points: int = 25
    stats_layers: tuple[str, ...] = ()  # activation_stats/<layer> via add_scalars
    act_hist_layers: tuple[str, ...] = ()  # activations/<layer> histograms
    nan_patience: int = 5
    seed: int = 0


@dataclass
class RunResult:
    """Final metrics and fault facts of one generated run."""

    name: str
    path: Path
    steps: int
    seconds: float
    final: dict[str, float]
    fault: dict[str, float]


def evenly_spaced(total: int, count: int) -> set[int]:
    """``count`` (or fewer) epochs in 1..total spread evenly, always including ``total``."""
    return {max(1, round(total * i / count)) for i in range(1, count + 1)}


def set_determinism(seed: int) -> None:
    """Fixed seed, two threads, deterministic kernels."""
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)


def is_finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def total_grad_norm(model: nn.Module) -> float:
    """L2 norm of all parameter gradients together (the value clip_grad_norm_ would see)."""
    squares = [p.grad.detach().pow(2).sum() for p in model.parameters() if p.grad is not None]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Loss and accuracy of ``model`` in eval mode on the whole of ``x``."""
    model.eval()
    logits = model(x)
    model.train()
    return float(nn.functional.cross_entropy(logits, y)), accuracy(logits, y)


@torch.no_grad()
def capture_activations(model: nn.Module, layers: tuple[str, ...], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of the named sub-modules for input ``x`` (eval mode, forward hooks removed afterwards)."""
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    hooks = [modules[name].register_forward_hook(
        lambda _m, _i, out, name=name: captured.__setitem__(name, out.detach()))
        for name in layers]
    model.eval()
    try:
        model(x)
    finally:
        model.train()
        for hook in hooks:
            hook.remove()
    return captured


class RunLogger:
    """Writes one run's TensorBoard logs the way the seed tutorial does, under a TagScheme."""

    def __init__(self, writer: SummaryWriter, tags: TagScheme) -> None:
        self.writer = writer
        self.tags = tags

    def step(self, step: int, loss: float, lr: float, grad_norm: float) -> None:
        """Per-step scalars: training loss, learning rate and (if the scheme has it) grad norm."""
        self.writer.add_scalar(self.tags.train_loss, loss, step)
        self.writer.add_scalar(self.tags.lr, lr, step)
        if self.tags.grad_norm is not None:
            self.writer.add_scalar(self.tags.grad_norm, grad_norm, step)

    def epoch(self, step: int, train_acc: float, val_loss: float, val_acc: float) -> None:
        """Per-epoch scalars: training accuracy (mean over the epoch), validation loss and accuracy."""
        self.writer.add_scalar(self.tags.train_acc, train_acc, step)
        self.writer.add_scalar(self.tags.val_loss, val_loss, step)
        self.writer.add_scalar(self.tags.val_acc, val_acc, step)

    def parameters(self, model: nn.Module, step: int) -> None:
        """Weight and last-batch gradient histograms of every parameter (non-finite ones are skipped,
        as np.histogram cannot bin them)."""
        for name, param in model.named_parameters():
            self._histogram(f"{self.tags.weights}/{name}", param.detach(), step)
            if param.grad is not None:
                self._histogram(f"{self.tags.grads}/{name}", param.grad, step)

    def activations(self, acts: dict[str, torch.Tensor], stats_layers: tuple[str, ...],
                    hist_layers: tuple[str, ...], step: int, images: bool) -> None:
        """activation_stats/<layer> (add_scalars mean/std/max/min), activations/<layer> histograms and,
        when ``images``, activation_maps/<layer> of the first sample's first 16 channels."""
        for layer in stats_layers:
            a = acts[layer]
            self.writer.add_scalars(f"activation_stats/{layer}", {
                "mean": float(a.mean()), "std": float(a.std()), "max": float(a.max()), "min": float(a.min())},
                step)
            if images and a.dim() == 4 and is_finite(a):
                grid = torchvision.utils.make_grid(a[0, :16].unsqueeze(1), normalize=True, nrow=4)
                self.writer.add_image(f"activation_maps/{layer}", grid, step)
        for layer in hist_layers:
            self._histogram(f"activations/{layer}", acts[layer], step)

    def kernels(self, model: nn.Module, step: int) -> None:
        """conv_weights/<param> image grids of every 4-d weight (one tile per in/out channel pair)."""
        for name, param in model.named_parameters():
            if param.dim() == 4 and is_finite(param):
                kernels = param.detach().reshape(-1, 1, *param.shape[2:])
                grid = torchvision.utils.make_grid(kernels, normalize=True, nrow=param.size(1))
                self.writer.add_image(f"conv_weights/{name}", grid, step)

    def _histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        if is_finite(values):
            self.writer.add_histogram(tag, values, step, bins="auto")


def save_checkpoint(cfg: RunConfig, run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    epoch: int, step: int) -> Path:
    """``checkpoints/epoch_<N>.pt`` training dict, or ``checkpoints/step-<S>.safetensors`` weights."""
    folder = run_dir / "checkpoints"
    folder.mkdir(exist_ok=True)
    if cfg.checkpoint_format == "safetensors":
        path = folder / f"step-{step}.safetensors"
        tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(path), metadata={"step": str(step), "epoch": str(epoch)})
    else:
        path = folder / f"epoch_{epoch}.pt"
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch, "step": step}, path)
    return path


class Trainer:
    """Trains one run's model epoch by epoch, logging and checkpointing as its RunConfig says."""

    def __init__(self, cfg: RunConfig, run_dir: Path, epochs: int, writer: SummaryWriter) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.epochs = epochs
        self.split = cfg.data()
        self.probe = self.split.x_val[:PROBE_SIZE].clone()
        self.model: nn.Module = getattr(models, cfg.name)()
        self.initial_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.optimizer = cfg.optimizer(self.model)
        total_steps = epochs * math.ceil(len(self.split.x_train) / cfg.batch_size)
        self.scheduler = cfg.schedule(self.optimizer, total_steps) if cfg.schedule else None
        self.log_every = max(1, total_steps // MAX_SCALAR_POINTS)
        self.shuffle = torch.Generator().manual_seed(cfg.seed + 1)
        self.logger = RunLogger(writer, cfg.tags)
        self.history = History()
        self.step = 0

    def run(self) -> None:
        """All epochs, or until ``nan_patience`` steps after the loss first became non-finite."""
        hist_epochs = evenly_spaced(self.epochs, self.cfg.hist_points)
        ckpt_epochs = evenly_spaced(self.epochs, self.cfg.checkpoints)
        for epoch in range(1, self.epochs + 1):
            self.train_epoch()
            last = self.stopped or epoch == self.epochs
            self.end_of_epoch(log_histograms=epoch in hist_epochs or last, last=last)
            if epoch in ckpt_epochs or last:
                save_checkpoint(self.cfg, self.run_dir, self.model, self.optimizer, epoch, self.step)
            if last:
                return

    @property
    def stopped(self) -> bool:
        first = self.history.first_nonfinite_step
        return first is not None and self.step - first >= self.cfg.nan_patience

    def train_epoch(self) -> None:
        """One pass over the shuffled training set, logging per-step scalars every ``log_every`` steps
        (and every step once the loss is non-finite)."""
        split, losses, accs = self.split, [], []
        for batch in torch.randperm(len(split.x_train), generator=self.shuffle).split(self.cfg.batch_size):
            loss, acc, lr, grad_norm = self.train_step(split.x_train[batch], split.y_train[batch])
            losses.append(loss)
            accs.append(acc)
            if not math.isfinite(loss) and self.history.first_nonfinite_step is None:
                self.history.first_nonfinite_step = self.step
            if self.step % self.log_every == 0 or not math.isfinite(loss):
                self.logger.step(self.step, loss, lr, grad_norm)
                self.history.train_loss.append(loss)
            if self.stopped:
                break
        self.history.epoch_train_loss.append(sum(losses) / len(losses))
        self.history.epoch_train_acc.append(sum(accs) / len(accs))

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float, float]:
        """Forward, backward, optimizer and scheduler step; returns loss, accuracy, lr, grad norm."""
        logits = self.model(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.optimizer.zero_grad()
        loss.backward()
        grad_norm = total_grad_norm(self.model)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        return loss.item(), accuracy(logits.detach(), y), lr, grad_norm

    def end_of_epoch(self, log_histograms: bool, last: bool) -> None:
        """Validation scalars; histograms and activations when due; images at the last epoch."""
        val_loss, val_acc = evaluate(self.model, self.split.x_val, self.split.y_val)
        self.history.val_loss.append(val_loss)
        self.history.val_acc.append(val_acc)
        self.logger.epoch(self.step, self.history.epoch_train_acc[-1], val_loss, val_acc)
        if log_histograms:
            self.logger.parameters(self.model, self.step)
            layers = tuple(dict.fromkeys(self.cfg.stats_layers + self.cfg.act_hist_layers))
            acts = capture_activations(self.model, layers, self.probe)
            self.logger.activations(acts, self.cfg.stats_layers, self.cfg.act_hist_layers, self.step, images=last)
        if last:
            self.logger.kernels(self.model, self.step)


def generate_run(cfg: RunConfig, out_dir: Path, epochs: int | None = None) -> RunResult:
    """Train ``cfg`` from scratch into ``out_dir/<name>`` (cleared first) and return its summary.

    ``epochs`` overrides the configured number of epochs (used by the fast test).
    """
    started = time.perf_counter()
    run_dir = Path(out_dir) / cfg.name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    set_determinism(cfg.seed)
    with SummaryWriter(log_dir=str(run_dir)) as writer:
        trainer = Trainer(cfg, run_dir, epochs or cfg.epochs, writer)
        torch.save(trainer.probe, run_dir / "probe.pt")
        trainer.run()
    history = trainer.history
    final = {"train_loss": history.epoch_train_loss[-1], "train_acc": history.epoch_train_acc[-1],
             "val_loss": history.val_loss[-1], "val_acc": history.val_acc[-1]}
    fault = cfg.fault(FaultContext(trainer.model, trainer.initial_state, trainer.split, history))
    return RunResult(cfg.name, run_dir, trainer.step, time.perf_counter() - started, final, fault)


# ----------------------------------------------------------------------------------------- faults

def convergence(ctx: FaultContext) -> dict[str, float]:
    """Healthy runs: best validation accuracy and how much the training loss still moves at the end
    (relative change of the epoch-mean loss over the last quarter of the epochs)."""
    losses = ctx.history.epoch_train_loss
    tail = losses[-max(2, len(losses) // 4):]
    return {"best_val_acc": max(ctx.history.val_acc),
            "last_quarter_rel_loss_change": (tail[0] - tail[-1]) / max(tail[0], 1e-12)}


def max_abs_change(ctx: FaultContext) -> dict[str, float]:
    """max |W_final - W_init| of every parameter."""
    params = dict(ctx.model.named_parameters())
    return {name: float((params[name].detach() - ctx.initial_state[name]).abs().max()) for name in params}


def frozen_fault(ctx: FaultContext) -> dict[str, float]:
    """Largest change of the left-out conv2 vs the smallest change of any other parameter."""
    changes = max_abs_change(ctx)
    frozen = {k: v for k, v in changes.items() if k.startswith("conv2.")}
    others = {k: v for k, v in changes.items() if not k.startswith("conv2.")}
    return {"conv2_max_abs_change": max(frozen.values()), "others_min_max_abs_change": min(others.values())}


def dead_fault(ctx: FaultContext) -> dict[str, float]:
    """Fraction of units of each ReLU layer that output 0 for every validation sample."""
    acts = capture_activations(ctx.model, ("act1", "act2"), ctx.split.x_val)
    return {f"{layer}_dead_fraction": float((a.amax(0) <= 0).float().mean()) for layer, a in acts.items()}


def vanishing_fault(ctx: FaultContext) -> dict[str, float]:
    """Gradient RMS (last batch) of the first hidden layer relative to the last hidden layer and the head."""
    def rms(name: str) -> float:
        return float(dict(ctx.model.named_parameters())[name].grad.pow(2).mean().sqrt())
    last_hidden = [n for n, _ in ctx.model.named_children() if n.startswith("fc")][-1]
    return {"grad_rms_fc1": rms("fc1.weight"),
            f"grad_rms_ratio_fc1/{last_hidden}": rms("fc1.weight") / rms(f"{last_hidden}.weight"),
            "grad_rms_ratio_fc1/head": rms("fc1.weight") / rms("head.weight")}


def diverging_fault(ctx: FaultContext) -> dict[str, float]:
    """Best and worst finite training loss and the step where it first became non-finite."""
    finite = [v for v in ctx.history.train_loss if math.isfinite(v)]
    first = ctx.history.first_nonfinite_step
    return {"best_train_loss": min(finite), "max_finite_train_loss": max(finite),
            "first_nonfinite_step": float("nan") if first is None else float(first)}


def overfitting_fault(ctx: FaultContext) -> dict[str, float]:
    """Epoch of the best validation loss, its value, the final one, and the final training loss."""
    val = ctx.history.val_loss
    best = min(range(len(val)), key=val.__getitem__)
    return {"best_val_epoch": best + 1, "best_val_loss": val[best], "final_val_loss": val[-1],
            "epochs_after_best": len(val) - best - 1, "final_train_loss": ctx.history.epoch_train_loss[-1]}


# ----------------------------------------------------------------------------------------- catalogue

def _adam(lr: float) -> Optimizers:
    return lambda m: torch.optim.Adam(m.parameters(), lr=lr)


def _sgd(lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> Optimizers:
    return lambda m: torch.optim.SGD(m.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def _adam_without_conv2(model: nn.Module) -> torch.optim.Optimizer:
    """The frozen_layer bug: the param list was built by hand and ``conv2`` was forgotten."""
    params = [p for name, p in model.named_parameters() if not name.startswith("conv2.")]
    return torch.optim.Adam(params, lr=3e-3)


def _cosine(opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)


def _step_decay(opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, total_steps // 2), gamma=0.2)


def _warmup(opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over the first half of training to the (far too high) base learning rate."""
    warm = max(1, total_steps // 2)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))


CNN_RELUS = ("relu1", "relu2")

RUNS: dict[str, RunConfig] = {cfg.name: cfg for cfg in (
    RunConfig("healthy_cnn", lambda: image_split(seed=11), _sgd(0.05, weight_decay=5e-4), epochs=20,
              batch_size=64, tags=TUTORIAL_TAGS, fault=convergence, schedule=_cosine, checkpoints=5,
              hist_points=20, stats_layers=CNN_RELUS, seed=1),
    RunConfig("healthy_mlp", lambda: tabular_split(seed=12), _adam(3e-3), epochs=20, batch_size=64,
              tags=MLP_TAGS, fault=convergence, schedule=_step_decay, checkpoint_format="safetensors",
              hist_points=20, seed=2),
    RunConfig("frozen_layer", lambda: image_split(seed=13), _adam_without_conv2, epochs=20, batch_size=64,
              tags=TUTORIAL_TAGS, fault=frozen_fault, stats_layers=CNN_RELUS, hist_points=20, seed=3),
    RunConfig("dead_relu", lambda: tabular_split(seed=14), _adam(1e-3), epochs=20, batch_size=64,
              tags=TUTORIAL_TAGS, fault=dead_fault, stats_layers=("act1", "act2"),
              act_hist_layers=("act1", "act2"), hist_points=20, seed=4),
    RunConfig("vanishing_sigmoid", lambda: tabular_split(seed=15), _sgd(0.05), epochs=20, batch_size=64,
              tags=TUTORIAL_TAGS, fault=vanishing_fault, stats_layers=("act1", "act6", "act12"),
              hist_points=20, seed=5),
    RunConfig("diverging", lambda: tabular_split(seed=16), _sgd(0.3), epochs=20, batch_size=64,
              tags=TUTORIAL_TAGS, fault=diverging_fault, schedule=_warmup, stats_layers=("act1", "act3"),
              hist_points=20, seed=6),
    RunConfig("overfitting", lambda: tabular_split(seed=17, n_train=64, spread=0.8, label_noise=0.3),
              _adam(1e-3), epochs=300, batch_size=64, tags=TUTORIAL_TAGS, fault=overfitting_fault,
              hist_points=30, seed=7),
)}


# ----------------------------------------------------------------------------------------- CLI

def format_result(result: RunResult) -> str:
    """One summary line: final metrics, then the fault facts."""
    def fmt(values: dict[str, float]) -> str:
        return " ".join(f"{k}={v:.4g}" for k, v in values.items())
    return (f"{result.name:18s} steps={result.steps} time={result.seconds:.1f}s | {fmt(result.final)} | "
            f"{fmt(result.fault)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the runs into")
    parser.add_argument("--only", nargs="+", choices=sorted(RUNS), metavar="NAME",
                        help=f"regenerate only these runs ({', '.join(RUNS)})")
    parser.add_argument("--epochs", type=int, default=None, help="override every run's epoch count")
    args = parser.parse_args(argv)
    for name in args.only or RUNS:
        print(format_result(generate_run(RUNS[name], args.out, args.epochs)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
