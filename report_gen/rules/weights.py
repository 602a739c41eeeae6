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
        Weights held exactly at a bound by a constraint (every value >= 0 and the zeros exactly the minimum,
        as LPIPS clamps its linear heads non-negative after each step) are recognised first and reported as
        info: an active constraint is the design, not a collapse.
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
            bound = _constraint_bound(st)
            if bound is not None:
                yield Hit(name, f"{st.zero_frac:.0%} of the {st.numel} weights sit exactly at 0, the {bound} bound of "
                                f"the tensor (no value on the other side of it): a constraint (a clamp or projection "
                                f"after each step) active by design, not a collapse",
                          {"zero_frac": st.zero_frac, "numel": st.numel, "threshold": opts.zero_frac,
                           "constrained": bound, "min": st.min, "max": st.max}, severity="info",
                          suggestion="Nothing to do if the constraint is intended (suppress weight-collapse for this "
                                     "layer); otherwise look for a clamp or ReLU applied to the weights.")
                continue
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


def _constraint_bound(st) -> str | None:
    """"lower" when every value is >= 0 and the zeros are exactly the minimum (a non-negativity clamp, as
    LPIPS' linear heads), "upper" for the mirror case; None when values lie on both sides of 0."""
    if not np.isfinite(st.min) or not np.isfinite(st.at_min_frac):
        return None
    if st.min == 0.0 and st.max > 0.0 and st.at_min_frac >= st.zero_frac - 1e-12:
        return "lower"
    if st.max == 0.0 and st.min < 0.0 and st.at_max_frac >= st.zero_frac - 1e-12:
        return "upper"
    return None


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


@dataclass(frozen=True)
class FanInWidthOptions:
    max_ratio: float = opt(8.0, "a weight whose standard deviation is more than this many times the widest standard "
                                "init scale for its fan-in (Kaiming/He, sqrt(2/fan_in); PyTorch's default is 0.41 of "
                                "it, Xavier 0.71 for a square layer) is too wide. Calibration: the widest healthy "
                                "tensor, an nn.Embedding-style N(0,1) position table of width 32, is 4x; the "
                                "widest healthy Keras kernel histogram 1.21x (see the text above)")


@rule("W105", "fan-in-width", "warning", needs=(Signal.CHECKPOINT, Signal.WEIGHT_SHAPES), options=FanInWidthOptions,
      category="wide-weights")
def fan_in_width(run, opts: FanInWidthOptions):
    """
    What it detects:
        A weight matrix or kernel whose spread is far beyond what any standard initialisation gives a layer
        of its fan-in: its standard deviation over the widest standard scale, Kaiming/He's sqrt(2/fan_in)
        (PyTorch's default kaiming_uniform(a=sqrt(5)) gives 1/sqrt(3 fan_in), Xavier/Glorot sqrt(2/(fan_in +
        fan_out)); facts/init_scale.py cites each), above `max_ratio`. Fan-in is computed from the shape as
        torch does (in x kernel size). It is judged at the layer's first checkpoint and at its last: wide
        from the first checkpoint (at step 0, the initialisation itself) names "init-too-wide" as the root
        cause; widening after a normal start is reported with the growth over the first checkpoint.
        Embedding tables (N(0,1) by default, whatever their width) are left out. Wide-weights (W103) is
        absolute (|w| > 100) or relative to the start (10x growth), so an init 28x its fan-in scale that
        never grows is only visible here.

        Without a checkpoint, a logged weight histogram is judged the same way when the log gives its
        weight's shape: Keras' TensorBoard callback logs the model config (write_graph=True, its default),
        from which a Dense kernel is (in, units) and a Conv kernel kernel_size + (in / groups, filters)
        (readers/keras_config.py). The standard deviation is the histogram's (Keras' 30 buckets: from
        their centres), at the first and the last logged histogram. Keras writes its first histogram at
        the END of epoch 0, logged as step 0, after one epoch of updates, not at the initialisation; the
        root cause "init-too-wide" is still named when a layer is already too wide at that first
        histogram, because one epoch moves a standard init little: in the healthy Keras runs the widest
        kernel grew at most 1.26x over all six epochs. Calibration of `max_ratio` on this path (benchmarks/
        calibrate.py --real --libs keras --seeds 3 --faulty-seeds 3): the 6 healthy Keras 3 and tf-keras
        runs with histograms (seeds 0-2, glorot_uniform) are at most 1.21x (the 2-unit output layer; the
        hidden layers 0.57-0.78x), the 3 wide_init runs (N(0, (28/sqrt(fan_in))^2)) 19.3-20.0x, all caught
        with the root cause named.
    Why it matters:
        Pre-activations scale with std x sqrt(fan_in): a layer many times its fan-in scale saturates tanh and
        sigmoid units, makes ReLU outputs explode layer after layer, and starts the loss orders of magnitude
        above ln C; training then spends its budget shrinking the weights back.
    Typical causes:
        torch.randn weights without the 1/sqrt(fan_in) factor, an init std meant for another width, a
        custom init applied to every module, a gain applied twice, weights loaded from a model with
        different scaling.
    What to try:
        Initialise with the layer's default or nn.init.kaiming_normal_ (ReLU) / xavier_uniform_ (tanh), or
        scale random weights by 1/sqrt(fan_in); check any custom init function.

        A first loss far above ln C (for C classes) is the symptom to look for.
    """
    from report_gen.facts.init_scale import init_scales
    from report_gen.facts.run import is_embedding_name

    for name in _weight_names(run):
        ps = run.series.get(name)
        if ps is None or not ps.stats or len(ps.stats[0].shape) < 2 or is_embedding_name(name):
            continue
        step0 = ps.steps[ps.present[0]]
        several = len(ps.stats) >= 2
        at = "at step 0 (its initialisation)" if step0 == 0 else (
            f"at its first checkpoint (step {step0})" if several else "in the checkpoint")
        hit = _width_hit(name, init_scales(ps.stats[0].shape), ps.stats[0].std, ps.stats[-1].std, step0, opts,
                         at=at, last="at the last checkpoint" if several else None,
                         cause=step0 == 0 or several, source="checkpoint")
        if hit is not None:
            yield hit
    for name, shape in run.signals.weight_shapes.items():
        h = run.signals.weight_hist.get(name)
        if name in run.series or h is None or not len(h) or is_embedding_name(name):
            continue
        std = h.std
        step0, several = int(h.steps[0]), len(h) >= 2
        hit = _width_hit(name, init_scales(shape), float(std[0]), float(std[-1]), step0, opts,
                         at=f"at its first logged histogram (step {step0})",
                         last=f"at the last one (step {int(h.steps[-1])})" if several else None,
                         cause=step0 == 0, source="weight histogram",
                         plot=DistributionPlot.of(run.name, Key.WEIGHT, name))
        if hit is not None:
            yield hit


def _width_hit(name, scales, std_first: float, std_last: float, step0: int, opts: FanInWidthOptions, *, at: str,
               last: str | None, cause: bool, source: str, plot=None) -> Hit | None:
    """W105's finding for one weight, judged at its first and last observation (checkpoint or histogram)."""
    if scales is None or not np.isfinite(std_first) or not np.isfinite(std_last):
        return None
    r0, r1 = std_first / scales.widest, std_last / scales.widest
    if max(r0, r1) <= opts.max_ratio:
        return None
    ev = {"fan_in": scales.fan_in, "std_first": std_first, "std_last": std_last, "kaiming_std": scales.kaiming,
          "ratio": max(r0, r1),
          "pytorch_default_std": scales.pytorch_default, "ratio_first": r0, "ratio_last": r1,
          "first_step": step0, "threshold": opts.max_ratio, "source": source}
    if r0 > opts.max_ratio:
        return Hit(name, f"std {std_first:.3g} {at} is {r0:.3g}x the widest standard init for its fan-in of "
                         f"{scales.fan_in} (Kaiming {scales.kaiming:.3g}; PyTorch's default "
                         f"{scales.pytorch_default:.3g})" + (f"; {r1:.3g}x {last}" if last else ""),
                   {**ev, "root_cause": "init-too-wide" if cause else None}, plot=plot)
    return Hit(name, f"std grew from {std_first:.3g} (step {step0}, {r0:.2g}x its fan-in scale) to {std_last:.3g}, "
                     f"{r1:.3g}x the widest standard init for a fan-in of {scales.fan_in}",
               {**ev, "root_cause": None, "growth": std_last / std_first if std_first > 0 else float("inf")}, plot=plot)
