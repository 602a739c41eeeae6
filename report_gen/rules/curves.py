"""L: loss and metric curves."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from report_gen.facts import curves
from report_gen.rules.base import Hit, opt, rule
from report_gen.vocab import CurvePlot, Key, Signal


def _loss_series(run, include_val: bool = True):
    s = run.signals
    out = []
    if s.train_loss is not None:
        out.append((Signal.TRAIN_LOSS, s.train_loss))
    if include_val and s.val_loss is not None:
        out.append((Signal.VAL_LOSS, s.val_loss))
    for tag, series in s.other_losses.items():
        out.append((Key.OTHER.of(tag), series))
    return out


def _fmt(x: float) -> str:
    return f"{x:.4g}"


@dataclass(frozen=True)
class NonfiniteLossOptions:
    include_metrics: bool = opt(True, "also check accuracy and other logged metric series")


@rule("L101", "nonfinite-loss", "error", needs=(Signal.LOSS_ANY,), options=NonfiniteLossOptions)
def nonfinite_loss(run, opts: NonfiniteLossOptions):
    """
    What it detects:
        NaN or Inf values in a loss series (and, by default, in accuracy and other metric series).
    Why it matters:
        Once the loss is NaN the weights are usually NaN too: everything after that step is garbage,
        and the final metrics cannot be trusted.
    Typical causes:
        Learning rate too high, exploding gradients, log(0) or division by zero in the loss, bad input
        values, fp16 overflow without loss scaling.
    What to try:
        Find the first bad step: lower the learning rate, add gradient clipping, check the data for
        NaN/Inf and the loss for log(0) or division by zero; with mixed precision use a GradScaler.

        Use numerically stable losses (e.g. BCEWithLogitsLoss).
    """
    s = run.signals
    named = _loss_series(run)
    if opts.include_metrics:
        for key in (Signal.TRAIN_ACC, Signal.VAL_ACC):
            if getattr(s, key.value) is not None:
                named.append((key, getattr(s, key.value)))
    for key, series in named:
        i = curves.first_nonfinite(series.values)
        if i is None:
            continue
        bad = int(np.sum(~np.isfinite(series.values)))
        yield Hit(series.tag, f"{series.tag} becomes non-finite ({series.values[i]}) at step "
                              f"{int(series.steps[i])}; {bad} of {len(series)} values are NaN/Inf",
                  {"first_step": int(series.steps[i]), "nonfinite": bad, "total": len(series),
                   "last_finite": float(series.values[:i][-1]) if i > 0 else None},
                  plot=CurvePlot(run.name, [key], int(series.steps[i])))


@dataclass(frozen=True)
class DivergenceOptions:
    min_points: int = opt(10, "finite points needed before the rule looks at a series")
    giveback_warning: float = opt(0.5, "the final level gave back this share of the improvement (start minus best): a "
                                       "warning...")
    giveback_error: float = opt(1.0, "...or this share (all of it: ends at or above where it started): an error")
    spike_factor: float = opt(10.0, "after its best, a peak this many improvement spans above the best")
    min_span: float = opt(0.05, "the improvement span counts as at least this share of the starting loss, so noise on "
                                "a flat curve is not read as divergence")


def _scale(summ: curves.CurveSummary, min_span: float) -> float:
    """The yardstick for rises: what the run learned, but never less than min_span of its start level."""
    return max(summ.span, min_span * abs(summ.start), 1e-12)


@rule("L102", "divergence", "error", needs=(Signal.TRAIN_LOSS,), options=DivergenceOptions)
def divergence(run, opts: DivergenceOptions):
    """
    What it detects:
        The training loss rises far above its best value: by the end it has given back all of what it
        learned (error) or half of it (warning); or after its best it spiked to many times the whole
        improvement above it: an error unless the last value is back near the best (a spike the run
        recovered from is a warning: a bad batch or an lr spike worth a look).
        Rises are measured against what the run learned (start minus best), never against the loss
        value itself, so a loss near 0 that moves from 0.001 to 0.01 is not "10× worse".
    Why it matters:
        A diverging run's final weights are worse than an earlier checkpoint's; reported final metrics
        understate what the model could do, or the run is broken outright.
    Typical causes:
        Learning rate too high or a schedule that raises it, missing warm-up, exploding gradients,
        a data-pipeline change mid-run, numerical instability.
    What to try:
        Lower the learning rate (or shorten warm-up), clip gradients, and check the learning-rate
        schedule around the step where the loss turned.

        Inspect the data around the step where the loss turned, too.
    """
    s = run.signals.train_loss
    finite = np.isfinite(s.values)
    v = s.values[finite]
    if v.size < opts.min_points:
        return
    summ = curves.summarize(v)
    if summ is None:
        return
    scale = _scale(summ, opts.min_span)
    giveback = (summ.end - summ.best) / scale
    peak_i = summ.best_index + int(np.argmax(v[summ.best_index:]))
    spike = (float(v[peak_i]) - summ.best) / scale
    ended_nonfinite = not np.isfinite(s.values[-1])  # the run blew up for good, never recovered
    last = float(v[-1])
    recovered = not ended_nonfinite and (last - summ.best) / scale < opts.giveback_warning
    sev = None
    if giveback >= opts.giveback_error or (spike >= opts.spike_factor and not recovered):
        sev = "error"
    elif giveback >= opts.giveback_warning or spike >= opts.spike_factor:
        sev = "warning"  # a spike the run recovered from is worth a look, not a broken run
    if sev is None:
        return
    steps = s.steps[finite]
    best_step = int(steps[summ.raw_best_index])  # quoted: the best value logged, as the metrics table shows
    if spike >= opts.spike_factor and giveback < opts.giveback_warning:
        after = ("then became NaN/Inf" if ended_nonfinite else f"then recovered to {_fmt(last)}" if recovered
                 else f"and ended at {_fmt(last)}")
        msg = (f"{s.tag} spiked to {_fmt(float(v[peak_i]))} at step {int(steps[peak_i])} after reaching its best "
               f"{_fmt(summ.raw_best)} (step {best_step}): {spike:.3g}× the whole improvement from {_fmt(summ.start)}, "
               f"{after}")
    else:
        msg = (f"{s.tag} rose from its best {_fmt(summ.raw_best)} (step {best_step}) to {_fmt(summ.end)} over the last "
               f"points (last value {_fmt(last)}), giving back {giveback:.0%} of the improvement from {_fmt(summ.start)}")
    yield Hit(s.tag, msg, {"start": summ.start, "best": summ.raw_best, "best_step": best_step,
                           "smoothed_best": summ.best, "end": summ.end,
                           "giveback": giveback, "peak": float(v[peak_i]), "peak_step": int(steps[peak_i]),
                           "spike": spike, "last": last, "recovered": recovered},
              severity=sev, plot=CurvePlot(run.name, [Signal.TRAIN_LOSS], best_step))


@dataclass(frozen=True)
class PlateauOptions:
    min_points: int = opt(10, "points needed before the rule looks")
    min_improvement: float = opt(0.05, "relative loss decrease from start to best below which it is a plateau")
    min_acc_gain: float = opt(0.02, "absolute accuracy gain from start to best below which accuracy is flat (accuracy "
                                    "is only judged when no training loss was logged)...")
    max_acc_level: float = opt(0.9, "...for an accuracy that never reached this share of its ceiling")


@rule("L103", "plateau", "warning", needs=(Signal.TRAIN_LOSS, Signal.TRAIN_ACC, Signal.VAL_ACC), options=PlateauOptions)
def plateau(run, opts: PlateauOptions):
    """
    What it detects:
        The training loss never improves by more than a few percent over the whole run (or the accuracy
        never rises): nothing is being learned. A curve that improves and then levels off (convergence)
        is not a plateau.
    Why it matters:
        The run produced no useful model; its metrics reflect the initialisation.
    Typical causes:
        Vanishing gradients (deep sigmoid/tanh stacks), learning rate far too low or zero, parameters
        missing from the optimizer, labels shuffled independently of inputs, saturated or dead units.
    What to try:
        Check that gradients reach every layer and the optimizer holds all parameters; try a larger
        learning rate, a different initialisation, normalization layers, or verify labels match inputs.

        The gradient-by-depth plot in this report shows where gradients stop; ReLU-family activations
        with He initialisation keep them flowing.
    """
    s = run.signals
    if s.train_loss is not None and np.isfinite(s.train_loss.values).sum() >= opts.min_points:
        v = s.train_loss.values
        if curves.first_nonfinite(v) is None:
            summ = curves.summarize(v)
            imp = curves.relative_improvement(v)
            if summ is not None and imp is not None and imp < opts.min_improvement:
                raw_step = int(s.train_loss.steps[np.isfinite(v)][summ.raw_best_index])
                yield Hit(s.train_loss.tag, f"{s.train_loss.tag} improved only {imp:.1%} over {summ.n} points "
                                            f"(smoothed curve; from {_fmt(summ.start)}, lowest value "
                                            f"{_fmt(summ.raw_best)} at step {raw_step})",
                          {"relative_improvement": imp, "start": summ.start, "best": summ.raw_best,
                           "best_step": raw_step, "smoothed_best": summ.best,
                           "points": summ.n, "threshold": opts.min_improvement},
                          plot=CurvePlot(run.name, [Signal.TRAIN_LOSS]))
        return  # the loss decides; accuracy is only the fallback when no training loss was logged
    for key in (Signal.TRAIN_ACC, Signal.VAL_ACC):
        a = getattr(s, key.value)
        if a is None or np.isfinite(a.values).sum() < opts.min_points:
            continue
        summ = curves.summarize(a.values, higher_is_better=True)
        ceiling = 100.0 if np.nanmax(a.values) > 1.5 else 1.0
        if summ is not None and summ.best - summ.start < opts.min_acc_gain * ceiling \
                and summ.best < opts.max_acc_level * ceiling:
            raw_step = int(a.steps[np.isfinite(a.values)][summ.raw_best_index])
            yield Hit(a.tag, f"{a.tag} never rose more than {opts.min_acc_gain * ceiling:g} above its start "
                             f"({_fmt(summ.start)} → best {_fmt(summ.raw_best)} at step {raw_step})",
                      {"start": summ.start, "best": summ.raw_best, "best_step": raw_step, "smoothed_best": summ.best,
                       "gain": summ.best - summ.start,
                       "threshold": opts.min_acc_gain},
                      plot=CurvePlot(run.name, [key]))
            return


@dataclass(frozen=True)
class OscillationOptions:
    window: int = opt(50, "the last points of the curve examined")
    min_points: int = opt(20, "finite points needed before the rule looks")
    min_sign_change_rate: float = opt(0.5, "share of steps that change direction (TheDeepChecker: smoothness below 0.5"
                                           " is fluctuating)")
    min_relative_swing: float = opt(0.2, "median step-to-step |Δloss| over the whole run's improvement span "
                                         "(AUTOTRAINER's eta)")
    min_level: float = opt(0.1, "the span counts as at least this share of the final loss level")


@rule("L104", "oscillation", "warning", needs=(Signal.TRAIN_LOSS, Signal.VAL_LOSS), options=OscillationOptions)
def oscillation(run, opts: OscillationOptions):
    """
    What it detects:
        In the last `window` points the loss swings up and down step to step (direction changes on most
        steps) with swings that are large compared with everything the run learned. When a validation
        loss is logged and stays smooth, a zigzagging training loss is reported as info only
        (per-batch losses of small or noisy batches always zigzag).
    Why it matters:
        The optimizer is bouncing around instead of settling; final metrics depend on where the run
        happened to stop.
    Typical causes:
        Learning rate too high for the batch size, no decay schedule, a tiny batch, noisy labels.
    What to try:
        Lower the learning rate or increase the batch size; a learning-rate decay schedule usually calms
        late oscillation.

        Gradient accumulation gives a larger batch; use momentum/Adam with sane betas.
    """
    train = run.signals.train_loss
    first_train = float(train.values[np.isfinite(train.values)][0]) \
        if train is not None and np.isfinite(train.values).any() else -np.inf

    def measure(v):
        summ = curves.summarize(v)
        tail = v[-opts.window:]
        rate = curves.sign_change_rate(tail)
        swing = curves.swing_amplitude(tail)
        # yardstick: what the run learned from its untrained level (for validation, the first training
        # loss when higher: the first evaluation often comes after an epoch), but at least min_level
        # of the loss level (noise on a flat curve)
        learned = max(summ.start, first_train) - summ.best
        span = max(learned, opts.min_level * abs(float(np.median(tail))), 1e-12)
        return summ, tail, rate, swing, swing / span

    val = run.signals.val_loss
    val_v = val.values[np.isfinite(val.values)] if val is not None else np.array([])
    # per-batch training losses zigzag with sampling noise (small batches, noisy labels): when a
    # validation curve exists (even a short one), the training curve only counts if validation
    # oscillates too, by the same two criteria
    val_oscillates = None
    if val_v.size >= 3:
        _, _, vrate, _, vrel = measure(val_v)
        val_oscillates = vrate >= opts.min_sign_change_rate and vrel >= opts.min_relative_swing
    for key in (Signal.VAL_LOSS, Signal.TRAIN_LOSS):
        s = getattr(run.signals, key.value)
        if s is None:
            continue
        v = s.values[np.isfinite(s.values)]
        if v.size < opts.min_points or curves.first_nonfinite(s.values) is not None:
            continue
        summ, tail, rate, swing, rel = measure(v)
        if rate >= opts.min_sign_change_rate and rel >= opts.min_relative_swing:
            smooth_val = key == Signal.TRAIN_LOSS and val_oscillates is False
            note = "; the validation loss is smooth, so this is likely batch-to-batch noise" if smooth_val else ""
            yield Hit(s.tag, f"{s.tag} swings step to step in its last {tail.size} points: direction changes "
                             f"{rate:.0%} of the time, median swing {_fmt(swing)} = {rel:.0%} of the run's improvement"
                             f"{note}",
                      {"sign_change_rate": rate, "median_swing": swing, "relative_swing": rel,
                       "improvement_span": summ.span, "window": int(tail.size), "validation_smooth": smooth_val},
                      severity="info" if smooth_val else None,
                      plot=CurvePlot(run.name, [key, Signal.VAL_LOSS] if smooth_val else [key]))


@dataclass(frozen=True)
class OverfittingOptions:
    min_points: int = opt(6, "finite validation points needed")
    min_rise: float = opt(0.25, "rise of the validation loss at the end above its best, as a share of the yardstick: "
                                "the validation loss's own improvement from start to best...")
    best_level: float = opt(1.0, "...or this multiple of its best value when larger, so a curve whose first evaluation"
                                 " was already trained is judged against its level")
    min_tail_share: float = opt(0.2, "the rise lasts at least this share of the validation points...")
    min_tail_points: int = opt(3, "...and at least this many points")
    max_acc_gap: float = opt(0.25, "train − val accuracy gap at the end above this: overfitting")
    acc_tolerance: float = opt(0.01, "when validation accuracy is logged and ends within this of its best, a rising "
                                     "validation loss is reported as info: the model grows overconfident, its "
                                     "predictions do not get worse")


def _accuracy_holds(acc, tolerance: float) -> bool:
    """Final validation accuracy within `tolerance` (a fraction; percent scales too) of its best."""
    if acc is None:
        return False
    a = acc.values[np.isfinite(acc.values)]
    if a.size < 2:
        return False
    scale = 100.0 if a.max() > 1.5 else 1.0
    return float(a.max() - np.median(a[-max(1, a.size // 10):])) <= tolerance * scale


@rule("L105", "overfitting", "warning", needs=(Signal.VAL_LOSS, Signal.VAL_ACC), options=OverfittingOptions)
def overfitting(run, opts: OverfittingOptions):
    """
    What it detects:
        Validation loss rises for a sustained window after its best while the training loss keeps
        improving (UMLAUT, SageMaker's Overfit rule); or, with accuracies logged, a large gap between
        final training and validation accuracy.
    Why it matters:
        The model memorises the training set; the last checkpoint generalises worse than an earlier one.
    Typical causes:
        Too little data for the model size, too many epochs, no regularisation, noisy labels,
        leakage between train and validation splits masking it earlier.
    What to try:
        Stop earlier (keep the best-validation checkpoint), add regularisation (weight decay, dropout,
        augmentation), get more data or use a smaller model.

        Report the best-validation checkpoint rather than the last.
    """
    s = run.signals
    v = s.val_loss
    if v is not None and np.isfinite(v.values).sum() >= opts.min_points and curves.first_nonfinite(v.values) is None:
        vals, steps = v.values, v.steps
        summ = curves.summarize(vals, frac=0.15, minimum=2)
        tail_n = len(vals) - 1 - summ.best_index
        # yardstick: the validation curve's own improvement, but at least its best level: a task
        # learned before the first evaluation has almost no improvement to measure against, and
        # there a rise is judged against the loss itself (0.075 -> 0.085 is noise, 0.22 -> 0.60 is not)
        yardstick = max(summ.span, opts.best_level * abs(summ.best), 1e-12)
        rise = (summ.end - summ.best) / yardstick
        if tail_n >= max(opts.min_tail_points, opts.min_tail_share * len(vals)) and rise >= opts.min_rise:
            best_step = int(steps[summ.best_index])
            train_ok = True
            t = s.train_loss
            if t is not None and np.isfinite(t.values).any():
                before = t.values[(t.steps <= best_step) & np.isfinite(t.values)]
                after = t.values[(t.steps > best_step) & np.isfinite(t.values)]
                if before.size and after.size:
                    train_ok = float(np.median(after[-max(1, after.size // 5):])) <= float(np.median(before[-max(1, before.size // 5):]))
            if train_ok:
                raw_step, raw_after = int(steps[summ.raw_best_index]), len(vals) - 1 - summ.raw_best_index
                acc_holds = _accuracy_holds(s.val_acc, opts.acc_tolerance)
                note = (f"; validation accuracy stays within {opts.acc_tolerance:.0%} of its best, so the model "
                        f"grows overconfident rather than wrong") if acc_holds else ""
                yield Hit(v.tag, f"{v.tag} rose from its best {_fmt(summ.raw_best)} (step {raw_step}) to "
                                 f"{_fmt(summ.end)} over the last {raw_after} evaluations while training loss kept "
                                 f"improving{note}",
                          {"best": summ.raw_best, "best_step": raw_step, "smoothed_best": summ.best, "end": summ.end,
                           "relative_rise": rise, "evaluations_after_best": raw_after, "threshold": opts.min_rise,
                           "val_accuracy_holds": acc_holds},
                          severity="info" if acc_holds else None,
                          plot=CurvePlot(run.name, [Signal.TRAIN_LOSS, Signal.VAL_LOSS], raw_step))
                return
    ta, va = s.train_acc, s.val_acc
    losses_finite = all(x is None or curves.first_nonfinite(x.values) is None for x in (s.train_loss, s.val_loss))
    if ta is not None and va is not None and len(ta) and len(va) and losses_finite:
        t_end = curves.late(ta.values, 0.1)
        v_end = curves.late(va.values, 0.1)
        if t_end.size and v_end.size:
            gap = float(np.median(t_end) - np.median(v_end))
            scale = 100.0 if max(np.nanmax(ta.values), np.nanmax(va.values)) > 1.5 else 1.0  # percent
            if gap / scale >= opts.max_acc_gap:
                yield Hit(va.tag, f"final training accuracy {_fmt(float(np.median(t_end)))} vs validation "
                                  f"{_fmt(float(np.median(v_end)))}: a gap of {gap / scale:.0%}",
                          {"train_acc": float(np.median(t_end)), "val_acc": float(np.median(v_end)),
                           "gap": gap / scale, "threshold": opts.max_acc_gap},
                          plot=CurvePlot(run.name, [Signal.TRAIN_ACC, Signal.VAL_ACC]))
