"""W: weight distributions (from checkpoints and weight histograms)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from report_gen.facts import histograms as hf
from report_gen.facts.run import is_weight_name
from report_gen.rules.base import Hit, opt, rule
from report_gen.vocab import DistributionPlot, Key, Signal


@rule("W101", "nonfinite-weights", "error", needs=(Signal.CHECKPOINT, Signal.WEIGHT_HIST))
def nonfinite_weights(run, opts):
    """
    What it detects:
        NaN or Inf values in parameters or buffers of a checkpoint, or in the statistics of a logged
        weight histogram.
    Why it matters:
        A model with a NaN weight outputs NaN: it is unusable, and every later checkpoint inherits it.
    Typical causes:
        Divergence, exploding gradients, fp16 overflow, a bad running variance in BatchNorm, division by
        zero in a custom layer.
    What to try:
        Resume from the last checkpoint without NaN, lower the learning rate, clip gradients, and look
        for the step where the loss first became non-finite.

        Use loss scaling with mixed precision; the message names the first checkpoint with NaN.
    """
    bad = []  # (checkpoint index, name, stats) of the first non-finite checkpoint of each tensor
    for name in run.param_order + [n for n in run.series if n not in run.param_order]:
        ps = run.series.get(name)
        if ps is None:
            continue
        for i, st in enumerate(ps.stats):
            if st.nan_count + st.inf_count:
                bad.append((ps.present[i], name, st, ps.steps[ps.present[i]]))
                break
    if bad:
        first_i = min(b[0] for b in bad)
        ci, name, st, step = next(b for b in bad if b[0] == first_i)
        where = f"checkpoint {ci + 1}" + (f", step {step}" if step is not None else "")
        others = f" and {len(bad) - 1} more tensor(s)" if len(bad) > 1 else ""
        yield Hit(name, f"{st.nan_count + st.inf_count} of {st.numel} values of {name} are NaN/Inf{others}, "
                        f"first at {where}",
                  {"nan": st.nan_count, "inf": st.inf_count, "numel": st.numel, "checkpoint_index": ci,
                   "step": step, "tensors_affected": len(bad), "tensors": [b[1] for b in bad][:20]})
    if run.series:
        return
    for name, h in run.signals.weight_hist.items():
        stats = np.vstack([h.min, h.max, h.sum, h.sum_squares]).astype(float)
        bad_steps = np.flatnonzero(~np.all(np.isfinite(stats), axis=0))
        if bad_steps.size:
            i = int(bad_steps[0])
            yield Hit(name, f"weight histogram is non-finite from step {int(h.steps[i])}",
                      {"first_step": int(h.steps[i]), "steps_affected": int(bad_steps.size)},
                      plot=DistributionPlot.of(run.name, Key.WEIGHT, name))


def _rms_over_time(run, name):
    """(steps, rms) of a parameter from checkpoints if there are 2+, else from weight histograms."""
    ps = run.series.get(name)
    if ps is not None and len(ps.stats) >= 2:
        steps = [ps.steps[i] for i in ps.present]
        return np.array([s if s is not None else -1 for s in steps]), np.array([st.rms for st in ps.stats]), "checkpoints"
    h = run.signals.weight_hist.get(name)
    if h is not None and len(h) >= 2:
        return h.steps, h.rms, "weight histograms"
    return None, None, None


def _weight_names(run):
    names = list(run.param_order) or list(run.signals.weight_hist)
    return [n for n in names if is_weight_name(n)]


@dataclass(frozen=True)
class CollapseOptions:
    shrink_ratio: float = opt(0.1, "end/start RMS below which the weights collapsed")
    zero_frac: float = opt(0.5, "or more than this share of exact zeros")
    min_numel: int = opt(16, "ignore tensors smaller than this")


@rule("W102", "weight-collapse", "warning",
      needs=(Signal.CHECKPOINT_SERIES, Signal.WEIGHT_HIST, Signal.CHECKPOINT), options=CollapseOptions)
def weight_collapse(run, opts: CollapseOptions):
    """
    What it detects:
        A weight tensor whose distribution collapses to a spike at zero: its RMS shrinks below
        `shrink_ratio` of its initial value over training, or most of its values are exactly zero.
    Why it matters:
        A collapsed layer passes (almost) nothing on: the units it feeds are effectively dead. The seed
        tutorial reads a spike near 0 as a sign of vanishing gradients.
    Typical causes:
        Weight decay too strong for the learning rate, L1 regularisation, vanishing gradients,
        a pruning mask applied by mistake, a tiny initialisation.
    What to try:
        Check initialisation and weight decay strength (too strong decay shrinks weights to 0); consider
        BatchNorm; check that this layer receives gradients.

        Use He/Xavier initialisation.
    """
    for name in _weight_names(run):
        st = run.last_stats.get(name)
        if st is not None and st.numel >= opts.min_numel and st.zero_frac >= opts.zero_frac:
            yield Hit(name, f"{st.zero_frac:.0%} of the {st.numel} weights are exactly zero",
                      {"zero_frac": st.zero_frac, "numel": st.numel, "threshold": opts.zero_frac})
            continue
        steps, rms, source = _rms_over_time(run, name)
        if rms is None or not np.isfinite(rms[0]) or rms[0] <= 0 or not np.isfinite(rms[-1]):
            continue
        ratio = float(rms[-1] / rms[0])
        if ratio < opts.shrink_ratio:
            yield Hit(name, f"weight RMS shrank to {ratio:.2g}× its initial value ({rms[0]:.3g} → {rms[-1]:.3g}, "
                            f"from {source})",
                      {"rms_start": float(rms[0]), "rms_end": float(rms[-1]), "ratio": ratio,
                       "threshold": opts.shrink_ratio, "source": source},
                      plot=DistributionPlot.of(run.name, Key.WEIGHT, name))


@dataclass(frozen=True)
class WideOptions:
    growth_ratio: float = opt(10.0, "end/start RMS above this")
    max_abs: float = opt(100.0, "or any weight with |w| above this")


@rule("W103", "wide-weights", "warning",
      needs=(Signal.CHECKPOINT_SERIES, Signal.WEIGHT_HIST, Signal.CHECKPOINT), options=WideOptions)
def wide_weights(run, opts: WideOptions):
    """
    What it detects:
        A weight distribution that is too wide or keeps widening: RMS grows more than `growth_ratio`
        times over training, or weights reach magnitudes above `max_abs`.
    Why it matters:
        Large weights saturate activations, amplify noise and make training unstable; the seed
        tutorial reads a too-wide distribution as parameters fluctuating too much.
    Typical causes:
        Learning rate too high, no weight decay, exploding gradients, no normalization.
    What to try:
        Lower the learning rate or add weight decay; check for exploding gradients.

        Add normalization layers and clip gradients.
    """
    for name in _weight_names(run):
        st = run.last_stats.get(name)
        h = run.signals.weight_hist.get(name)
        absmax = st.absmax if st is not None else (float(max(abs(h.min[-1]), abs(h.max[-1]))) if h is not None and len(h) else None)
        if absmax is not None and np.isfinite(absmax) and absmax > opts.max_abs:
            yield Hit(name, f"largest |w| is {absmax:.3g} (above {opts.max_abs:g})",
                      {"absmax": absmax, "threshold": opts.max_abs})
            continue
        steps, rms, source = _rms_over_time(run, name)
        if rms is None or not np.isfinite(rms[0]) or rms[0] <= 0 or not np.isfinite(rms[-1]):
            continue
        ratio = float(rms[-1] / rms[0])
        if ratio > opts.growth_ratio:
            yield Hit(name, f"weight RMS grew {ratio:.3g}× over training ({rms[0]:.3g} → {rms[-1]:.3g}, from {source})",
                      {"rms_start": float(rms[0]), "rms_end": float(rms[-1]), "ratio": ratio,
                       "threshold": opts.growth_ratio, "source": source},
                      plot=DistributionPlot.of(run.name, Key.WEIGHT, name))


@dataclass(frozen=True)
class BimodalOptions:
    min_numel: int = opt(1024, "ignore tensors smaller than this: too few values to tell")
    min_coefficient: float = opt(0.75, "Sarle's bimodality coefficient above this (0.555 is a uniform distribution; "
                                       "higher is two modes)")
    min_mode_mass: float = opt(0.15, "with histograms: each mode holds at least this share")


@rule("W104", "bimodal-weights", "info", needs=(Signal.CHECKPOINT, Signal.WEIGHT_HIST), options=BimodalOptions)
def bimodal_weights(run, opts: BimodalOptions):
    """
    What it detects:
        A weight distribution split into two separated modes: Sarle's bimodality coefficient of the last
        checkpoint's weights above `min_coefficient` (with both modes visible), or two modes in the
        last logged weight histogram.
    Why it matters:
        The seed tutorial reads it as the model stuck in a local optimum; it also appears when a layer
        learns a few saturated features. It is an observation worth a look, not a verdict.
    Typical causes:
        Strong class imbalance, too high a learning rate with sign-like updates, binarising
        regularisers.
    What to try:
        Check data balance (a dominant class can split a layer's weights), try another optimizer or
        learning rate; often harmless for the last layer.

        Compare with a healthy run of the same architecture.
    """
    for name in _weight_names(run):
        st = run.last_stats.get(name)
        if st is not None:
            if st.numel >= opts.min_numel and np.isfinite(st.bimodality) and st.bimodality >= opts.min_coefficient:
                yield Hit(name, f"weights look bimodal (Sarle's coefficient {st.bimodality:.2f})",
                          {"bimodality": st.bimodality, "skew": st.skew, "kurtosis": st.kurtosis,
                           "threshold": opts.min_coefficient})
            continue
        h = run.signals.weight_hist.get(name)
        if h is None or not len(h) or h.num[-1] < opts.min_numel:
            continue
        modes = hf.count_modes(h, len(h) - 1, min_mass=opts.min_mode_mass)
        if modes >= 2:
            yield Hit(name, f"the last weight histogram (step {int(h.steps[-1])}) has {modes} separated modes",
                      {"modes": modes, "step": int(h.steps[-1])},
                      plot=DistributionPlot.of(run.name, Key.WEIGHT, name))
