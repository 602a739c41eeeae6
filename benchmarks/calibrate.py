"""False-alarm calibration: train healthy model variants, diagnose each, tabulate every finding.

report_gen promises no false alarms on healthy, converged models. This script trains a set of
HEALTHY variants on synthetic data (CPU, no downloads, deterministic), each to convergence, with the
data builders, trainer, logger and checkpoint writer of ``sample_runs/make_samples.py`` (imported,
not modified), logging either the seed tutorial's way (``train/loss``, ``val/loss``, ``train/acc``,
``val/acc``, ``weight_hist/<p>``, ``grad_hist/<p>``, ``activation_stats/<layer>`` via add_scalars)
or with ``report_gen.monitor.TrainingMonitor``, and writing training-dict checkpoints (model +
optimizer state) several times per run. Then it runs ``report_gen.engine.diagnose`` on every run,
once on the logs and checkpoints alone and once with the post-hoc probe (the model factory is
``benchmarks/calibrate.py:build`` with ``{"variant": NAME}``; the probe input is the run's
``probe.pt``), and prints a table of convergence and findings.

    python benchmarks/calibrate.py                    # train every variant, then diagnose
    python benchmarks/calibrate.py --only mlp_trained_long cnn_sgd_cosine
    python benchmarks/calibrate.py --skip-training    # re-diagnose the runs already written
    python benchmarks/calibrate.py --seeds 3 --proposals --out benchmarks/_data/calibration_seeds
    python benchmarks/calibrate.py --real --seeds 3   # the real libraries' runs (benchmarks/calibrate_real.py)

``--seeds N`` adds N-1 replicates per variant (other data and init seeds, named ``<name>@s<r>``);
``--proposals`` also checks the rule changes proposed in README-calibration.md. A third diagnosis per
run, with thresholds moved out of the way, measures how close each rule comes to firing (margins).

Runs go to ``benchmarks/_data/calibration/<variant>/`` (gitignored); the diagnosis of each goes to
``.../<variant>/_reports/{logs,probe}.json``; the tables to ``.../results.md`` and ``results.json``.
Trainings run one after the other on ``torch.set_num_threads(2)``. Results: README-calibration.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "_data" / "calibration"
FACTORY = f"{Path(__file__).resolve()}:build"  # what the probe imports (by path, like --model)


def _load_make_samples() -> ModuleType:
    """Import sample_runs/make_samples.py by path once (the probe re-executes this file per model)."""
    name = "report_gen_calibration_make_samples"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "sample_runs" / "make_samples.py")
        module = importlib.util.module_from_spec(spec)
        assert spec.loader is not None
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


ms = _load_make_samples()
models = ms.models
Split = ms.Split


# ----------------------------------------------------------------------------------------- data

def noisy_labels(y: torch.Tensor, share: float, classes: int, gen: torch.Generator) -> torch.Tensor:
    """Replace `share` of the labels by uniformly random ones (so ~share·(1-1/classes) are wrong)."""
    flip = torch.rand(len(y), generator=gen) < share
    return torch.where(flip, torch.randint(0, classes, (len(y),), generator=gen), y)


def image_split_noisy(seed: int, label_noise: float) -> Split:
    """Bar images (make_samples.image_split) with `label_noise` of the training labels randomised."""
    split = ms.image_split(seed)
    gen = torch.Generator().manual_seed(seed + 1000)
    return Split(split.x_train, noisy_labels(split.y_train, label_noise, models.IMAGE_CLASSES, gen),
                 split.x_val, split.y_val)


SEQ_LEN, VOCAB, SIGNALS = 16, 24, 4  # token task: tokens 0..3 are class signals, 4..23 are noise


def token_split(seed: int, n_train: int = 2048, n_val: int = 512, vocab: int = VOCAB, zipf: bool = False) -> Split:
    """Sequences of 16 tokens: the label's signal token appears twice, one other signal token once,
    at random positions among noise tokens; the label is the majority signal token. Noise tokens are
    uniform over 4..vocab-1, or Zipf-distributed (p ∝ 1/rank, like words in text) with `zipf`."""
    gen = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, vocab - SIGNALS + 1, dtype=torch.float64)
    noise_p = 1 / ranks if zipf else torch.ones_like(ranks)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, SIGNALS, (n,), generator=gen)
        other = (y + torch.randint(1, SIGNALS, (n,), generator=gen)) % SIGNALS
        x = SIGNALS + torch.multinomial(noise_p, n * SEQ_LEN, replacement=True, generator=gen).reshape(n, SEQ_LEN)
        pos = torch.rand(n, SEQ_LEN, generator=gen).argsort(1)[:, :3]
        x.scatter_(1, pos, torch.stack([y, y, other], 1))
        return x, y

    return Split(*make(n_train), *make(n_val))


WAVE_LEN, WAVE_FEATURES = 24, 2


def wave_split(seed: int, n_train: int = 2048, n_val: int = 512, noise: float = 0.5) -> Split:
    """Two-channel sequences of 24 steps: channel 0 a noisy sine whose frequency (1-4 cycles) is the
    label, random phase and amplitude; channel 1 an unrelated random walk."""
    gen = torch.Generator().manual_seed(seed)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 4, (n,), generator=gen)
        t = torch.arange(WAVE_LEN, dtype=torch.float32)
        phase = 2 * math.pi * torch.rand(n, 1, generator=gen)
        amp = 0.8 + 0.4 * torch.rand(n, 1, generator=gen)
        wave = amp * torch.sin(2 * math.pi * (y[:, None] + 1).float() * t / WAVE_LEN + phase)
        wave = wave + noise * torch.randn(n, WAVE_LEN, generator=gen)
        walk = torch.cumsum(0.3 * torch.randn(n, WAVE_LEN, generator=gen), 1)
        return torch.stack([wave, walk], -1), y

    return Split(*make(n_train), *make(n_val))


# ----------------------------------------------------------------------------------------- models

class TinyTransformer(nn.Module):
    """Token + position embeddings, nn.TransformerEncoder, mean pooling, LayerNorm, linear head."""

    def __init__(self, d_model: int = 32, heads: int = 4, layers: int = 2, ff: int = 64, dropout: float = 0.1,
                 norm_first: bool = False, activation: str | nn.Module = "gelu", vocab: int = VOCAB) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(SEQ_LEN, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, activation=activation, batch_first=True,
                                           norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, SIGNALS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos(torch.arange(x.size(1), device=x.device))
        return self.head(self.norm(self.encoder(h).mean(1)))


class SeqRNN(nn.Module):
    """LSTM or GRU over the sequence, last hidden state -> fc -> ReLU (``act``) -> head."""

    def __init__(self, cell: str = "lstm", hidden: int = 32) -> None:
        super().__init__()
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(WAVE_FEATURES, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, hidden)
        self.act = nn.ReLU()
        self.head = nn.Linear(hidden, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(self.act(self.fc(out[:, -1])))


# ----------------------------------------------------------------------------------------- optimizers, schedules

def sgd(lr: float, momentum: float = 0.9, weight_decay: float = 0.0, nesterov: bool = False):
    return lambda m: torch.optim.SGD(m.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay,
                                     nesterov=nesterov)


def adam(lr: float):
    return lambda m: torch.optim.Adam(m.parameters(), lr=lr)


def adamw(lr: float, weight_decay: float):
    return lambda m: torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=weight_decay)


def warmup_cosine(warm_share: float = 0.1):
    """Linear warm-up over `warm_share` of the steps, then cosine to 0."""
    def make(opt: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LRScheduler:
        warm = max(1, int(total * warm_share))

        def factor(s: int) -> float:
            if s < warm:
                return (s + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, total - warm))))
        return torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return make


# ----------------------------------------------------------------------------------------- variants

@dataclass(frozen=True)
class Variant:
    """One healthy training configuration.

    style: "tutorial" (make_samples' RunLogger: per-step scalars, weight/grad histograms and
    activation_stats of `stats_layers` on a fixed validation batch at `hist_points` epochs),
    "tutorial-sampled" (the seed tutorial's own train loop: activation_stats of inputs[:1] in
    training mode on a random 30% of steps, weight/grad histograms every 100 steps) or "monitor"
    (TrainingMonitor(writer, model=..., **monitor_kwargs) inside the step; val/acc scalars by hand).
    patience: early stopping on the validation loss (None = train all `epochs`).
    data: called with no argument for the variant itself, with a seed offset for a replicate.
    """

    name: str
    family: str
    model: Callable[[], nn.Module]
    data: Callable[..., Split]
    optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    epochs: int
    batch_size: int
    style: str
    schedule: Callable[..., Any] | None = None
    stats_layers: tuple[str, ...] = ()
    seed: int = 0
    clip: float | None = None
    patience: int | None = None
    monitor_kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoints: int = 5
    hist_points: int = 20
    min_val_acc: float = 0.9  # the healthy bar for this task (clean validation labels)
    description: str = ""


CNN_STATS = ("relu1", "relu2", "pool")
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("cnn_sgd_cosine", "CNN+BN", lambda: models.SmallCNN(), lambda o=0: ms.image_split(o + 101), sgd(0.05, weight_decay=5e-4),
            20, 64, "tutorial", ms._cosine, CNN_STATS, seed=11,
            description="SGD m0.9 lr 0.05 wd 5e-4, cosine, bs 64, 20 ep"),
    Variant("cnn_adam_step_bs16", "CNN+BN", lambda: models.SmallCNN(), lambda o=0: ms.image_split(o + 303), adam(3e-3),
            12, 16, "tutorial", ms._step_decay, CNN_STATS, seed=33,
            description="Adam 3e-3, x0.2 at half-way, batch 16, 12 ep"),
    Variant("cnn_sgd_const_bs256", "CNN+BN", lambda: models.SmallCNN(), lambda o=0: ms.image_split(o + 404),
            sgd(0.1, weight_decay=5e-4), 60, 256, "monitor", seed=44,
            description="SGD m0.9 lr 0.1 constant, wd 5e-4, batch 256, 60 ep; monitor defaults"),
    Variant("cnn_adamw_warmup_cosine", "CNN+BN", lambda: models.SmallCNN((16, 32)), lambda o=0: ms.image_split(o + 505),
            adamw(3e-3, 0.05), 15, 64, "monitor", warmup_cosine(0.1), seed=55,
            monitor_kwargs={"hist_interval": 25, "scalar_interval": 5},
            description="16/32 ch, AdamW 3e-3 wd 0.05, 10% warm-up + cosine, bs 64, 15 ep; monitor hist 25"),
    Variant("cnn_label_noise10", "CNN+BN", lambda: models.SmallCNN(), lambda o=0: image_split_noisy(o + 606, 0.10),
            sgd(0.05, weight_decay=5e-4), 20, 64, "tutorial", ms._cosine, CNN_STATS, seed=66,
            description="as cnn_sgd_cosine, 10% of training labels randomised"),
    Variant("cnn_label_noise10_bs16", "CNN+BN", lambda: models.SmallCNN(), lambda o=0: image_split_noisy(o + 616, 0.10),
            sgd(0.0125, weight_decay=5e-4), 12, 16, "tutorial", ms._cosine, CNN_STATS, seed=67,
            description="10% label noise, batch 16, SGD m0.9 lr 0.0125 (linearly scaled) wd 5e-4, cosine, 12 ep"),
    Variant("mlp_adam_step", "MLP+LN", lambda: models.NormMLP(), lambda o=0: ms.tabular_split(o + 707), adam(3e-3),
            20, 64, "tutorial", ms._step_decay, ("blocks.0.act", "blocks.1.act"), seed=77,
            description="LayerNorm+GELU+Dropout 0.1, Adam 3e-3, x0.2 at half-way, bs 64, 20 ep"),
    Variant("mlp_adamw_cosine", "MLP+LN", lambda: models.NormMLP(hidden=(128, 64)), lambda o=0: ms.tabular_split(o + 808),
            adamw(2e-3, 0.01), 30, 128, "monitor", ms._cosine, seed=88,
            description="128/64 wide, AdamW 2e-3 wd 0.01, cosine, bs 128, 30 ep; monitor defaults"),
    Variant("mlp_sgd_warmup_bs512", "MLP+LN", lambda: models.NormMLP(dropout=0.2), lambda o=0: ms.tabular_split(o + 909),
            sgd(0.2, nesterov=True), 60, 512, "monitor", warmup_cosine(0.1), seed=99,
            monitor_kwargs={"hist_interval": 20, "scalar_interval": 2},
            description="dropout 0.2, SGD Nesterov lr 0.2, warm-up + cosine, batch 512, 60 ep; monitor hist 20"),
    Variant("mlp_label_noise5", "MLP+LN", lambda: models.NormMLP(), lambda o=0: ms.tabular_split(o + 1010, label_noise=0.05),
            adam(1e-3), 25, 64, "tutorial", None, ("blocks.0.act", "blocks.1.act"), seed=110,
            description="Adam 1e-3 constant, 5% of training labels randomised, bs 64, 25 ep"),
    Variant("mlp_relu_plain", "MLP (ReLU, no norm)", lambda: models.PlainMLP(hidden=(128, 64)),
            lambda o=0: ms.tabular_split(o + 1111), adam(1e-3), 20, 64, "tutorial", ms._cosine, ("act1", "act2"), seed=121,
            description="Linear-ReLU 128/64, no normalisation, Adam 1e-3, cosine, bs 64, 20 ep"),
    Variant("mlp_early_stopped", "MLP+LN", lambda: models.NormMLP(), lambda o=0: ms.tabular_split(o + 1212, label_noise=0.1),
            adam(3e-3), 60, 64, "tutorial", None, ("blocks.0.act", "blocks.1.act"), seed=132, patience=4,
            description="Adam 3e-3 constant, 10% label noise, early stop (patience 4 on val loss), max 60 ep"),
    Variant("mlp_trained_long", "MLP+LN", lambda: models.NormMLP(), lambda o=0: ms.tabular_split(o + 1313), adam(1e-3),
            100, 128, "tutorial", None, ("blocks.0.act", "blocks.1.act", "head"), seed=143, hist_points=25,
            description="Adam 1e-3 constant for 100 ep (1,600 steps), bs 128; logs the head's logits too"),
    Variant("mlp_tutorial_sampled", "MLP+LN", lambda: models.NormMLP(), lambda o=0: ms.tabular_split(o + 1414), adam(3e-3),
            20, 32, "tutorial-sampled", ms._cosine, ("blocks.0.act", "blocks.1.act"), seed=154,
            description="the seed tutorial's loop: act stats of inputs[:1] on 30% of steps; Adam 3e-3 cosine, bs 32"),
    Variant("transformer_postln", "Transformer", lambda: TinyTransformer(), lambda o=0: token_split(o + 1515),
            adamw(1e-3, 0.01), 15, 64, "tutorial", warmup_cosine(0.1), ("encoder.layers.0", "encoder.layers.1"),
            seed=165, description="2 post-LN layers d32 4 heads, AdamW 1e-3 wd 0.01, warm-up + cosine, bs 64, 15 ep"),
    Variant("transformer_zipf_vocab8k", "Transformer", lambda: TinyTransformer(vocab=8000),
            lambda o=0: token_split(o + 2020, vocab=8000, zipf=True), adamw(1e-3, 0.01), 15, 64, "tutorial",
            warmup_cosine(0.1), ("encoder.layers.0", "encoder.layers.1"), seed=220, hist_points=10,
            description="as transformer_postln with a text-like vocabulary: 8,000 tokens, noise tokens Zipf-distributed"),
    Variant("transformer_preln_monitor", "Transformer", lambda: TinyTransformer(norm_first=True, activation=nn.GELU()),
            lambda o=0: token_split(o + 1616), adam(5e-4), 15, 64, "monitor", None, seed=176, clip=1.0,
            monitor_kwargs={"hist_interval": 50},
            description="2 pre-LN layers, nn.GELU module, Adam 5e-4 constant, clip 1.0, bs 64, 15 ep; monitor hist 50"),
    Variant("transformer_adamw_cosine", "Transformer", lambda: TinyTransformer(), lambda o=0: token_split(o + 1919),
            adamw(3e-4, 0.01), 20, 64, "monitor", warmup_cosine(0.1), seed=209, clip=1.0,
            description="2 post-LN layers, the common recipe AdamW 3e-4 wd 0.01, warm-up + cosine, clip 1.0, bs 64, "
                        "20 ep; monitor defaults"),
    Variant("lstm_adam_clip", "LSTM", lambda: SeqRNN("lstm"), lambda o=0: wave_split(o + 1717), adam(3e-3),
            15, 64, "tutorial", ms._step_decay, ("act",), seed=187, clip=1.0,
            description="LSTM 32, Adam 3e-3, x0.2 at half-way, clip 1.0, bs 64, 15 ep"),
    Variant("gru_sgd_monitor", "GRU", lambda: SeqRNN("gru"), lambda o=0: wave_split(o + 1818), sgd(0.05), 20, 32,
            "monitor", ms._cosine, seed=198, clip=5.0,
            description="GRU 32, SGD m0.9 lr 0.05, cosine, clip 5.0, bs 32, 20 ep; monitor defaults"),
)}


def replicate(v: Variant, r: int) -> Variant:
    """Replicate r >= 1 of a variant: other data and initialisation seeds, name ``<name>@s<r>``."""
    return dataclasses.replace(v, name=f"{v.name}@s{r}", data=lambda: v.data(7919 * r), seed=v.seed + 1000 * r)


def build(variant: str) -> nn.Module:
    """Model factory for the probe: ``--model benchmarks/calibrate.py:build --model-kwargs '{"variant": ...}'``
    (a replicate ``<name>@s<r>`` has its base variant's architecture)."""
    return VARIANTS[variant.split("@")[0]].model()


# ----------------------------------------------------------------------------------------- training

class QuietLogger(ms.RunLogger):
    """Monitor style: the monitor writes per-step scalars and histograms; only epoch scalars are logged here."""

    def step(self, *args: Any) -> None:
        pass

    def parameters(self, *args: Any) -> None:
        pass

    def activations(self, *args: Any, **kwargs: Any) -> None:
        pass

    def kernels(self, *args: Any) -> None:
        pass


class CalibrationTrainer(ms.Trainer):
    """make_samples.Trainer plus gradient clipping, early stopping, TrainingMonitor and the tutorial's
    sampled activation logging."""

    def __init__(self, variant: Variant, run_dir: Path, writer: SummaryWriter) -> None:
        self.variant = variant
        setattr(models, variant.name, variant.model)  # make_samples.Trainer builds models.<name>()
        cfg = ms.RunConfig(variant.name, variant.data, variant.optimizer, variant.epochs, variant.batch_size,
                           ms.TUTORIAL_TAGS, ms.convergence, schedule=variant.schedule,
                           checkpoints=variant.checkpoints, hist_points=variant.hist_points,
                           stats_layers=variant.stats_layers if variant.style == "tutorial" else (), seed=variant.seed)
        super().__init__(cfg, run_dir, variant.epochs, writer)
        self.monitor = None
        if variant.style == "monitor":
            from report_gen.monitor import TrainingMonitor
            self.logger = QuietLogger(writer, ms.TUTORIAL_TAGS)
            self.monitor = TrainingMonitor(writer, model=self.model, **variant.monitor_kwargs)
        self.sample_rng = random.Random(variant.seed)
        self.best_val = math.inf
        self.epochs_since_best = 0

    def run(self) -> None:
        v = self.variant
        if v.patience is None:
            super().run()
        else:  # early stopping: histograms every 2 epochs, a checkpoint every 4 and at the stop
            for epoch in range(1, self.epochs + 1):
                self.train_epoch()
                val_loss, _ = ms.evaluate(self.model, self.split.x_val, self.split.y_val)
                if val_loss < self.best_val:
                    self.best_val, self.epochs_since_best = val_loss, 0
                else:
                    self.epochs_since_best += 1
                last = self.epochs_since_best >= v.patience or epoch == self.epochs
                self.end_of_epoch(log_histograms=epoch % 2 == 0 or last, last=last)
                if epoch % 4 == 0 or last:
                    ms.save_checkpoint(self.cfg, self.run_dir, self.model, self.optimizer, epoch, self.step)
                if last:
                    break
        if self.monitor is not None:
            self.monitor.close()

    def end_of_epoch(self, log_histograms: bool, last: bool) -> None:
        if self.variant.style == "tutorial-sampled":
            log_histograms = False  # histograms come every 100 steps from train_step
        super().end_of_epoch(log_histograms, last)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float, float]:
        logits = self.model(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.optimizer.zero_grad()
        loss.backward()
        if self.variant.clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.variant.clip)
        grad_norm = ms.total_grad_norm(self.model)
        lr = self.optimizer.param_groups[0]["lr"]
        if self.monitor is not None:
            self.monitor.log_training_step(self.model, x, self.step, loss=loss, optimizer=self.optimizer)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.variant.style == "tutorial-sampled":
            self.tutorial_logging(x)
        self.step += 1
        return loss.item(), ms.accuracy(logits.detach(), y), lr, grad_norm

    def tutorial_logging(self, x: torch.Tensor) -> None:
        """The seed tutorial's train_epoch: weight histograms every 100 steps; activation stats of one
        sample (its ActivationHook leaves the model in training mode) with probability 0.3."""
        if self.step % 100 == 0:
            self.logger.parameters(self.model, self.step)
        if self.sample_rng.random() < 0.3:
            modules = dict(self.model.named_modules())
            acts: dict[str, torch.Tensor] = {}
            hooks = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: acts.__setitem__(n, out.detach()))
                     for n in self.variant.stats_layers]
            try:
                with torch.no_grad():
                    self.model(x[:1])
            finally:
                for h in hooks:
                    h.remove()
            self.logger.activations(acts, self.variant.stats_layers, (), self.step, images=False)


@dataclass
class TrainResult:
    name: str
    steps: int
    epochs: int
    seconds: float
    final: dict[str, float]
    convergence: dict[str, float]


def train_variant(v: Variant, out: Path) -> TrainResult:
    started = time.perf_counter()
    run_dir = out / v.name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    ms.set_determinism(v.seed)
    with SummaryWriter(log_dir=str(run_dir)) as writer:
        trainer = CalibrationTrainer(v, run_dir, writer)
        torch.save(trainer.probe, run_dir / "probe.pt")
        trainer.run()
    h = trainer.history
    final = {"train_loss": h.epoch_train_loss[-1], "train_acc": h.epoch_train_acc[-1],
             "val_loss": h.val_loss[-1], "val_acc": h.val_acc[-1],
             "best_val_loss": min(h.val_loss), "best_val_loss_epoch": h.val_loss.index(min(h.val_loss)) + 1}
    conv = ms.convergence(ms.FaultContext(trainer.model, trainer.initial_state, trainer.split, h))
    tail = h.epoch_train_loss[-max(2, len(h.epoch_train_loss) // 4):]
    conv["last_quarter_loss_drop_vs_first_epoch"] = (tail[0] - tail[-1]) / h.epoch_train_loss[0]
    result = TrainResult(v.name, trainer.step, len(h.val_loss), time.perf_counter() - started, final, conv)
    (run_dir / "_train.json").write_text(json.dumps(result.__dict__, indent=1))
    return result


def healthy(v: Variant, r: TrainResult) -> bool:
    """Converged and healthy: validation accuracy above the task's bar, the final one within 2 points
    of the best, and the epoch training loss still falling by less than 5% of its first-epoch value
    over the last quarter of the epochs (a relative change of a loss near 0 says nothing)."""
    return (r.final["val_acc"] >= v.min_val_acc and r.convergence["best_val_acc"] - r.final["val_acc"] <= 0.02
            and r.convergence["last_quarter_loss_drop_vs_first_epoch"] < 0.05)


# ----------------------------------------------------------------------------------------- diagnosis

def diagnose_variant(v: Variant, run_dir: Path, with_probe: bool) -> dict[str, Any]:
    from report_gen.engine import Options, ProbeSpec, diagnose
    from report_gen.render import write_json

    opts = Options()
    if with_probe:
        opts = Options(probe=ProbeSpec(model=FACTORY, model_kwargs={"variant": v.name},
                                       probe_file=str(run_dir / "probe.pt")))
    started = time.perf_counter()
    report = diagnose([str(run_dir)], opts)
    seconds = time.perf_counter() - started
    reports = run_dir / "_reports"
    reports.mkdir(exist_ok=True)
    write_json(report, reports / ("probe.json" if with_probe else "logs.json"))
    return {"seconds": seconds, "counts": report["summary"]["counts"],
            "findings": [{k: f[k] for k in ("code", "severity", "subject", "message", "evidence")}
                         for f in report["findings"]],
            "not_evaluated": sorted({n["code"] for n in report["not_evaluated"]})}


# Per rule: options that make it report its measured statistic on every subject (thresholds moved
# out of the way), the evidence key holding that statistic, the default threshold(s) and which side
# of it is alarming ("max": alarm above, "min": alarm below). Run on the same reports with the probe.
MARGIN_PROBES: dict[str, tuple[dict[str, Any], str, str, tuple[float, ...]]] = {
    "L102": ({"giveback_warning": -1e9}, "giveback", "max", (0.5, 1.0)),
    "L103": ({"min_improvement": 1e9}, "relative_improvement", "min", (0.05,)),
    "L104": ({"min_sign_change_rate": 0.0, "min_relative_swing": 0.0}, "relative_swing", "max", (0.2,)),
    "L105": ({"min_rise": -1e9, "min_tail_points": 0, "min_tail_share": 0.0, "min_rise_noise": -1e9}, "relative_rise",
             "max", (0.25,)),
    "L106": ({"min_train_gain": -1e9, "max_val_gain": 1e9, "max_val_rise": 1e9, "min_gap": 0.0}, "val_gain", "min", (0.1,)),
    "L108": ({"min_rise_share": 0.0}, "rise_share", "max", (0.1,)),
    "G101": ({"ratio_warning": 1e9}, "ratio", "min", (1e-2, 1e-3)),
    "G102": ({"growth_factor": 0.0, "min_monotonic": 0.0}, "growth_factor", "max", (100.0,)),
    "U102": ({"low": 1e9}, "median_update_ratio", "range", (1e-5, 1e-1)),
    "U103": ({"max_spread": 0.0}, "spread", "max", (1e3,)),
    "K101": ({"warning_ratio": -1.0, "min_dead": 0, "chance_p": 2.0}, "ratio", "max", (0.05, 0.15)),
    "K102": ({"min_relative_diversity": 1e9}, "relative_diversity", "min", (0.01,)),
    "K103": ({"ratio": 0.0}, "family_share", "max", (0.3,)),
    "K104": ({"ratio": 0.0}, "share", "max", (0.1,)),
    "W102": ({"shrink_ratio": 1e9}, "ratio", "min", (0.1,)),
    "W103": ({"growth_ratio": 0.0}, "ratio", "max", (10.0,)),
    "W104": ({"min_coefficient": 0.0}, "bimodality", "max", (0.75,)),
    "W105": ({"max_ratio": 0.0}, "ratio", "max", (8.0,)),
    "A101": ({"warning_share": -1.0}, "dead_share", "max", (0.5, 0.9)),
    "A103": ({"growth_factor": 0.0, "min_rising": 0.0, "min_late_growth": 0.0}, "growth_factor", "max", (10.0,)),
    "A104": ({"high_pair_share": -1.0}, "high_pair_share", "max", (0.5,)),
    "A105": ({"max_cv": 0.0}, "coefficient_of_variation", "max", (0.5,)),
    "A106": ({"uniform_entropy": -1.0, "collapsed_entropy": 2.0}, "entropy", "range", (0.05, 0.98)),
}


def margins(v: Variant, run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each rule's measured statistic on this healthy run, at its most alarming subject."""
    from report_gen.config import Config
    from report_gen.engine import Options, ProbeSpec, diagnose

    cfg = Config(rule_options={code: opts for code, (opts, *_rest) in MARGIN_PROBES.items()})
    probe = ProbeSpec(model=FACTORY, model_kwargs={"variant": v.name}, probe_file=str(run_dir / "probe.pt"))
    report = diagnose([str(run_dir)], Options(config=cfg, probe=probe))
    out: dict[str, dict[str, Any]] = {}
    for f in report["findings"]:
        if f["code"] not in MARGIN_PROBES:
            continue
        _, key, side, _ = MARGIN_PROBES[f["code"]]
        raw = f["evidence"].get(key)
        if raw is None:
            continue
        values = [float(x) for x in (raw if isinstance(raw, list) else [raw])]
        rec = out.setdefault(f["code"], {"min": math.inf, "max": -math.inf})
        for x in values:
            if x < rec["min"]:
                rec["min"], rec["min_subject"] = x, f["subject"]
            if x > rec["max"]:
                rec["max"], rec["max_subject"] = x, f["subject"]
    return out


def margin_table(rows: list[dict[str, Any]]) -> str:
    """Per rule: the healthy runs' most alarming value against the default threshold."""
    out = ["| rule | statistic | alarm when | default threshold(s) | most alarming healthy value (run, subject) | runs measured |",
           "|---|---|---|---|---|---:|"]
    for code, (_, key, side, thresholds) in MARGIN_PROBES.items():
        measured = [(r["name"], r["margins"][code]) for r in rows if code in r.get("margins", {})]
        if not measured:
            out.append(f"| {code} | {key} | | {', '.join(f'{t:g}' for t in thresholds)} | not evaluated | 0 |")
            continue
        if side == "min":
            name, rec = min(measured, key=lambda t: t[1]["min"])
            worst = f"{rec['min']:.3g} ({name}, `{_md(rec['min_subject'])}`)"
            when = "below"
        elif side == "max":
            name, rec = max(measured, key=lambda t: t[1]["max"])
            worst = f"{rec['max']:.3g} ({name}, `{_md(rec['max_subject'])}`)"
            when = "above"
        else:
            lo_name, lo = min(measured, key=lambda t: t[1]["min"])
            hi_name, hi = max(measured, key=lambda t: t[1]["max"])
            worst = (f"min {lo['min']:.3g} ({lo_name}, `{_md(lo['min_subject'])}`); "
                     f"max {hi['max']:.3g} ({hi_name}, `{_md(hi['max_subject'])}`)")
            when = "outside"
        out.append(f"| {code} | {key} | {when} | {', '.join(f'{t:g}' for t in thresholds)} | {worst} | {len(measured)} |")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------- proposed rule changes
# Re-implementations of the statistics of the rules that raised false alarms here, each with the
# change proposed in README-calibration.md, so the proposals can be checked on every healthy run, on
# the faulty sample runs and on the unit tests' positive cases (--proposals). The decisions of the
# current rules are read from the reports themselves.

_EMBEDDING = ("embed", "wte", "wpe")  # module-name parts of lookup tables (nn.Embedding)


def untrained_level(values: Any) -> float:
    """The loss before training: the first finite logged value (median-of-first-window starts miss it
    when a fast task is learned within the first few percent of the logged points)."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    return float(v[np.isfinite(v)][0])


def proposed_l104(train: Any, val: Any | None, window: int = 50, min_rate: float = 0.5, min_rel: float = 0.2,
                  min_level: float = 0.1, start: float | None = None) -> tuple[bool, dict[str, Any]]:
    """L104 on a loss series with (a) the improvement measured from the untrained level (`start`,
    default the series' first value) and (b) a swinging train loss counted as oscillation only when
    the validation loss (a fixed set, free of mini-batch sampling noise) swings too, when logged."""
    import numpy as np
    from report_gen.facts import curves

    def rel(v: np.ndarray, start: float) -> tuple[float, float]:
        summ = curves.summarize(v)
        tail = v[-window:]
        span = max(max(summ.start, start) - summ.best, min_level * abs(float(np.median(tail))), 1e-12)
        return curves.sign_change_rate(tail), curves.swing_amplitude(tail) / span

    t = np.asarray(train, float)
    t = t[np.isfinite(t)]
    start = untrained_level(t) if start is None else start
    rate, rel_train = rel(t, start)
    fires = rate >= min_rate and rel_train >= min_rel
    ev: dict[str, Any] = {"rate": rate, "relative_swing": rel_train}
    if fires and val is not None and np.isfinite(val).sum() >= 3:
        vv = np.asarray(val, float)
        vrate, vrel = rel(vv[np.isfinite(vv)], start)
        ev.update(val_rate=vrate, val_relative_swing=vrel)
        fires = vrate >= min_rate and vrel >= min_rel
    return fires, ev


def proposed_l105(val: Any, train: Any | None, min_rise: float = 0.25, min_tail_points: int = 3,
                  min_tail_share: float = 0.2) -> tuple[bool, dict[str, Any]]:
    """L105's loss branch with the rise measured against what the run learned from the untrained level
    (the first training loss; the first validation point usually comes after an epoch of training)."""
    import numpy as np
    from report_gen.facts import curves

    v = np.asarray(val, float)
    summ = curves.summarize(v, frac=0.15, minimum=2)
    ref = max(summ.start, untrained_level(train)) if train is not None else summ.start
    rise = (summ.end - summ.best) / max(ref - summ.best, 0.05 * abs(ref), 1e-12)
    tail_n = len(v) - 1 - summ.best_index
    return tail_n >= max(min_tail_points, min_tail_share * len(v)) and rise >= min_rise, {"relative_rise": rise}


def proposed_a103(values: Any, factor: float = 10.0, min_rising: float = 0.7,
                  late_factor: float = math.sqrt(10.0)) -> tuple[bool, dict[str, Any]]:
    """A103 plus 'keeps increasing': the last fifth must also be >= sqrt(factor) times the middle
    fifth (40-60% of the points), so growth from a near-silent initialisation that levelled off while
    the model learned is not reported."""
    import numpy as np
    from report_gen.facts import curves

    v = np.abs(np.asarray(values, float))
    v = v[np.isfinite(v)]
    if v.size < 5:
        return False, {}
    g = curves.growth_factor(v, 0.2, 1)
    rising = curves.monotonic_fraction(curves.ema_smooth(v, 0.6))
    w = curves.window(v.size, 0.2, 1)
    lo = int(round(0.4 * v.size))
    middle = v[lo:max(lo + w, int(round(0.6 * v.size)))]
    late = float(np.median(v[-w:])) / max(float(np.median(middle)), 1e-300)
    fires = g is not None and g > factor and rising >= min_rising and late >= late_factor
    return fires, {"growth_factor": g, "rising_share": rising, "late_growth": late}


def kernel_families(w: torch.Tensor, threshold: float = 0.9) -> dict[str, float]:
    """Near-duplicate structure of a layer's kernels: the share that has any twin (|corr| > threshold,
    what K103 measures) and the share held by the largest family (connected component of the
    'near-duplicate' graph), and the number of families (= distinct filters)."""
    import numpy as np

    z = w.reshape(w.shape[0], -1).double()
    z = z - z.mean(1, keepdim=True)
    z = z / z.norm(dim=1, keepdim=True).clamp_min(1e-300)
    c = (z @ z.T).abs().numpy()
    np.fill_diagonal(c, 0)
    parent = list(range(len(c)))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a
    for i, j in zip(*np.nonzero(np.triu(c > threshold, 1))):
        parent[root(int(i))] = root(int(j))
    sizes = np.bincount([root(i) for i in range(len(c))], minlength=len(c))
    return {"twin_share": float(np.mean(c.max(1) > threshold)), "largest_family": float(sizes.max() / len(c)),
            "families": int((sizes > 0).sum())}


def proposed_u102(run: Any, high: float = 0.1, floor: float = 1e-6, lr_share: float = 0.3) -> list[tuple[str, float]]:
    """U102 with the low side judged against a float32-scale floor (an update below ~1e-6 of the
    weight is near rounding), and only on late steps where the logged learning rate is at least
    `lr_share` of its peak (a decayed schedule is meant to move little). The high side is unchanged."""
    import numpy as np

    hits, lr = [], run.signals.lr
    for name, s in run.signals.update_ratio.items():
        ok = np.isfinite(s.values)
        v, steps = s.values[ok], s.steps[ok]
        if v.size < 5:
            continue
        late, late_steps = v[v.size // 2:], steps[v.size // 2:]
        med = float(np.median(late))
        if med > high:
            hits.append((name, med))
            continue
        if lr is not None and len(lr):
            keep = np.interp(late_steps, lr.steps, lr.values) >= lr_share * float(np.nanmax(lr.values))
            late = late[keep] if keep.sum() >= 5 else late[:0]
        if late.size and float(np.median(late)) < floor:
            hits.append((name, float(np.median(late))))
    return hits


def proposed_g101_ratio(run: Any) -> tuple[str, float] | None:
    """G101's first/last gradient-RMS ratio with embedding lookup tables skipped as 'first layer': their
    gradient is row-sparse (only the rows of the tokens in the batch), so its RMS over the whole
    table shrinks with the vocabulary size, not with depth."""
    from report_gen.rules.gradients import _weight_grads

    layers = [(n, e) for n, e in _weight_grads(run) if math.isfinite(e.value)]
    dense = [(n, e) for n, e in layers if not any(k in n.rsplit(".", 1)[0].lower() for k in _EMBEDDING)]
    if len(dense) < 3 or dense[-1][1].value <= 0:
        return None
    return dense[0][0], dense[0][1].value / dense[-1][1].value


def proposal_rows(run_dir: Path) -> list[tuple[str, str, bool, dict[str, Any]]]:
    """(rule, subject, proposed rule fires?, statistics) for one run folder."""
    import numpy as np
    from report_gen.engine import Options, load_run
    from report_gen.readers.discovery import discover

    run = load_run(discover([str(run_dir)])[0], Options())
    s, out = run.signals, []
    train = s.train_loss.values if s.train_loss is not None else None
    val = s.val_loss.values if s.val_loss is not None else None
    if train is not None and np.isfinite(train).sum() >= 20:
        out.append(("L104", "train/loss", *proposed_l104(train, val)))
    if train is not None and val is not None and np.isfinite(val).sum() >= 20:
        out.append(("L104", "val/loss", *proposed_l104(val, None, start=untrained_level(train))))
    if val is not None and np.isfinite(val).sum() >= 6 and np.isfinite(val).all():
        out.append(("L105", "val/loss", *proposed_l105(val, train)))
    for layer, stats in s.act_stats.items():
        series = stats.get("std") or stats.get("mean")
        if series is not None:
            out.append(("A103", layer, *proposed_a103(series.values)))
    ckpts = sorted((run_dir / "checkpoints").glob("*.pt"), key=lambda p: int(p.stem.rsplit("_", 1)[-1]))
    if ckpts:
        state = torch.load(ckpts[-1], weights_only=True)
        for name, w in state.get("model", state).items():
            if w.ndim == 4 and w.shape[0] >= 8 and w[0].numel() >= 16:
                fam = kernel_families(w)
                out.append(("K103", name, fam["largest_family"] >= 0.3, fam))
    if s.update_ratio:
        hits = proposed_u102(run)
        out.append(("U102", ", ".join(n for n, _ in hits) or "(all)", bool(hits), {"below_or_above": hits}))
    g = proposed_g101_ratio(run)
    if g is not None:
        out.append(("G101", g[0], g[1] < 1e-2, {"ratio": g[1]}))
    return out


def unit_test_cases() -> list[tuple[str, bool, bool]]:
    """(case, must fire?, proposed rule fires?) for the rules' unit-test fixtures (tests/rules)."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from builders.rulekit import cnn_state, decaying

    def zigzag(high: float, low: float) -> np.ndarray:
        v = decaying(150, 2.3, 0.5)
        v[-60:] += np.where(np.arange(60) % 2 == 0, high, low)
        return v

    def dupes(n: int) -> torch.Tensor:
        w = cnn_state(0)["conv2.weight"].clone()
        for i in range(1, n + 1):
            w[i] = w[0] * (1 + 0.5 * i / n) + 0.01 * torch.randn_like(w[0])
        return w

    train = decaying(200, 2.3, 0.01)
    return [
        ("L104 large zigzag", True, proposed_l104(zigzag(0.6, -0.3), None)[0]),
        ("L104 small noise after convergence", False, proposed_l104(decaying(150, 2.3, 0.05, noise=0.02, seed=1), None)[0]),
        ("L104 zigzag just below threshold", False, proposed_l104(zigzag(0.08, -0.08), None)[0]),
        ("L105 val rising while train improves", True, proposed_l105(
            np.concatenate([np.linspace(2.0, 0.8, 10), np.linspace(0.8, 1.4, 10)]), train)[0]),
        ("L105 small rise", False, proposed_l105(np.concatenate([np.linspace(2.0, 0.8, 10), np.linspace(0.8, 0.86, 10)]), train)[0]),
        ("A103 std growing 50x", True, proposed_a103(np.geomspace(0.1, 5.0, 40))[0]),
        ("A103 growth below factor", False, proposed_a103(np.geomspace(0.1, 0.8, 40))[0]),
        ("A103 growth across probed checkpoints", True, proposed_a103([1, 3, 10, 30, 100])[0]),
        ("K103 16 of 32 kernels in one family", True, kernel_families(dupes(15))["largest_family"] >= 0.3),
        ("K103 5 of 32 in one family", False, kernel_families(dupes(4))["largest_family"] >= 0.3),
    ]


def proposals(out: Path, names: list[str]) -> str:
    """Markdown: for every rule with a false alarm here, current vs proposed decisions on the healthy
    runs, then the faulty sample runs and the unit-test fixtures under the proposals."""
    lines = ["| rule | healthy runs checked | current rule fires | proposed rule fires | where the proposal still fires |",
             "|---|---:|---:|---:|---|"]
    tally: dict[str, list[Any]] = {}
    for name in names:
        report = json.loads((out / name / "_reports" / "logs.json").read_text())
        current = {f["code"] for f in report["findings"] if f["severity"] in ("error", "warning")}
        for code, subject, fires, _ in proposal_rows(out / name):
            t = tally.setdefault(code, [set(), set(), []])
            t[0].add(name)
            if code in current:
                t[1].add(name)
            if fires:
                t[2].append(f"{name} `{subject}`")
    for code in sorted(tally):
        checked, current, proposed = tally[code]
        lines.append(f"| {code} | {len(checked)} | {len(current)} | {len({p.split()[0] for p in proposed})} | "
                     f"{'; '.join(proposed) or '-'} |")
    lines += ["", "| faulty sample run | rule | proposed rule fires | statistics |", "|---|---|---|---|"]
    for sample in ("overfitting", "diverging", "vanishing_sigmoid", "dead_relu", "frozen_layer"):
        for code, subject, fires, ev in proposal_rows(ROOT / "sample_runs" / sample):
            if code in ("L105", "L104", "A103") or fires:
                stats = ", ".join(f"{k} {v:.3g}" for k, v in ev.items() if isinstance(v, float))
                lines.append(f"| {sample} | {code} `{subject}` | {'yes' if fires else 'no'} | {stats} |")
    lines += ["", "| unit-test fixture | must fire | proposed rule fires |", "|---|---|---|"]
    for case, must, fires in unit_test_cases():
        lines.append(f"| {case} | {'yes' if must else 'no'} | {'yes' if fires else 'no'}{'' if must == fires else ' ← MISMATCH'} |")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def tables(rows: list[dict[str, Any]]) -> str:
    """The results as Markdown: one line per variant, then every finding."""
    out = ["| variant | family | style | steps | train s | converged? | best / final val acc | final val loss "
           "(best, epoch) | logs: E / W / I | +probe: E / W / I |",
           "|---|---|---|---:|---:|---|---|---|---|---|"]
    for r in rows:
        t = r["train"]
        f = t["final"]
        cnt = lambda d: "{error} / {warning} / {info}".format(**d["counts"])  # noqa: E731
        out.append(f"| {r['name']} | {r['family']} | {r['style']} | {t['steps']} | {t['seconds']:.1f} | "
                   f"{'yes' if r['healthy'] else 'NO'} | {t['convergence']['best_val_acc']:.3f} / {f['val_acc']:.3f} | "
                   f"{f['val_loss']:.4f} ({f['best_val_loss']:.4f}, ep {f['best_val_loss_epoch']}/{t['epochs']}) | "
                   f"{cnt(r['logs'])} | {cnt(r['probe'])} |")
    out += ["", "| variant | diagnosis | severity | code | subject | message |", "|---|---|---|---|---|---|"]
    for r in rows:
        for mode in ("logs", "probe"):
            for fd in r[mode]["findings"]:
                if mode == "probe" and any(fd["code"] == g["code"] and fd["subject"] == g["subject"]
                                           and fd["severity"] == g["severity"] for g in r["logs"]["findings"]):
                    continue  # the same finding without the probe: listed once
                out.append(f"| {r['name']} | {mode} | {fd['severity']} | {fd['code']} | `{_md(fd['subject'])}` | "
                           f"{_md(fd['message'])} |")
    return "\n".join(out) + "\n"


def rates(rows: list[dict[str, Any]]) -> str:
    n = len(rows)
    lines = []
    for mode in ("logs", "probe"):
        err = sum(1 for r in rows if r[mode]["counts"]["error"])
        warn = sum(1 for r in rows if r[mode]["counts"]["error"] or r[mode]["counts"]["warning"])
        lines.append(f"{mode}: runs with an error {err}/{n} ({err / n:.0%}); with a warning or error "
                     f"{warn}/{n} ({warn / n:.0%})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--only", nargs="+", choices=sorted(VARIANTS), metavar="NAME")
    parser.add_argument("--skip-training", action="store_true", help="diagnose the runs already in --out")
    parser.add_argument("--proposals", action="store_true",
                        help="after diagnosing, check the rule changes proposed in README-calibration.md")
    parser.add_argument("--seeds", type=int, default=1,
                        help="runs per variant: the variant itself plus N-1 replicates with other data/init seeds")
    parser.add_argument("--real", action="store_true",
                        help="calibrate on the real libraries' runs instead (tests/fixtures/real generators; "
                             "see benchmarks/calibrate_real.py)")
    parser.add_argument("--libs", nargs="+", help="with --real: only these libraries")
    parser.add_argument("--faulty-seeds", type=int, default=1, help="with --real: seeds per faulty case")
    args = parser.parse_args(argv)
    if args.real:
        sys.path.insert(0, str(HERE))
        import calibrate_real

        out = calibrate_real.OUT if args.out == OUT else args.out
        return calibrate_real.main(out, args.seeds, args.libs, args.skip_training, args.faulty_seeds)
    names = []
    for name in args.only or list(VARIANTS):
        names.append(name)
        for r in range(1, args.seeds):
            VARIANTS[f"{name}@s{r}"] = replicate(VARIANTS[name], r)
            names.append(f"{name}@s{r}")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    trained: dict[str, TrainResult] = {}
    for name in names:
        if args.skip_training:
            trained[name] = TrainResult(**json.loads((args.out / name / "_train.json").read_text()))
            continue
        r = trained[name] = train_variant(VARIANTS[name], args.out)
        print(f"trained {name:28s} {r.steps:5d} steps {r.seconds:5.1f}s  val acc {r.final['val_acc']:.3f} "
              f"loss {r.final['val_loss']:.4f} (best {r.final['best_val_loss']:.4f} ep {r.final['best_val_loss_epoch']}"
              f"/{r.epochs})  healthy={healthy(VARIANTS[name], r)}", flush=True)
    t_train = time.perf_counter() - started
    rows = []
    for name in names:
        v = VARIANTS[name]
        row = {"name": name, "family": v.family, "style": v.style, "description": v.description,
               "train": trained[name].__dict__, "healthy": healthy(v, trained[name])}
        for mode in ("logs", "probe"):
            row[mode] = diagnose_variant(v, args.out / name, with_probe=mode == "probe")
        row["margins"] = margins(v, args.out / name)
        print(f"diagnosed {name:28s} logs {row['logs']['counts']} ({row['logs']['seconds']:.1f}s)  "
              f"+probe {row['probe']['counts']} ({row['probe']['seconds']:.1f}s)", flush=True)
        rows.append(row)
    t_total = time.perf_counter() - started
    recorded = sum(trained[n].seconds for n in names)
    timing = (f"training skipped (recorded training times sum to {recorded:.0f} s)" if args.skip_training
              else f"training {t_train:.0f} s")
    md = (tables(rows) + "\n" + rates(rows) + "\n\n" + margin_table(rows)
          + f"\n{timing}, diagnosis {t_total - t_train:.0f} s, total {t_total:.0f} s\n")
    if args.proposals:
        md += "\n## Proposed rule changes, re-implemented\n\n" + proposals(args.out, names)
    (args.out / "results.md").write_text(md)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    print("\n" + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
