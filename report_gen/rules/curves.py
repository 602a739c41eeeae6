"""L: loss and metric curves."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from report_gen.facts import curves
from report_gen.rules.base import Hit, opt, rule
from report_gen.rules.causes import LrCauseOptions, frozen_model, gradient_cause, lr_cause, lr_too_high
from report_gen.rules.spiking import SpikeOptions, check_method, lr_jump, spike_events
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
    lr_far_above: float = opt(1000.0, "a divergence names 'lr-too-high' as its root cause when the peak learning rate is "
                                      "more than this factor above torch.optim's default for the optimizer (SGD and "
                                      "Adam 1e-3, RMSprop 1e-2: lr > 1 for SGD; PyTorch's word-language-model example "
                                      "trains SGD at 20 with clipping, so only a diverged run gets this cause)")


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
        value itself, so a loss near 0 that moves from 0.001 to 0.01 is not "10× worse". A curve that never
        learned (it improved less than `min_span` of its start, e.g. a loss sitting at chance, ln C, with
        batch noise) has no improvement to give back: there only a rise above its starting level counts,
        measured in `min_span` of that level, so a 3% noise dip and recovery is not divergence.
        Reinforcement-learning runs (they log an episode reward or return) are left out: their losses
        rise as the returns grow (SB3's PPO value loss), so a loss is no convergence signal there.
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
    if run.reward is not None:
        return  # reinforcement learning: the losses are no convergence signal
    finite = np.isfinite(s.values)
    v = s.values[finite]
    if v.size < opts.min_points:
        return
    summ = curves.summarize(v)
    if summ is None:
        return
    scale = _scale(summ, opts.min_span)
    # a curve that never learned (improvement under min_span of its start: a loss at chance with noise)
    # has nothing to give back: its noise dips are not a "best", only a rise above where it started counts
    flat = summ.span < opts.min_span * abs(summ.start)
    giveback = (max(summ.end - summ.start, 0.0) if flat else summ.end - summ.best) / scale
    peak_i = summ.best_index + int(np.argmax(v[summ.best_index:]))
    spike = (float(v[peak_i]) - (summ.start if flat else summ.best)) / scale
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
    cause = lr_too_high(run, opts.lr_far_above)
    if cause is not None:
        msg += f"; root cause: {cause.text}"
    yield Hit(s.tag, msg, {"start": summ.start, "best": summ.raw_best, "best_step": best_step,
                           "smoothed_best": summ.best, "end": summ.end,
                           "giveback": giveback, "peak": float(v[peak_i]), "peak_step": int(steps[peak_i]),
                           "spike": spike, "last": last, "recovered": recovered,
                           "root_cause": cause.kind if cause is not None else None,
                           **(cause.evidence if cause is not None else {})},
              severity=sev, plot=CurvePlot(run.name, [Signal.TRAIN_LOSS], best_step))


@dataclass(frozen=True)
class PlateauOptions(LrCauseOptions):
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

        Reinforcement-learning runs (an episode reward or return is logged) are not judged on their
        losses. When the run holds the reason, the finding names it (evidence `root_cause`): the whole model
        frozen (every parameter bit-identical across the checkpoints), a learning rate of exactly 0 after
        warm-up or at every checkpoint ("lr-zero"), one that collapsed early ("lr-collapsed"), one far
        below the usual range of its optimizer ("lr-too-low"), or no gradient at all ("no-gradients").
    """
    s = run.signals
    t = s.train_loss if run.reward is None else None  # an RL run's losses are no convergence signal
    if t is not None and np.isfinite(t.values).sum() < opts.min_points:
        t = run.train_loss_steps  # a few epoch-level points: the per-batch series of the same loss decides
    if t is not None and np.isfinite(t.values).sum() >= opts.min_points:
        v = t.values
        if curves.first_nonfinite(v) is None:
            summ = curves.summarize(v)
            imp = curves.relative_improvement(v)
            if summ is not None and imp is not None and imp < opts.min_improvement:
                cause, evidence = _plateau_cause(run, opts)
                raw_step = int(t.steps[np.isfinite(v)][summ.raw_best_index])
                yield Hit(t.tag, f"{t.tag} improved only {imp:.1%} over {summ.n} points "
                                 f"(smoothed curve; from {_fmt(summ.start)}, lowest value "
                                 f"{_fmt(summ.raw_best)} at step {raw_step}){cause}",
                          {"relative_improvement": imp, "start": summ.start, "best": summ.raw_best,
                           "best_step": raw_step, "smoothed_best": summ.best,
                           "points": summ.n, "threshold": opts.min_improvement, **evidence},
                          plot=CurvePlot(run.name, [Signal.TRAIN_LOSS if t is s.train_loss else Key.OTHER.of(t.tag)]))
        return  # the loss decides; accuracy is only the fallback when no training loss was logged
    if run.reward is not None:
        return
    for key in (Signal.TRAIN_ACC, Signal.VAL_ACC):
        a = getattr(s, key.value)
        if a is None or np.isfinite(a.values).sum() < opts.min_points:
            continue
        summ = curves.summarize(a.values, higher_is_better=True)
        ceiling = 100.0 if np.nanmax(a.values) > 1.5 else 1.0
        if summ is not None and summ.best - summ.start < opts.min_acc_gain * ceiling \
                and summ.best < opts.max_acc_level * ceiling:
            cause, evidence = _plateau_cause(run, opts)
            raw_step = int(a.steps[np.isfinite(a.values)][summ.raw_best_index])
            yield Hit(a.tag, f"{a.tag} never rose more than {opts.min_acc_gain * ceiling:g} above its start "
                             f"({_fmt(summ.start)} → best {_fmt(summ.raw_best)} at step {raw_step}){cause}",
                      {"start": summ.start, "best": summ.raw_best, "best_step": raw_step, "smoothed_best": summ.best,
                       "gain": summ.best - summ.start, "threshold": opts.min_acc_gain, **evidence},
                      plot=CurvePlot(run.name, [key]))
            return


def _plateau_cause(run, opts: LrCauseOptions) -> tuple[str, dict]:
    """(message suffix, evidence) naming why nothing learns, when the run holds the reason."""
    frozen = frozen_model(run)
    cause = lr_cause(run, opts)
    if cause is None or (frozen is not None and cause.kind == "lr-too-low"):
        cause = gradient_cause(run) or cause  # a low lr still moves weights: bit-identical ones need no gradient
    parts, evidence = [], {}
    if frozen is not None:
        parts.append(f"every parameter is unchanged across {frozen.checkpoints} checkpoints" if frozen.source ==
                     "checkpoints" else f"every logged update ratio is exactly 0 ({frozen.params} parameters)")
        evidence.update({"whole_model_frozen": True, "frozen_source": frozen.source})
    if cause is not None:
        parts.append(cause.text)
        evidence.update({"root_cause": cause.kind, **cause.evidence})
    elif frozen is not None:
        evidence["root_cause"] = "whole-model-frozen"
    return ("; root cause: " + "; ".join(parts) if parts else ""), evidence


@dataclass(frozen=True)
class OscillationOptions:
    window: int = opt(50, "the last points of the curve examined")
    min_points: int = opt(20, "finite points needed before the rule looks")
    min_sign_change_rate: float = opt(0.5, "share of steps that change direction (TheDeepChecker: smoothness below 0.5"
                                           " is fluctuating)")
    min_relative_swing: float = opt(0.2, "median step-to-step |Δloss| over the whole run's improvement span "
                                         "(AUTOTRAINER's eta)")
    min_level: float = opt(0.1, "the span counts as at least this share of the final loss level")
    noise_z: float = opt(1.645, "with no validation curve to compare, a training loss whose direction changes are no "
                                "more frequent than independent batch noise gives (turning-point test, Brockwell & "
                                "Davis sec. 1.6: z below this one-sided 5% quantile) is reported as info")


@rule("L104", "oscillation", "warning", needs=(Signal.TRAIN_LOSS, Signal.VAL_LOSS), options=OscillationOptions)
def oscillation(run, opts: OscillationOptions):
    """
    What it detects:
        In the last `window` points the loss swings up and down step to step (direction changes on most
        steps) with swings that are large compared with everything the run learned. When a validation
        loss is logged and stays smooth, a zigzagging training loss is reported as info only
        (per-batch losses of small or noisy batches always zigzag); with no validation loss, so is a
        training loss that changes direction no more often than independent noise does (2/3 of the steps).
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
            z = curves.turning_point_z(tail)
            like_noise = key == Signal.TRAIN_LOSS and val_oscillates is None and z < opts.noise_z
            note = ("; the validation loss is smooth, so this is likely batch-to-batch noise" if smooth_val else
                    f"; it changes direction as often as independent batch noise does (turning-point z {z:.1f}), "
                    "and no validation loss is logged to tell them apart" if like_noise else "")
            yield Hit(s.tag, f"{s.tag} swings step to step in its last {tail.size} points: direction changes "
                             f"{rate:.0%} of the time, median swing {_fmt(swing)} = {rel:.0%} of the run's improvement"
                             f"{note}",
                      {"sign_change_rate": rate, "median_swing": swing, "relative_swing": rel,
                       "improvement_span": summ.span, "window": int(tail.size), "validation_smooth": smooth_val,
                       "turning_point_z": z, "like_noise": like_noise},
                      severity="info" if smooth_val or like_noise else None,
                      plot=CurvePlot(run.name, [key, Signal.VAL_LOSS] if smooth_val else [key]))


@dataclass(frozen=True)
class ChanceOptions:
    max_chance_kappa: float = opt(0.2, "validation accuracy counts as at chance when its 90th percentile over the run is "
                                       "at most this far from chance towards perfect (Cohen's kappa (acc - 1/C)/(1 - "
                                       "1/C); Landis & Koch call kappa <= 0.2 'slight' agreement; 0.6 for two classes)."
                                       " Calibration: random-label runs of the real-library fixtures reach kappa 0.10-0.13 "
                                       "on some seeds (256 validation examples at chance), healthy runs end at >= 0.7. "
                                       "C comes from the hyper-parameters (num_labels, num_classes, ...) or, with an "
                                       "accuracy logged, from the untrained loss ~ ln C")


def _at_chance(run, opts: ChanceOptions) -> tuple[bool | None, dict]:
    """(validation accuracy at chance the whole run?, evidence); None when chance or accuracy are unknown."""
    chance, va = run.chance, run.signals.val_acc
    if chance is None or va is None or np.isfinite(va.values).sum() < 2:
        return None, {}
    kappa = curves.above_chance(va.values, chance.accuracy)
    if kappa is None:
        return None, {}
    scale = curves.accuracy_scale(va.values)
    return kappa <= opts.max_chance_kappa, {
        "classes": chance.classes, "classes_source": chance.source, "chance_accuracy": chance.accuracy * scale,
        "val_acc_p90": float(np.quantile(va.values[np.isfinite(va.values)], 0.9)), "val_acc_kappa": kappa}


@dataclass(frozen=True)
class OverfittingOptions(ChanceOptions):
    min_points: int = opt(6, "finite validation points needed")
    min_rise: float = opt(0.25, "rise of the validation loss at the end above its best, as a share of the yardstick: "
                                "the validation loss's own improvement from start to best...")
    best_level: float = opt(1.0, "...or this multiple of its best value when larger, so a curve whose first evaluation"
                                 " was already trained is judged against its level")
    min_tail_share: float = opt(0.2, "the rise lasts at least this share of the validation points...")
    min_tail_points: int = opt(3, "...and at least this many points")
    min_rise_noise: float = opt(2.5, "...and at least this many times the validation curve's typical change from one "
                                     "evaluation to the next (median |Δ|), so a noisy flat curve is not read as rising "
                                     "(calibration: a healthy Lightning run's last evaluations wobble 1.8 such changes "
                                     "above its best; memorising runs rise 30 to 60)")
    max_acc_gap: float = opt(0.25, "train − val accuracy gap at the end above this: overfitting")
    acc_tolerance: float = opt(0.01, "when validation accuracy is logged, ends within this of its best and is above "
                                     "chance, a rising validation loss is reported as info: the model grows "
                                     "overconfident, its predictions do not get worse")


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
        A validation accuracy that holds while the loss rises means overconfidence (info), unless it never
        left chance level (1/C): then the model memorised training labels that carry nothing it can
        generalise, and the finding is an error naming that root cause ("random-labels"). Without a
        validation accuracy, a validation loss that never went below the chance loss ln C says the same.
    What to try:
        Stop earlier (keep the best-validation checkpoint), add regularisation (weight decay, dropout,
        augmentation), get more data or use a smaller model.

        Report the best-validation checkpoint rather than the last. At chance level, check that labels
        match their inputs (a shuffle applied to labels only, a wrong label column) and that validation
        data are preprocessed like the training data.
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
        wobble = curves.swing_amplitude(vals)
        in_swings = (summ.end - summ.best) / wobble if wobble > 0 else float("inf")
        if tail_n >= max(opts.min_tail_points, opts.min_tail_share * len(vals)) and rise >= opts.min_rise \
                and in_swings >= opts.min_rise_noise:
            best_step = int(steps[summ.best_index])
            train_ok = True
            t = s.train_loss
            if t is not None and np.isfinite(t.values).any():
                before = t.values[(t.steps <= best_step) & np.isfinite(t.values)]
                after = t.values[(t.steps > best_step) & np.isfinite(t.values)]
                if before.size and after.size:
                    train_ok = float(np.median(after[-max(1, after.size // 5):])) <= float(np.median(before[-max(1, before.size // 5):]))
            if train_ok:
                at_chance, chance_ev = _at_chance(run, opts)
                chance = run.chance
                never_below_chance = (at_chance is None and chance is not None and
                                      summ.best >= chance.loss * (1 - opts.max_chance_kappa))
                acc_holds = not at_chance and _accuracy_holds(s.val_acc, opts.acc_tolerance)
                sev, cause = (None, None)
                if at_chance:
                    sev, cause = "error", "random-labels"
                    note = (f"; validation accuracy never left chance level (90th percentile "
                            f"{_fmt(chance_ev['val_acc_p90'])}, chance {_fmt(chance_ev['chance_accuracy'])} for "
                            f"{chance.classes} classes): the model memorises training labels that carry nothing it "
                            f"can generalise (random or shuffled labels, or validation data unlike the training data)")
                elif never_below_chance:
                    sev, cause = "error", "random-labels"
                    note = (f"; the validation loss never went below {_fmt(chance.loss)}, the loss of a uniform guess "
                            f"over {chance.classes} classes: nothing learned generalises (random or shuffled labels, "
                            f"or validation data unlike the training data)")
                elif acc_holds:
                    sev = "info"
                    note = (f"; validation accuracy stays within {opts.acc_tolerance:.0%} of its best, so the model "
                            f"grows overconfident rather than wrong")
                else:
                    note = ""
                raw_step, raw_after = int(steps[summ.raw_best_index]), len(vals) - 1 - summ.raw_best_index
                yield Hit(v.tag, f"{v.tag} rose from its best {_fmt(summ.raw_best)} (step {raw_step}) to "
                                 f"{_fmt(summ.end)} over the last {raw_after} evaluations while training loss kept "
                                 f"improving{note}",
                          {"best": summ.raw_best, "best_step": raw_step, "smoothed_best": summ.best, "end": summ.end,
                           "relative_rise": rise, "rise_in_swings": in_swings,
                           "evaluations_after_best": raw_after, "threshold": opts.min_rise,
                           "val_accuracy_holds": acc_holds, "val_at_chance": bool(at_chance or never_below_chance),
                           "root_cause": cause, **chance_ev},
                          severity=sev,
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


@dataclass(frozen=True)
class LearningRateOptions(LrCauseOptions):
    max_improvement: float = opt(0.05, "the run counts as not learning when its training loss improved less than this "
                                       "share of its start (the plateau rule's level)...")
    max_change: float = opt(1e-3, "...or, without a training loss, when the median parameter changed less than this in "
                                  "total (||ΔW||/||W|| summed over the checkpoints)")


def _learning(run, opts: LearningRateOptions) -> tuple[bool | None, str]:
    """(whether the run learns, what says so): True/False from the training loss or the checkpoints, None when
    neither can tell."""
    t = run.signals.train_loss  # the epoch-level series when there is one: batch noise is no improvement
    if t is None or np.isfinite(t.values).sum() < 5:
        t = run.train_loss_steps
    if t is not None and np.isfinite(t.values).sum() >= 3 and curves.first_nonfinite(t.values) is None:
        imp = curves.relative_improvement(t.values)
        if imp is not None:
            return imp >= opts.max_improvement, f"{t.tag} improved {imp:.1%}"
    from report_gen.rules.causes import total_changes

    changes = total_changes(run, on_demand=True)  # the weights are read only here, without a training loss
    if changes:
        med = float(np.median(list(changes.values())))
        return med >= opts.max_change, f"the median parameter changed {med:.2g} (||ΔW||/||W||) across the checkpoints"
    return None, ""


@rule("L107", "learning-rate", "error", needs=(Signal.LR, Signal.CHECKPOINT, Signal.TRAIN_LOSS),
      options=LearningRateOptions, category="plateau", without_tensors=(Signal.CHECKPOINT,))
def learning_rate(run, opts: LearningRateOptions):
    """
    What it detects:
        A learning rate that cannot train: exactly 0 on most of the logged points after its peak (or in
        every param group of every checkpoint's optimizer state), collapsed to a tiny fraction of its peak
        for most of the run, or peaking far below the usual range of the run's optimizer (its published
        defaults: torch.optim SGD 1e-3, Adam/AdamW 1e-3, the Hugging Face TrainingArguments fine-tuning
        default 5e-5, RMSprop/Adagrad 1e-2). The optimizer comes from the checkpoints' optimizer state, the
        name of a Lightning LearningRateMonitor series (`lr-SGD`) or the hyper-parameters; the learning rate
        from the logged series, else the hyper-parameters and the optimizer state.
        A zero learning rate is an error when the run does not learn (its training loss improved less than
        `max_improvement`, or its weights moved less than `max_change`) and a warning when it learns anyway
        (another param group may train). A far-too-low learning rate is reported only when the run does not
        learn: a small rate that trains (late fine-tuning, preference tuning at 1e-6) is a choice.
    Why it matters:
        With lr 0 every step is a no-op; with a collapsed or tiny lr the run spends its budget without
        moving. The loss curve shows only a plateau; the learning rate is the root cause.
    Typical causes:
        A scheduler whose total steps are wrong (warm-up then decay to 0 at the end of warm-up), an integer
        division in a lambda schedule, a scheduler stepped per batch when written per epoch, a learning
        rate typed with the wrong exponent, a fine-tuning rate used for training from scratch.
    What to try:
        Plot the learning rate the optimizer really used (optimizer.param_groups[0]['lr'] per step) and fix
        the schedule's total steps or the configured rate; start from the optimizer's default (SGD 1e-3..0.1
        with momentum, Adam/AdamW 1e-3 from scratch, 1e-5..5e-5 for fine-tuning).

        A learning-rate range test (Lightning's Tuner.lr_find) finds a working rate quickly.
    """
    cause = lr_cause(run, opts)
    if cause is None:
        return
    learns, how = _learning(run, opts)
    subject = run.signals.lr.tag if run.signals.lr is not None else "learning rate"
    plot = CurvePlot(run.name, [Signal.LR]) if run.signals.lr is not None else None
    if cause.kind == "lr-zero":
        sev = "warning" if learns else "error"
        note = f" although {how}: another param group may train" if learns else (f"; {how}" if how else "")
        yield Hit(subject, f"{cause.text}: no parameter it drives can change{note}",
                  {"root_cause": cause.kind, "learning": learns, **cause.evidence}, severity=sev, plot=plot)
    elif cause.kind == "lr-collapsed":
        yield Hit(subject, f"{cause.text}: the rest of the run hardly moves the weights" + (f"; {how}" if how else ""),
                  {"root_cause": cause.kind, "learning": learns, **cause.evidence}, severity="warning", plot=plot)
    elif learns is False:
        yield Hit(subject, f"{cause.text}, and the run does not learn: {how}",
                  {"root_cause": cause.kind, "learning": learns, **cause.evidence}, severity="warning", plot=plot)


@dataclass(frozen=True)
class GeneralisationGapOptions(ChanceOptions):
    min_points: int = opt(4, "finite validation points needed")
    min_train_gain: float = opt(0.5, "the training loss improves by at least this share of its untrained level...")
    max_val_gain: float = opt(0.1, "...while the validation loss never gets more than this share below the untrained level "
                                   "(the worse of its own start and the first training loss: a validation curve first "
                                   "evaluated after an epoch of learning starts low, and that counts as improving)...")
    max_val_rise: float = opt(0.5, "...nor rises above its best by more than this share of it (a rising validation loss "
                                   "is overfitting, L105)...")
    min_gap: float = opt(2.0, "...and ends at least this many times the final training loss")


@rule("L106", "generalisation-gap", "warning", needs=(Signal.VAL_LOSS,), options=GeneralisationGapOptions,
      category="overfitting")
def generalisation_gap(run, opts: GeneralisationGapOptions):
    """
    What it detects:
        Validation never improves while training does: the training loss falls by more than half from its
        untrained level, the validation loss never gets meaningfully below that untrained level and does not
        rise either (a rising one is overfitting, L105), so the gap between them opens at once and stays. The
        untrained level is the worse of the validation curve's start and the first training loss, so a task
        learned before the first evaluation is not mistaken for one that never generalised. When the
        validation accuracy also sits at chance level the whole run, the finding names the likely root
        cause: the validation data do not match the training data ("train-val-mismatch").
    Why it matters:
        Nothing the model learns carries over to the validation data: the final metrics describe the
        training set only. Unlike overfitting there is no good early checkpoint to fall back to.
    Typical causes:
        Validation inputs preprocessed differently (normalisation or resizing missing, a decode bug that
        yields blank inputs), a different label mapping between the splits, validation drawn from another
        distribution, labels shuffled on the training split only, leakage-free data with no learnable signal.
    What to try:
        Compare a few validation batches with training batches (value ranges, label histograms, the same
        transforms), evaluate the model on a slice of the training set through the validation pipeline, and
        check that labels are read from the same column with the same mapping.

        If the validation pipeline is right, the task may not be learnable from the inputs: check the labels.
    """
    s = run.signals
    v, t = s.val_loss, s.train_loss
    if v is None or t is None or curves.first_nonfinite(v.values) is not None:
        return
    vals = v.values[np.isfinite(v.values)]
    if vals.size < opts.min_points or run.untrained_loss is None:
        return
    tv = t.values[np.isfinite(t.values)]
    vs = curves.summarize(vals, frac=0.15, minimum=2)
    ts = curves.summarize(tv)
    if vs is None or ts is None:
        return
    untrained = max(vs.start, run.untrained_loss, ts.start)
    if untrained <= 0:
        return
    train_gain = (untrained - ts.end) / untrained
    val_gain = (untrained - vs.best) / untrained
    val_rise = (vs.end - vs.best) / abs(vs.best) if vs.best else float("inf")
    gap = vs.end / ts.end if ts.end > 0 else float("inf")
    if train_gain < opts.min_train_gain or val_gain > opts.max_val_gain or val_rise > opts.max_val_rise \
            or gap < opts.min_gap:
        return
    at_chance, chance_ev = _at_chance(run, opts)
    cause = "train-val-mismatch" if at_chance else None
    note = (f"; validation accuracy stays at chance level (90th percentile {_fmt(chance_ev['val_acc_p90'])}, chance "
            f"{_fmt(chance_ev['chance_accuracy'])} for {chance_ev['classes']} classes): the validation data do not "
            f"look like the training data to the model") if at_chance else ""
    yield Hit(v.tag, f"{v.tag} never improves (best {_fmt(vs.best)} against an untrained level of {_fmt(untrained)}) "
                     f"while {t.tag} falls to {_fmt(ts.end)} ({train_gain:.0%} lower): the validation loss ends "
                     f"{gap:.3g}x the training loss{note}",
              {"untrained_loss": untrained, "val_best": vs.best, "val_end": vs.end, "train_end": ts.end,
               "train_gain": train_gain, "val_gain": val_gain, "gap": gap, "root_cause": cause,
               "val_at_chance": bool(at_chance), **chance_ev},
              plot=CurvePlot(run.name, [Signal.TRAIN_LOSS, Signal.VAL_LOSS]))


@rule("L108", "loss-spike", "warning", needs=(Signal.TRAIN_LOSS,), options=SpikeOptions, category="divergence")
def loss_spike(run, opts: SpikeOptions):
    """
    What it detects:
        Spikes in the training loss as the large-model trainers define them (the `method` option picks
        one; each is implemented as published, with its defaults): llm-foundry's KillLossSpike (default:
        >= 2x the mean of the previous 100 values on 5 consecutive points; mosaicml/llm-foundry
        llmfoundry/callbacks/kill_loss_spike_callback.py, outlier_multiplier=2, window_size=100,
        patience=4), Lightning Fabric's SpikeDetection (a rise >= 2x the mean of the last 10 away from it;
        Lightning-AI/pytorch-lightning src/lightning/fabric/utilities/spike.py, window=10, rtol=2.0),
        OLMo-core's StabilityMonitorCallback (above the mean + 6 standard deviations of the previous 128;
        allenai/OLMo-core src/olmo_core/train/callbacks/stability_monitor.py, window_size=128,
        threshold_std=6.0) or Megatron-LM's spiky-loss check (>= 10x the max of the first 100; NVIDIA/
        Megatron-LM megatron/core/rerun_state_machine.py is_unexpectedly_large, num_samples=100, with
        pretrain_gpt.py's SPIKY_LOSS_FACTOR = 10). The per-batch series is used when
        the run logs one beside an epoch-level loss (Lightning's `_step`). A spike the run recovered from is
        a warning, one it did not recover from an error. When the gradient norm spiked first, the finding
        reports the lead (OLMo 2: gradient-norm spikes precede loss spikes), and when the learning rate
        jumped just before, it names the root cause ("lr-spike"). Reinforcement-learning runs are left out.
    Why it matters:
        A loss spike throws away progress; a run that recovers has wasted steps and may have damaged its
        optimizer state, a run that does not has diverged. Spikes are the first sign of an unstable
        configuration at scale.
    Typical causes:
        A learning-rate jump (a scheduler restarted without its state, a warm restart to the wrong peak),
        a learning rate at the edge of stability, bad batches (repeated or corrupted data), fp16 overflow,
        attention logits growing without QK-norm.
    What to try:
        Check the learning rate around the spike (a resume without the scheduler state re-warms it), clip
        gradients, lower the peak learning rate or lengthen the warm-up, and inspect the batches at the
        spike.

        Large-model recipes add QK-norm, z-loss and a smaller AdamW epsilon (OLMo 2) against spikes.
    """
    check_method(opts)
    t = run.train_loss_steps
    if t is None or run.reward is not None:  # an RL run's losses jump with its policy: no spike signal
        return
    events = spike_events(t, opts)
    if not events:
        return
    g_events = spike_events(run.signals.grad_norm, opts) if run.signals.grad_norm is not None else []
    finite = t.values[np.isfinite(t.values)]
    last = float(finite[-1]) if finite.size else float("nan")
    ended_nonfinite = not np.isfinite(t.values[-1])
    for ev in events[:3]:
        recovered = not ended_nonfinite and last - ev["before"] <= opts.recovered_share * ev["height"]
        lead = None
        for g in g_events:
            d = ev["onset_step"] - g["onset_step"]
            if 0 <= d <= opts.lead_window:
                lead = {"grad_norm_onset_step": g["onset_step"], "grad_norm_peak": g["peak"],
                        "grad_norm_before": g["before"], "lead_steps": d}
                break
        jump = lr_jump(run, lead["grad_norm_onset_step"] if lead else ev["onset_step"], opts)
        parts = [f"{t.tag} spiked from {_fmt(ev['before'])} to {_fmt(ev['peak'])} at step {ev['peak_step']} "
                 f"(onset step {ev['onset_step']}, {opts.method} rule)"]
        if lead is not None:
            parts.append(f"the gradient norm spiked {lead['lead_steps']} steps earlier (from step "
                         f"{lead['grad_norm_onset_step']}, {_fmt(lead['grad_norm_before'])} to "
                         f"{_fmt(lead['grad_norm_peak'])})")
        if jump is not None:
            parts.append(f"root cause: the learning rate jumped {jump['lr_factor']:.3g}x (to {jump['lr_peak']:.3g} at "
                         f"step {jump['lr_peak_step']})")
        parts.append(f"recovered to {_fmt(last)}" if recovered else
                     ("then became NaN/Inf" if ended_nonfinite else f"not recovered (last value {_fmt(last)})"))
        yield Hit(t.tag, "; ".join(parts),
                  {"method": opts.method, **ev, "recovered": recovered, "last": last,
                   "root_cause": "lr-spike" if jump is not None else None, **(lead or {}), **(jump or {})},
                  severity="warning" if recovered else "error",
                  plot=CurvePlot(run.name, [Signal.TRAIN_LOSS if t is run.signals.train_loss else Key.OTHER.of(t.tag)]
                                 + ([Signal.GRAD_NORM] if lead else []), ev["onset_step"]))


@dataclass(frozen=True)
class HiddenNonfiniteOptions:
    min_points: int = opt(3, "finite logged losses needed before an exact 0.0 can look out of place")
    min_level: float = opt(0.01, "the value logged just before the first 0.0 is at least this share of the first "
                                 "value: a loss that converges smoothly towards 0 and underflows to 0.0 in float32 "
                                 "(a memorised training set, 1e-9 then 0.0) is no hidden NaN...")
    min_zero_share: float = opt(0.9, "...and from the first 0.0 on at least this share of the logged values are 0.0 "
                                     "(the filter logs 0.0 at every step once the loss is NaN); a batch that happens to "
                                     "be fit exactly, or a script that logs 0.0 on the epochs it does not compute the "
                                     "loss (the corpus' DLGN and SSD runs), leaves positive values in between")


@rule("L109", "hidden-nonfinite", "error", needs=(Signal.GRAD_NORM, Signal.TRAIN_LOSS), options=HiddenNonfiniteOptions,
      category="nonfinite-loss")
def hidden_nonfinite(run, opts: HiddenNonfiniteOptions):
    """
    What it detects:
        Non-finite training the loss curve does not show: a logged gradient norm that is NaN or Inf, and a
        training loss of exactly 0.0 where it never was before (it was positive for at least `min_points`
        logged points, the last of them not already near 0) and stays 0.0 from there on. The Hugging Face Trainer's `logging_nan_inf_filter` (TrainingArguments, default
        True) drops NaN/Inf losses from the logged average, so a run whose loss became NaN logs 0.0 instead,
        while `grad_norm` is logged unfiltered as NaN.
    Why it matters:
        The model's weights are usually NaN from that step on; the logged 0.0 looks like a perfect fit and
        hides the failure from the loss curve and from non-finite-loss.
    Typical causes:
        A NaN or Inf in the data or the targets, log(0) or a division by zero in the loss, a learning rate
        too high, fp16 overflow without loss scaling.
    What to try:
        Set logging_nan_inf_filter=False (HF) to see the real loss, find the first non-finite step, and check
        the batch and targets there; lower the learning rate or clip gradients.

        Non-finite-weights (W101) tells whether the checkpoints are already NaN.
    """
    g = run.signals.grad_norm
    if g is not None and len(g):
        bad = np.flatnonzero(~np.isfinite(g.values))
        if bad.size:
            i = int(bad[0])
            yield Hit(g.tag, f"{g.tag} is NaN/Inf from step {int(g.steps[i])} ({bad.size} of {len(g)} logged values): "
                             f"the gradients became non-finite",
                      {"first_step": int(g.steps[i]), "nonfinite": int(bad.size), "total": len(g)},
                      plot=CurvePlot(run.name, [Signal.GRAD_NORM], int(g.steps[i])))
    t = run.signals.train_loss
    if t is None or not len(t):
        return
    v = t.values
    zero = np.flatnonzero(v == 0.0)
    if not zero.size:
        return
    i = int(zero[0])
    before = v[:i][np.isfinite(v[:i])]
    if before.size < opts.min_points or not np.all(before > 0) or before[-1] < opts.min_level * before[0]:
        return
    after = v[i:]
    if np.mean(after == 0.0) < opts.min_zero_share:
        return
    filtered = "; the Hugging Face Trainer logs 0.0 for a NaN/Inf loss with logging_nan_inf_filter=True (its default)"
    yield Hit(t.tag, f"{t.tag} is exactly 0.0 from step {int(t.steps[i])} ({zero.size} of {len(t)} logged values) after "
                     f"{before.size} positive values (last {before[-1]:.4g}): an exact 0 is the trace of a hidden NaN/Inf, "
                     f"not a perfect fit{filtered}",
              {"first_zero_step": int(t.steps[i]), "zeros": int(zero.size), "total": len(t),
               "last_before": float(before[-1])}, plot=CurvePlot(run.name, [Signal.TRAIN_LOSS], int(t.steps[i])))
