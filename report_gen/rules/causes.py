"""Root causes that several rules name: what the logged learning rate, the checkpoints and the optimizer
state say about why a run does not learn.

The criteria are options (an options dataclass the rules that name these causes inherit, so each
threshold is declared and documented once and `rules explain` shows it on every rule that uses it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from report_gen.facts.schedule import DEFAULT_LR, TORCH_DEFAULT_LR, optimizer_family
from report_gen.rules.base import opt


@dataclass(frozen=True)
class LrCauseOptions:
    lr_zero_share: float = opt(0.5, "the learning rate counts as zero when it is exactly 0.0 on more than this share of "
                                    "the logged points, all after its peak (a warm-up that starts at 0 does not count), "
                                    "or in every param group of two or more checkpoints of different steps (a linear "
                                    "decay reaches exactly 0 at its last step: one final checkpoint proves nothing)")
    lr_collapse_ratio: float = opt(1e-3, "it counts as collapsed when it is at or below this fraction of its peak...")
    lr_collapse_share: float = opt(0.5, "...on more than this share of the logged points (a cosine or linear decay to 0 "
                                        "spends about 2% and 0.1% of the run below 1e-3 of its peak; a step schedule "
                                        "x0.1 three times, the last quarter at exactly 1e-3)")
    lr_far_below: float = opt(10.0, "it counts as far too low when its peak is more than this factor below the lowest "
                                    "published default of its optimizer family: torch.optim SGD 1e-3, Adam/AdamW 1e-3 "
                                    "and the Hugging Face TrainingArguments fine-tuning default 5e-5 (AdamW), RMSprop "
                                    "and Adagrad 1e-2 (facts/schedule.py cites each)")


@dataclass
class LrCause:
    """A learning-rate root cause: `kind` is "lr-zero", "lr-collapsed" or "lr-too-low"."""

    kind: str
    text: str
    evidence: dict[str, Any] = field(default_factory=dict)


def hparam_lr(run) -> float | None:
    """The configured learning rate from the hyper-parameters (`lr`, `learning_rate`), when it is a number."""
    for key, value in run.signals.hparams.items():
        last = str(key).replace("/", ".").rsplit(".", 1)[-1].lower()
        if last in ("lr", "learning_rate", "learningrate", "base_lr", "lr0") and not isinstance(value, bool):
            try:
                f = float(value)
            except (TypeError, ValueError):
                continue
            if np.isfinite(f) and f >= 0:
                return f
    return None


def lr_cause(run, opts: LrCauseOptions) -> LrCause | None:
    """What is wrong with the learning rate, if anything: zero, collapsed, or far below the usual range."""
    prof = run.lr_profile
    ckpt = run.checkpoint_lrs
    if prof is not None and prof.points >= 2:
        tag = run.signals.lr.tag
        if prof.zero_share > opts.lr_zero_share:
            after = f" from step {prof.first_zero_step}" if prof.first_zero_step is not None else ""
            warm = f" (after a warm-up to {prof.peak:.3g} at step {prof.peak_step})" if prof.peak_index > 0 else ""
            return LrCause("lr-zero", f"the logged learning rate ({tag}) is exactly 0{after} on {prof.zero_share:.0%} "
                                      f"of the logged points{warm}",
                           {"lr_tag": tag, "lr_zero_share": prof.zero_share, "lr_peak": prof.peak,
                            "lr_first_zero_step": prof.first_zero_step, "lr_source": "logged"})
        if prof.peak > 0 and prof.below_share(opts.lr_collapse_ratio) > opts.lr_collapse_share:
            share = prof.below_share(opts.lr_collapse_ratio)
            return LrCause("lr-collapsed", f"the logged learning rate ({tag}) fell from its peak {prof.peak:.3g} "
                                           f"(step {prof.peak_step}) to at most {opts.lr_collapse_ratio:g} of it from "
                                           f"step {prof.first_below_step(opts.lr_collapse_ratio)} on, {share:.0%} of "
                                           f"the logged points",
                           {"lr_tag": tag, "lr_peak": prof.peak, "lr_collapsed_share": share,
                            "lr_final": float(prof.values[-1]), "lr_source": "logged"})
    elif len({step for step, _ in ckpt if step is not None}) >= 2 and all(lr == 0.0 for _, lrs in ckpt for lr in lrs):
        # two saves at different steps: a schedule that decays to 0 at its last step has 0 at the final one only
        return LrCause("lr-zero", f"every param group's learning rate is exactly 0 in the optimizer state of all "
                                  f"{len(ckpt)} checkpoints (steps {', '.join(str(s) for s, _ in ckpt)})",
                       {"lr_checkpoints": len(ckpt), "lr_source": "optimizer state"})
    return lr_too_low(run, opts)


def lr_too_low(run, opts: LrCauseOptions) -> LrCause | None:
    """The peak learning rate far below the lowest published default of the run's optimizer family."""
    family = optimizer_family(run.optimizer_name)
    if family is None or family not in DEFAULT_LR:
        return None
    found = peak_lr(run)
    if found is None:
        return None
    peak, what = found
    default = DEFAULT_LR[family]
    if not (0 < peak < default / opts.lr_far_below):
        return None
    source = ("logged" if what.startswith("the logged") else "hyper-parameters" if what.startswith("the configured")
              else "optimizer state")
    what += " peaks at" if source == "logged" else " is" if source == "hyper-parameters" else " is at most"
    return LrCause("lr-too-low", f"{what} {peak:.3g}, {default / peak:.3g}x below {default:g}, the lowest published "
                                 f"default for {run.optimizer_name} ({family} family)",
                   {"lr_peak": peak, "optimizer": run.optimizer_name, "optimizer_family": family,
                    "usual_lr": default, "lr_source": source, "lr_factor_below": default / peak})


def total_changes(run, *, on_demand: bool = False) -> dict[str, float]:
    """param -> total relative change ||ΔW||/||W|| summed over the checkpoint series (finite steps only).
    on_demand: read the series even when no selected rule needs tensor facts (`RunFacts.series_on_demand`)."""
    out = {}
    for n, ps in (run.series_on_demand() if on_demand else run.series).items():
        if run.tensor_role(n) != "param" or len(ps.present) < 2:
            continue
        ru = np.asarray(ps.rel_update, dtype=float)
        ru = ru[np.isfinite(ru)]
        if ru.size:
            out[n] = float(ru.sum())
    return out


@dataclass
class FrozenModel:
    """Every parameter unchanged across the training: from `source` ("checkpoints", "update ratios")."""

    params: int
    source: str
    checkpoints: int = 0


def frozen_model(run) -> FrozenModel | None:
    """The whole model frozen: every parameter bit-identical across two or more checkpoints, or every logged
    update ratio exactly 0."""
    changes = total_changes(run)
    if changes:
        # the same state saved twice (Lightning's last.ckpt beside epoch=N.ckpt) is no training interval
        steps = {c.step for c in run.checkpoints if c.step is not None}
        if len(steps) >= 2 and all(c == 0.0 for c in changes.values()):
            return FrozenModel(len(changes), "checkpoints", len(run.checkpoints))
        return None
    ratios = [s.values[np.isfinite(s.values)] for s in run.signals.update_ratio.values()]
    ratios = [r for r in ratios if r.size]
    if ratios and all(np.all(r == 0.0) for r in ratios):
        return FrozenModel(len(ratios), "update ratios")
    return None


def gradient_cause(run) -> LrCause | None:
    """Why no parameter moved, from the gradient side: a logged gradient norm of exactly 0 at every step, an
    optimizer that holds no parameter, or one that kept no state (no moments) for any of them."""
    g = run.signals.grad_norm
    if g is not None and len(g):
        v = g.values[np.isfinite(g.values)]
        if v.size and np.all(v == 0.0):
            return LrCause("no-gradients", f"the logged gradient norm ({g.tag}) is exactly 0 at all {v.size} logged "
                                           f"steps: no parameter receives a gradient (requires_grad=False everywhere, "
                                           f"or a loss detached from the model)",
                           {"grad_norm_tag": g.tag, "grad_norm_points": int(v.size)})
    for c in reversed(run.checkpoints):
        o = c.optimizer or {}
        if "group_params" not in o:
            continue
        if o["group_params"] == 0:
            return LrCause("no-gradients", "the optimizer's param groups hold no parameter at all (it was built from "
                                           "a filtered list of trainable parameters, and none was trainable)",
                           {"optimizer_params": 0, "checkpoint": c.path})
        if o.get("state_entries") == 0 and (c.step or 0) > 0 and o.get("kind") in ("adam", "adamw", "rmsprop", "adagrad"):
            return LrCause("no-gradients", f"the optimizer holds {o['group_params']} parameters but no state (no moments) "
                                           f"for any of them at step {c.step}: none ever received a gradient "
                                           f"(requires_grad=False, or the loss was detached)",
                           {"optimizer_params": o["group_params"], "optimizer_state_entries": 0, "checkpoint": c.path})
        break
    return None


def peak_lr(run) -> tuple[float, str] | None:
    """(the run's peak learning rate, where it comes from): logged, else configured, else the optimizer state."""
    prof = run.lr_profile
    if prof is not None and prof.points:
        return prof.peak, f"the logged learning rate ({run.signals.lr.tag})"
    hp = hparam_lr(run)
    if hp is not None:
        return hp, "the configured learning rate"
    saved = [lr for _, lrs in run.checkpoint_lrs for lr in lrs]
    return (max(saved), "the optimizer state's learning rate") if saved else None


def lr_too_high(run, factor: float) -> LrCause | None:
    """The peak learning rate more than `factor` times torch.optim's default for the run's optimizer family."""
    family = optimizer_family(run.optimizer_name)
    found = peak_lr(run)
    if family not in TORCH_DEFAULT_LR or found is None:
        return None
    peak, what = found
    default = TORCH_DEFAULT_LR[family]
    if peak <= factor * default:
        return None
    return LrCause("lr-too-high", f"{what} {peak:.3g} is {peak / default:.3g}x torch.optim's default {default:g} for "
                                  f"{run.optimizer_name}",
                   {"lr_peak": peak, "optimizer": run.optimizer_name, "usual_lr": default, "lr_factor_above": peak / default})
