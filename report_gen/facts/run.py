"""RunFacts: everything the rules may ask about one run, computed lazily and at most once.

Rules read facts from here and compare them with thresholds; they never open files themselves.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Collection

import numpy as np

from report_gen.core import Problem, ProblemKind
from report_gen.facts import curves
from report_gen.readers.signals import Signals
from report_gen.readers.types import BUFFER_SUFFIXES, CheckpointData, RunLog
from report_gen.vocab import Signal



def is_weight_name(name: str) -> bool:
    """A weight tensor (not a bias): `fc.weight`, and RNNs' `lstm.weight_ih_l0` / `weight_hh_l0`."""
    last = name.rsplit(".", 1)[-1]
    return last == "weight" or last.startswith("weight_")


def is_embedding_name(name: str) -> bool:
    """A lookup table (token/position embedding): only the rows a batch touches get a gradient, so
    its RMS over the whole table is diluted by the vocabulary size, not by depth."""
    parts = name.lower().split(".")
    module = parts[-2] if len(parts) >= 2 else ""  # the table's own module: not patch_embed.proj, time_embed.0
    return "embed" in module or module in {"wte", "wpe", "emb", "tok_emb", "pos_emb", "word_emb"}


def keeps_order(ckpt: CheckpointData) -> bool:
    """Whether the checkpoint's tensors are in the model's registration order (safetensors sort names,
    unless the architecture put them back in order)."""
    return "safetensors" not in ckpt.format or ckpt.metadata.get("tensor_order") == "architecture"


def _param_shapes(ckpt: CheckpointData) -> dict[str, tuple[int, ...]]:
    return {n: tuple(t.shape) for n, t in ckpt.tensors.items() if t.role == "param"}


@dataclass
class GradEstimate:
    value: float  # RMS of the gradient, late-training median
    source: Signal  # GRAD_HIST | OPTIMIZER_STATE | GRAD_NORM_PARAM
    series: np.ndarray | None = None  # per logged step, when known
    steps: np.ndarray | None = None
    nonfinite: bool = False


@dataclass
class RunFacts:
    name: str
    path: str
    events: RunLog
    signals: Signals
    checkpoints: list[CheckpointData] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # every input problem of this run
    probe: list[tuple[int | None, Any]] = field(default_factory=list)  # [(step, ProbeResult)]
    probe_info: dict[str, Any] | None = None
    progress: Any = None
    # what the selected rules judge from tensor data (engine: RuleSet.tensor_needs / RuleSet.facts); None =
    # everything may be computed
    needs: frozenset[Signal] | None = None
    eager_facts: frozenset[str] = frozenset()
    trust_pickles: bool = False  # how the checkpoints were opened (pool workers reopen them the same way)

    @property
    def tensor_facts(self) -> bool:
        """Whether facts judged from checkpoint tensor data may be computed for this run: some selected
        rule needs checkpoint facts (or no selection was given). When not, no tensor is ever read."""
        return self.needs is None or self.needs_checkpoint_facts(self.needs)

    # ---- availability -------------------------------------------------------------------------
    @cached_property
    def available(self) -> set[Signal]:
        s = self.signals
        have = set(s.present())
        if s.train_loss is not None or s.val_loss is not None or s.other_losses:
            have.add(Signal.LOSS_ANY)
        if any(s.tag.lower().endswith(("acc", "accuracy")) for s in s.other_scalars.values()):
            have.add(Signal.LOSS_ANY)
        if self.checkpoints:
            have.add(Signal.CHECKPOINT)
        if len(self.checkpoints) >= 2:
            have.add(Signal.CHECKPOINT_SERIES)
        if self.tensor_facts and any(c.optimizer and c.optimizer.get("grad_rms") for c in self.checkpoints):
            have.add(Signal.OPTIMIZER_STATE)
        probed = [r for _, r in self.probe if r.activations]  # an attention-only probe (HF self-probe) has none
        if probed:
            have.add(Signal.PROBE)
        if any(r.attention for _, r in self.probe):
            have.add(Signal.ATTENTION)
        if len(probed) >= 2:
            have.add(Signal.PROBE_SERIES)
        if s.weight_shapes:  # weight histograms whose shapes the log gave (a Keras model config)
            have.add(Signal.WEIGHT_SHAPES)
        if self.attention_projections:
            have.add(Signal.ATTENTION_WEIGHTS)
        have.add(Signal.INPUT_PROBLEMS)
        return have

    def precompute(self, needs: Collection[Signal]) -> None:
        """Compute now the expensive facts that rules needing any of `needs` will read (so the engine can
        time facts apart from rules); facts no enabled rule needs are never computed."""
        if not self.needs_checkpoint_facts(needs):
            return
        self.series  # noqa: B018
        self.grad_estimates  # noqa: B018
        if Signal.ATTENTION_WEIGHTS in needs and self.attention_projections:  # none: nothing to compute
            self.attention_weights  # noqa: B018

    @staticmethod
    def needs_checkpoint_facts(needs: Collection[Signal]) -> bool:
        """Whether any of these signals is judged from the checkpoints' tensor data."""
        return bool(set(needs) & {Signal.CHECKPOINT, Signal.CHECKPOINT_SERIES, Signal.OPTIMIZER_STATE,
                                  Signal.ATTENTION_WEIGHTS})

    # ---- checkpoints ----------------------------------------------------------------------------
    @cached_property
    def series(self) -> dict[str, Any]:
        """param name -> ParamSeries over the ordered checkpoint series (facts.dynamics); empty when no
        selected rule needs checkpoint facts (`tensor_facts`)."""
        if not self.checkpoints or not self.tensor_facts:
            return {}
        return self._series()

    def series_on_demand(self) -> dict[str, Any]:
        """`series`, computed now even when no selected rule needs checkpoint tensor facts: for a rule whose
        checkpoint need is met without tensor data (`Rule.without_tensors`) and that reads the weights only
        in some case (L107 without a training loss). Once computed, `series` holds it too."""
        if self.tensor_facts or "series" in self.__dict__ and self.__dict__["series"]:
            return self.series
        if not self.checkpoints:
            return {}
        self.__dict__["series"] = self._series()
        self.__dict__.pop("last_stats", None)
        return self.series

    def _series(self) -> dict[str, Any]:
        from report_gen.facts.dynamics import series_facts

        try:
            return series_facts(self.checkpoints, progress=self.progress, problems=self.problems,
                                eager=self.eager_facts, trust_pickles=self.trust_pickles)
        except Exception as e:  # noqa: BLE001 - a tensor that cannot be read must not lose the report
            self.problems.append(Problem(file=self.checkpoints[-1].path, kind=ProblemKind.UNREADABLE_TENSOR, severity="warning",
                                         message=f"checkpoint facts could not be computed: {type(e).__name__}: {e}"))
            return {}

    @cached_property
    def last_stats(self) -> dict[str, Any]:
        """param name -> WeightStats at the last checkpoint holding it."""
        out = {}
        for name, ps in self.series.items():
            if ps.stats:
                out[name] = ps.stats[-1]
        return out

    def tensor_role(self, name: str) -> str:
        for c in reversed(self.checkpoints):
            info = c.tensors.get(name)
            if info is not None:
                return getattr(info, "role", "param")
        return "buffer" if name.endswith(BUFFER_SUFFIXES) else "param"

    @cached_property
    def param_order(self) -> list[str]:
        """Parameters in model order: checkpoint order when there is one, else histogram write order."""
        for c in reversed(self.checkpoints):
            names = [n for n in c.tensors if self.tensor_role(n) == "param"]
            if names:
                return names
        seen: dict[str, None] = {}
        for d in (self.signals.grad_hist, self.signals.weight_hist, self.signals.update_ratio):
            for n in d:
                seen.setdefault(n, None)
        return list(seen)

    # ---- attention from the weights -------------------------------------------------------------
    @cached_property
    def _attention_checkpoint(self) -> CheckpointData | None:
        """The last checkpoint (the attention facts judge the trained weights)."""
        return self.checkpoints[-1] if self.checkpoints else None

    @cached_property
    def attention_projections(self) -> list[Any]:
        """Query/key projections found in the last checkpoint, by shapes alone (facts.attention)."""
        ckpt = self._attention_checkpoint
        if ckpt is None:
            return []
        from report_gen.facts.attention import find_projections

        found, _ = find_projections(_param_shapes(ckpt), ckpt.metadata, keeps_order(ckpt))
        return found

    @cached_property
    def attention_weights(self) -> Any:
        """facts.attention.AttentionWeights of the last checkpoint (empty without projections)."""
        from report_gen.facts.attention import AttentionWeights, attention_weights, projection_names

        ckpt = self._attention_checkpoint
        if ckpt is None or not self.attention_projections:
            return AttentionWeights()
        qk = set().union(*(projection_names(p) for p in self.attention_projections))
        others = [st.rms for n, st in self.last_stats.items()
                  if len(st.shape) == 2 and n not in qk and not is_embedding_name(n) and np.isfinite(st.rms)]
        try:
            return attention_weights(_param_shapes(ckpt), ckpt.metadata, keeps_order(ckpt), ckpt.load,
                                     float(np.median(others)) if others else None)
        except Exception as e:  # noqa: BLE001 - a tensor that cannot be read must not lose the report
            self.problems.append(Problem(file=ckpt.path, kind=ProblemKind.UNREADABLE_TENSOR, severity="warning",
                                         message=f"attention facts could not be computed: {type(e).__name__}: {e}"))
            return AttentionWeights()

    # ---- gradients ------------------------------------------------------------------------------
    @cached_property
    def grad_estimates(self) -> dict[str, GradEstimate]:
        """Per-parameter gradient RMS, from gradient histograms, else optimizer state, else per-param norms."""
        out: dict[str, GradEstimate] = {}
        for name, h in self.signals.grad_hist.items():
            rms = h.rms
            nonfinite = bool(np.any(~np.isfinite(np.asarray(h.sum_squares, dtype=float))))
            late = curves.late(rms, 0.5)
            value = float(np.median(late)) if late.size else float("nan")
            out[name] = GradEstimate(value, Signal.GRAD_HIST, rms, h.steps, nonfinite)
        if out:
            return out
        for c in reversed(self.checkpoints if self.tensor_facts else []):
            opt = c.optimizer or {}
            if opt.get("grad_rms"):
                for name, v in opt["grad_rms"].items():
                    out[name] = GradEstimate(float(v), Signal.OPTIMIZER_STATE, nonfinite=not np.isfinite(v))
                return out
        for name, s in self.signals.grad_norm_param.items():
            late = curves.late(s.values, 0.5)
            out[name] = GradEstimate(float(np.median(late)) if late.size else float("nan"), Signal.GRAD_NORM_PARAM,
                                     s.values, s.steps, bool(np.any(~np.isfinite(s.values))))
        return out

    # ---- curves ---------------------------------------------------------------------------------
    @cached_property
    def train_loss_steps(self):
        """The per-batch training loss: Lightning's `<name>_step` sibling of an epoch-level training loss
        (DESIGN §6: the step series for spikes), else the training loss itself (None without one)."""
        from report_gen.readers.signals import lightning_base

        t = self.signals.train_loss
        if t is None:
            return None
        base, suffix = lightning_base(t.tag)
        sibling = self.signals.other_losses.get(f"{base}_step") if suffix == "epoch" else None
        return sibling if sibling is not None and len(sibling) > len(t) else t

    @cached_property
    def reward(self):
        """The episode reward (or return) series of a reinforcement-learning run (SB3 `rollout/ep_rew_mean`,
        `eval/mean_reward`, CleanRL `charts/episodic_return`, `episode/Return`), None for any other run. In an
        RL run the losses are no convergence signal: the value loss grows as the returns do."""
        import re

        pattern = re.compile(r"(^|[_/ ])(ep_?rew|rewards?|returns?|episodic_return)(_mean)?$", re.IGNORECASE)
        for tag, series in self.signals.other_scalars.items():
            last = tag.rsplit("/", 1)[-1]
            if pattern.search(last) or pattern.search(tag):
                return series
        return None

    @cached_property
    def untrained_loss(self) -> float | None:
        """The training loss before learning: the first finite value of the earliest training-loss series."""
        for s in (self.train_loss_steps, self.signals.train_loss):
            if s is not None:
                v = s.values[np.isfinite(s.values)]
                if v.size:
                    return float(v[0])
        return None

    @cached_property
    def chance(self) -> curves.ChanceLevel | None:
        """The chance level of a classifier: C from the hyper-parameters (`num_classes`, ...), else, when an
        accuracy is logged (so the run is a classification), from its untrained loss ~ ln C."""
        c = curves.classes_from_hparams(self.signals.hparams)
        if c is not None:
            return curves.ChanceLevel(c, "hparams")
        s = self.signals
        has_acc = s.train_acc is not None or s.val_acc is not None
        if has_acc and self.untrained_loss is not None:
            c = curves.classes_from_loss(self.untrained_loss)
            if c is not None:
                return curves.ChanceLevel(c, "untrained loss")
        return None

    # ---- learning rate and optimizer ------------------------------------------------------------
    @cached_property
    def lr_profile(self):
        """facts.schedule.LrProfile of the logged learning rate (None when none was logged)."""
        from report_gen.facts.schedule import lr_profile

        lr = self.signals.lr
        return lr_profile(lr.steps, lr.values) if lr is not None and len(lr) else None

    @cached_property
    def checkpoint_lrs(self) -> list[tuple[int | None, list[float]]]:
        """(step, the param groups' lr) of every checkpoint whose optimizer state records them."""
        return [(c.step, list(c.optimizer["lrs"])) for c in self.checkpoints
                if c.optimizer and c.optimizer.get("lrs")]

    @cached_property
    def optimizer_name(self) -> str | None:
        """The optimizer, from the checkpoints' optimizer state, else a Lightning `lr-<Optimizer>` tag, else
        a hyper-parameter (`optim`, `optimizer`)."""
        from report_gen.facts.schedule import optimizer_from_lr_tag

        for c in reversed(self.checkpoints):
            kind = (c.optimizer or {}).get("kind")
            if kind and kind != "unknown":
                return str(kind)
        if self.signals.lr is not None:
            name = optimizer_from_lr_tag(self.signals.lr.tag)
            if name:
                return name
        for key, value in self.signals.hparams.items():
            last = str(key).replace("/", ".").rsplit(".", 1)[-1].lower()
            if last in ("optim", "optimizer", "optimizer_name", "optimizer_type", "opt") and isinstance(value, str):
                return value
        return None

    # ---- steps ----------------------------------------------------------------------------------
    @cached_property
    def step_range(self) -> tuple[int | None, int | None]:
        steps: list[int] = []
        scalar_steps = self.events.table.step_range()
        if scalar_steps is not None:
            steps += list(scalar_steps)
        for h in self.events.histograms.values():
            if len(h):
                steps += [int(h.steps.min()), int(h.steps.max())]
        steps += [c.step for c in self.checkpoints if c.step is not None]
        return (min(steps), max(steps)) if steps else (None, None)

    @cached_property
    def wall_time(self) -> float | None:
        series = [s.wall_times for s in self.events.table.series if len(s)]
        if not series:
            return None
        wt = np.concatenate(series)
        wt = wt[np.isfinite(wt) & (wt > 0)]
        return float(wt.max() - wt.min()) if wt.size else None
