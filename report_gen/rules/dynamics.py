"""U: updates and training dynamics (checkpoint series, weight histograms over time, update ratios)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from report_gen.facts import histograms as hf
from report_gen.facts.run import is_weight_name
from report_gen.rules.base import Hit, opt, rule
from report_gen.rules.causes import LrCauseOptions, frozen_model, gradient_cause, lr_cause
from report_gen.vocab import CurvePlot, Key, LayerFact, LayerSeriesPlot, Signal


def module_of(param: str) -> str:
    return param.rsplit(".", 1)[0] if "." in param else param


def _changes(run) -> tuple[dict[str, float], str] | tuple[None, None]:
    """param -> total relative change over the run, and the source used."""
    params = [n for n in run.param_order if n in run.series and run.tensor_role(n) == "param"]
    ckpt = {}
    for n in params:
        ru = np.asarray(run.series[n].rel_update, dtype=float)
        ru = ru[np.isfinite(ru)]
        if ru.size:
            ckpt[n] = float(ru.sum())
    if len(ckpt) >= 2:
        return ckpt, "checkpoints"
    hist = {}
    for n, h in run.signals.weight_hist.items():
        if len(h) >= 2:
            hist[n] = 0.0 if hf.is_constant(h) else float("inf")
    if len(hist) >= 2:
        return hist, "weight histograms"
    return None, None


@dataclass(frozen=True)
class FrozenOptions:
    max_change: float = opt(0.0, "total relative change at or below this counts as none (0.0: bit-identical)")
    min_others_change: float = opt(1e-6, "median total change the other parameters need")
    tiny_grad: float = opt(1e-8, "gradient RMS under which the layer is starved rather than frozen (a symptom, not a "
                                 "missing optimizer entry)")


@rule("U101", "frozen-layer", "error", needs=(Signal.CHECKPOINT_SERIES, Signal.WEIGHT_HIST), options=FrozenOptions)
def frozen_layer(run, opts: FrozenOptions):
    """
    What it detects:
        Parameters that do not change at all across the checkpoint series (or whose logged weight
        histogram stays identical) while the rest of the model does. Reported per layer. A frozen layer
        between trained layers that still receives gradients is an error (it is missing from the
        optimizer); a frozen block at the start of the model (a frozen backbone while fine-tuning), or
        a layer whose logged gradients are ~0 (its stillness is a symptom of dead units or vanishing
        gradients upstream), is a warning.
    Why it matters:
        A layer silently left out of the optimizer keeps its random initialisation: the model trains
        around it and ends up worse, and nobody notices until the metric is bad.
    Typical causes:
        The optimizer was built before the layer was created or replaced, a filtered parameter list,
        requires_grad=False left over from a freezing stage, a learning rate of 0 in one param group.
    What to try:
        Check that the layer's parameters are passed to the optimizer (e.g. optimizer built before the
        layer was added, or from a filtered parameter list) and have requires_grad=True. If the layer is
        frozen on purpose (fine-tuning), ignore this rule for it in the config.

        Build the optimizer from model.parameters() after the model is final and print the parameter
        names per param group.
    """
    changes, source = _changes(run)
    if not changes:
        return
    frozen = [n for n, c in changes.items() if c <= opts.max_change]
    moving = [c for n, c in changes.items() if c > opts.max_change]
    if not frozen or not moving or float(np.median(moving)) < opts.min_others_change:
        return
    order = [n for n in (run.param_order or list(changes)) if n in changes]
    by_module: dict[str, list[str]] = {}
    for n in order:
        if n in frozen:
            by_module.setdefault(module_of(n), []).append(n)
    first_moving = next((i for i, n in enumerate(order) if n not in frozen), len(order))
    grads = run.grad_estimates
    starved: list[tuple[str, list[str], float]] = []
    for mod, params in by_module.items():
        prefix = order.index(params[0]) < first_moving
        g = [grads[p].value for p in params if p in grads and np.isfinite(grads[p].value)]
        if g and max(g) < opts.tiny_grad:
            starved.append((mod, params, max(g)))
            continue
        if prefix:
            sev, why = "warning", "it sits at the start of the model (a frozen backbone?)"
        else:
            sev, why = "error", "it sits between layers that train" + (
                f" and receives gradients (RMS {max(g):.2g}): is it missing from the optimizer?" if g else "")
        opt = next((c.optimizer for c in reversed(run.checkpoints) if c.optimizer), None)
        in_opt = None if not opt or opt.get("mapping") not in ("names-in-file", "shapes-verified") else \
            all(p in opt.get("grad_rms", {}) for p in params)
        if opt and opt.get("mapping") in ("ambiguous", "unmapped") and not prefix:
            why += f" (the optimizer state says: {opt.get('note')})"
        yield Hit(mod, f"{', '.join(params)} did not change across training ({source}) while "
                       f"{len(moving)} other parameters did; {why}",
                  {"params": params, "source": source, "others_median_change": float(np.median(moving)),
                   "prefix_of_model": prefix, "grad_rms": max(g) if g else None,
                   "optimizer_note": opt.get("note") if opt else None, "has_optimizer_state": in_opt},
                  severity=sev, plot=LayerSeriesPlot(run.name, params[0], LayerFact.REL_UPDATE))
    if starved:
        # one finding: the stillness of these layers is a symptom of dead units or vanishing gradients
        mods = [m for m, _, _ in starved]
        params = [p for _, ps, _ in starved for p in ps]
        top = max(g for _, _, g in starved)
        size = "exactly 0" if top == 0 else f"~0 (RMS ≤ {top:.2g})"
        yield Hit(mods[0], f"{len(params)} parameter(s) in {len(mods)} layer(s) ({', '.join(mods[:6])}"
                           f"{', ...' if len(mods) > 6 else ''}) did not change while {len(moving)} others did; their "
                           f"gradients are {size}: nothing reaches them, so look upstream (dead or saturated units, "
                           f"vanishing gradients) rather than at the optimizer",
                  {"params": params, "layers": mods, "source": source, "max_grad_rms": top},
                  severity="warning",
                  suggestion="Fix what starves these layers: see this run's dead-activations, saturated-activations "
                             "and vanishing-gradients findings (dead ReLUs before them, or gradients dying on the way "
                             "back); the layers will move once a gradient reaches them.",
                  plot=LayerSeriesPlot(run.name, params[0], LayerFact.REL_UPDATE))


@dataclass(frozen=True)
class WholeModelFrozenOptions(LrCauseOptions):
    pass


@rule("U104", "whole-model-frozen", "error", needs=(Signal.CHECKPOINT_SERIES, Signal.UPDATE_RATIO),
      options=WholeModelFrozenOptions, category="frozen-layer")
def whole_model_frozen(run, opts: WholeModelFrozenOptions):
    """
    What it detects:
        The whole model does not train: every parameter is bit-identical across two or more checkpoints
        of different steps (or every logged update ratio is exactly 0). frozen-layer (U101) reports single
        layers that stay still while the rest trains; this is the case where nothing moves, so the run's
        metrics are those of its initialisation. The finding names the cause when the run holds it: a
        learning rate of exactly 0 (logged, or in every param group of the optimizer state), a logged
        gradient norm of exactly 0, an optimizer whose param groups hold no parameter, or one that kept no
        moments for any parameter (no gradient ever reached it).
    Why it matters:
        Training ran, time was spent and metrics were logged, but the model is its random initialisation.
    Typical causes:
        requires_grad=False on every parameter (a freezing step meant for a backbone, PEFT preparation
        without adapters) with the loss forced to require grad, a scheduler that sets the learning rate to
        0, an optimizer built over the wrong model, a loss computed from detached tensors.
    What to try:
        Print the trainable parameters (sum(p.numel() for p in model.parameters() if p.requires_grad)) and
        the optimizer's param groups and lr at the first step; check that loss.backward() produces
        non-zero gradients.

        If the learning rate is 0, check the scheduler (its total steps, an integer division).
    """
    frozen = frozen_model(run)
    if frozen is None:
        return
    cause = lr_cause(run, opts)
    if cause is None or cause.kind != "lr-zero":
        cause = gradient_cause(run) or (cause if cause is not None and cause.kind == "lr-collapsed" else None)
    where = (f"across {frozen.checkpoints} checkpoints (steps {_step_span(run)})" if frozen.source == "checkpoints"
             else "in every logged update ratio")
    why = f"; cause: {cause.text}" if cause is not None else \
        "; the logs do not say why: check the optimizer's parameters and learning rate, and that gradients reach them"
    yield Hit("(whole model)", f"all {frozen.params} parameters are unchanged {where}: the model did not train{why}",
              {"parameters": frozen.params, "source": frozen.source, "checkpoints": frozen.checkpoints,
               "root_cause": cause.kind if cause is not None else None, **(cause.evidence if cause is not None else {})})


def _step_span(run) -> str:
    steps = sorted(c.step for c in run.checkpoints if c.step is not None)
    return f"{steps[0]}..{steps[-1]}" if steps else "unknown"


@dataclass(frozen=True)
class UpdateRatioOptions:
    low: float = opt(1e-5, "late-training median ||ΔW||/||W|| below this: hardly learning (TheDeepChecker's band is "
                           "1e-4..1e-1)")
    high: float = opt(1e-1, "above this: steps too large")
    min_lr_share: float = opt(0.3, "with a logged learning rate, the low side is judged only on steps where the lr is "
                                   "at least this share of its peak: a cosine schedule's tail is meant to move little")
    min_points: int = opt(5, "logged points needed per parameter")


@rule("U102", "update-ratio", "warning",
      needs=(Signal.UPDATE_RATIO,), options=UpdateRatioOptions, category="unbalanced-updates")
def update_ratio(run, opts: UpdateRatioOptions):
    """
    What it detects:
        Per-step update/weight ratios (||ΔW|| / ||W||, logged as update_ratio/<param>) outside a healthy
        band: the late-training median below `low` (the layer hardly moves) or above `high` (each step
        rewrites a large part of the weights). TheDeepChecker uses log10 in [-4, -1]; the lower bound
        here is a decade looser because Adam at the end of a decayed schedule legitimately goes below.
    Why it matters:
        The update ratio is the most direct view of the effective learning rate per layer.
    Typical causes:
        A learning rate far too high or too low, a schedule that decayed to ~0, weights that grew huge.
    What to try:
        Tune the learning rate (the CS231n rule of thumb is an update/weight ratio near 1e-3); consider
        per-layer learning rates or a normalised optimizer.

        Use warm-up and a decay schedule.
    """
    lr = run.signals.lr
    for name, s in run.signals.update_ratio.items():
        finite = np.isfinite(s.values)
        v, steps = s.values[finite], s.steps[finite]
        if v.size < opts.min_points:
            continue
        med = float(np.median(v[v.size // 2:]))
        if med <= 0:
            continue
        low_med = med
        if lr is not None and len(lr) and np.isfinite(lr.values).any():
            # small updates while the schedule has decayed the lr are expected: judge the low side
            # only where the lr is still a good share of its peak
            peak = float(np.nanmax(lr.values))
            at = np.interp(steps, lr.steps, np.nan_to_num(lr.values))
            hot = v[at >= opts.min_lr_share * peak] if peak > 0 else v
            if hot.size < opts.min_points:  # an lr that collapsed almost at once is no excuse
                hot = v
            low_med = float(np.median(hot[hot.size // 2:]))
        if low_med < opts.low or med > opts.high:
            side = "below" if low_med < opts.low else "above"
            med = low_med if side == "below" else med
            yield Hit(name, f"late-training update/weight ratio {med:.2g} is {side} the healthy band "
                            f"[{opts.low:g}, {opts.high:g}]",
                      {"median_update_ratio": med, "low": opts.low, "high": opts.high},
                      plot=CurvePlot(run.name, [Key.UPDATE_RATIO.of(name)]))


@dataclass(frozen=True)
class ImbalanceOptions:
    max_spread: float = opt(1e3, "largest over smallest relative change across weight layers")
    min_layers: int = opt(3, "weight layers needed for a comparison")


@rule("U103", "unbalanced-updates", "warning",
      needs=(Signal.CHECKPOINT_SERIES, Signal.UPDATE_RATIO), options=ImbalanceOptions)
def unbalanced_updates(run, opts: ImbalanceOptions):
    """
    What it detects:
        Very unequal relative updates across weight layers over the run (the seed tutorial's step 4:
        are update ratios balanced across layers?): the most-moved layer changed more than
        `max_spread` times as much as the least-moved one (frozen layers excluded: see frozen-layer).
    Why it matters:
        Some layers are effectively not learning while others dominate, which slows training and
        often points at vanishing gradients or mis-scaled parameters.
    Typical causes:
        Vanishing gradients, per-layer learning-rate mistakes, layers with very different scales
        (embeddings vs. dense layers), missing normalization.
    What to try:
        Compare per-layer learning rates and initial scales; add normalization; check that no layer has
        a near-zero effective learning rate.

        Inspect the gradient-by-depth plot; residual connections help too.
    """
    changes: dict[str, float] = {}
    source = "checkpoints"
    for n in run.param_order:
        ps = run.series.get(n)
        if ps is None or not is_weight_name(n) or not ps.stats or len(ps.stats[-1].shape) < 2:
            continue
        ru = np.asarray(ps.rel_update, dtype=float)
        ru = ru[np.isfinite(ru)]
        if ru.size and ru.sum() > 0:
            changes[n] = float(ru.sum())
    if len(changes) < opts.min_layers:
        source = Signal.UPDATE_RATIO
        changes = {}
        for n, s in run.signals.update_ratio.items():
            v = s.values[np.isfinite(s.values)]
            if v.size and is_weight_name(n) and np.median(v) > 0:
                changes[n] = float(np.median(v))
    if len(changes) < opts.min_layers:
        return
    lo = min(changes, key=changes.get)
    hi = max(changes, key=changes.get)
    spread = changes[hi] / changes[lo]
    if spread > opts.max_spread:
        yield Hit(lo, f"{lo} moved {spread:.3g}× less than {hi} over the run ({source}: "
                      f"{changes[lo]:.3g} vs {changes[hi]:.3g})",
                  {"least_moved": lo, "least_change": changes[lo], "most_moved": hi,
                   "most_change": changes[hi], "spread": spread, "threshold": opts.max_spread, "source": source},
                  plot=LayerSeriesPlot(run.name, lo, LayerFact.REL_UPDATE))
