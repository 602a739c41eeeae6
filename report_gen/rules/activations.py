"""A: activations (logged activation stats/histograms, or a post-hoc probe); attention is in attention.py."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from report_gen.facts import curves
from report_gen.facts import histograms as hf
from report_gen.rules.base import Hit, opt, rule
from report_gen.vocab import ActivationSeriesPlot, DistributionPlot, ImagePlot, Key, ProbeSeriesPlot, Signal


def _last_probe(run):
    return run.probe[-1][1] if run.probe else None


def _maps_plot(run, source: Key, layer: str, maps) -> ImagePlot | None:
    """The probe's maps of `layer` as an image of the report (evidence draws it), when the probe kept any."""
    return ImagePlot.of(run.name, source, layer) if maps is not None and len(maps) else None


@dataclass(frozen=True)
class DeadActivationOptions:
    warning_share: float = opt(0.5, "share of dead units in a layer for a warning (SageMaker flags a layer above 50%)")
    error_share: float = opt(0.9, "share of dead units for an error")
    zero_tol: float = opt(1e-6, "logged statistics: max and min within this of 0 mean an all-zero output")
    late_share: float = opt(0.3, "logged statistics: the last share of the points examined")
    normal_zero_share: float = opt(0.5, "histograms: the zero share a healthy ReLU has: half its inputs when the "
                                        "pre-activation is centred (after BatchNorm/LayerNorm, or a centred Linear), or "
                                        "the layer's own share at its first logged step when larger. Histogram zero "
                                        "shares are judged as the excess over it: (zero - normal) / (1 - normal) above "
                                        "warning_share / error_share")
    min_cells: int = opt(16, "probe: samples × positions per unit needed to judge a unit. With fewer than 100 "
                             "cells 'active on fewer than 1%' means 'never active on this batch'; a unit that fires "
                             "on 10% of inputs stays silent on 16 of them 19% of the time, so give the probe 64+ "
                             "inputs when you can")


@rule("A101", "dead-activations", "error",
      needs=(Signal.PROBE, Signal.ACT_STATS, Signal.ACT_HIST), options=DeadActivationOptions)
def dead_activations(run, opts: DeadActivationOptions):
    """
    What it detects:
        Activations that are ~0 everywhere (dead ReLUs). With a probe: the share of units active in
        fewer than 1% of samples×positions (SageMaker's definition), warning above 50%, error above
        90%. From logged activation_stats: max and min of the layer within `zero_tol` of 0 for the
        late part of training. From activation histograms: every value exactly 0, or a zero share well
        above what is normal for the layer: a ReLU whose pre-activation is centred (BatchNorm before it)
        outputs 0 for about half its inputs, so half zeros is healthy and only the excess counts.
    Why it matters:
        A dead unit outputs 0 for every input and gets no gradient, so it never recovers: capacity is
        lost, and a fully dead layer cuts the network in two.
    Typical causes:
        Large negative biases, a learning-rate spike that pushed pre-activations negative, bad
        initialisation scale, no normalization before ReLU.
    What to try:
        Check the initialisation scale and biases of the layer before it, lower the learning rate, try
        LeakyReLU/GELU, or add normalization before the activation.

        He initialisation, warm-up, or BatchNorm before the activation usually revive the units.
    """
    reported = set()
    probe = _last_probe(run)
    if probe is not None:
        for layer, st in probe.activations.items():
            if st.kind != "relu-like" or not np.isfinite(st.dead_unit_frac) or st.cells < opts.min_cells:
                continue
            share = float(st.dead_unit_frac)
            if share > opts.warning_share:
                reported.add(layer)
                sev = "error" if share > opts.error_share else "warning"
                yield Hit(layer, f"{share:.0%} of {st.units} units of {layer} ({st.module_type}) are active on fewer "
                                 f"than 1% of the probe inputs",
                          {"dead_share": share, "units": st.units, "source": "probe",
                           "threshold": opts.error_share if sev == "error" else opts.warning_share},
                          severity=sev, plot=_maps_plot(run, Key.PROBE, layer, st.maps))
    for layer, stats in run.signals.act_stats.items():
        if layer in reported or "max" not in stats or "min" not in stats:
            continue
        mx = curves.late(stats["max"].values, opts.late_share)
        mn = curves.late(stats["min"].values, opts.late_share)
        if mx.size and mn.size and np.all(np.abs(mx) <= opts.zero_tol) and np.all(np.abs(mn) <= opts.zero_tol):
            reported.add(layer)
            yield Hit(layer, f"the logged activations of {layer} are 0 everywhere (max {float(np.max(mx)):.2g}) "
                             f"over the last {mx.size} logged steps",
                      {"late_max": float(np.max(mx)), "late_min": float(np.min(mn)), "points": int(mx.size),
                       "source": "activation_stats"},
                      plot=ActivationSeriesPlot(run.name, layer))
    for layer, h in run.signals.act_hist.items():
        if layer in reported or not len(h):
            continue
        i = len(h) - 1
        zero = hf.zero_share(h, i, opts.zero_tol)
        if not np.isfinite(zero) or h.min[i] < -opts.zero_tol:
            continue
        first = hf.zero_share(h, 0, opts.zero_tol) if len(h) > 1 else float("nan")
        normal = max(opts.normal_zero_share, first if np.isfinite(first) and first < 1.0 else 0.0)
        excess = (zero - normal) / (1.0 - normal) if normal < 1.0 else 0.0
        if zero >= 1.0 or excess > opts.warning_share:
            sev = "error" if zero >= 1.0 or excess > opts.error_share else "warning"
            yield Hit(layer, f"{zero:.0%} of the logged activations of {layer} are 0 at step {int(h.steps[i])}, against "
                             f"{normal:.0%} for a healthy ReLU layer like it",
                      {"zero_share": zero, "normal_zero_share": normal, "excess": excess, "step": int(h.steps[i]),
                       "source": "activation histograms"},
                      severity=sev, plot=DistributionPlot.of(run.name, Key.ACTIVATION, layer))


@dataclass(frozen=True)
class SaturationOptions:
    warning_share: float = opt(0.5, "share of sigmoid/tanh outputs pinned at their limits for a warning")


@rule("A102", "saturated-activations", "warning", needs=(Signal.PROBE, Signal.ACT_HIST), options=SaturationOptions)
def saturated_activations(run, opts: SaturationOptions):
    """
    What it detects:
        Sigmoid/tanh outputs pinned at their limits (sigmoid < 0.01 or > 0.99, |tanh| > 0.99) for most
        inputs, from a probe (module types), or from logged activation histograms whatever the layer is
        called: the kind is read from the values (every value in [-1, 1] with both signs: tanh-like; in
        [0, 1] with mass piled above 0.99: sigmoid-like), so `acts.0` of an nn.ModuleList is judged like
        a layer named `tanh`. In histograms the buckets that reach a limit count whole (TensorBoard's
        buckets are ~10% wide). A network's final sigmoid on a confident classifier saturates by design:
        suppress the rule for that layer.
    Why it matters:
        A saturated unit has ~zero derivative: gradients through it vanish, and it carries ~1 bit.
    Typical causes:
        Large weights or inputs, unnormalised inputs, high learning rate, deep sigmoid stacks.
    What to try:
        Use ReLU-family activations in hidden layers, normalise inputs, lower the init scale, or add
        normalization before the sigmoid/tanh.

        Smaller initial weights help too.
    """
    probe = _last_probe(run)
    if probe is not None:
        for layer, st in probe.activations.items():
            if st.kind in ("sigmoid", "tanh") and np.isfinite(st.saturated_frac) and st.saturated_frac > opts.warning_share:
                yield Hit(layer, f"{st.saturated_frac:.0%} of the {st.kind} outputs of {layer} are saturated",
                          {"saturated_share": float(st.saturated_frac), "source": "probe",
                           "threshold": opts.warning_share})
        return
    for layer, h in run.signals.act_hist.items():
        i = len(h) - 1
        if i < 0:
            continue
        kind = hf.value_kind(h, i)
        if kind not in hf.SATURATION_LIMITS:
            continue
        share = hf.saturated_share(h, i, kind)
        if np.isfinite(share) and share > opts.warning_share:
            lo, hi = float(h.min[i]), float(h.max[i])
            yield Hit(layer, f"{share:.0%} of the logged outputs of {layer} are saturated at step {int(h.steps[i])} "
                             f"(its values span [{lo:.3g}, {hi:.3g}]: {kind})",
                      {"saturated_share": share, "source": "activation histograms", "kind": kind,
                       "threshold": opts.warning_share, "min": lo, "max": hi},
                      plot=DistributionPlot.of(run.name, Key.ACTIVATION, layer))


@dataclass(frozen=True)
class GrowingOptions:
    growth_factor: float = opt(10.0, "magnitude in the last fifth over the first fifth above this")
    min_rising: float = opt(0.7, "share of rising steps of the smoothed series")
    min_late_growth: float = opt(3.0, "last fifth over middle fifth at least this: still growing, not settled at a new"
                                      " level")
    min_points: int = opt(5, "logged points (or probed checkpoints) needed")


@rule("A103", "growing-activations", "warning", needs=(Signal.ACT_STATS, Signal.PROBE_SERIES), options=GrowingOptions)
def growing_activations(run, opts: GrowingOptions):
    """
    What it detects:
        Activation magnitude (logged std, or |mean| when std is missing; or, for activation-function
        modules, the probe's std across a checkpoint series) that keeps increasing over training: more than `growth_factor` times from
        the first to the last fifth, rising on most steps, and still growing at the end (the last
        fifth at least `min_late_growth` times the middle fifth). A layer that wakes up from a near-
        silent start and settles at a healthy level (an LSTM learning) is not growing without bound.
    Why it matters:
        Growing activations precede overflow and saturation; the seed tutorial attributes it to missing
        normalization.
    Typical causes:
        No normalization layers, learning rate too high, weights growing without weight decay.
    What to try:
        Add normalization layers (BatchNorm/LayerNorm) or lower the learning rate; check weight growth.

        Weight decay keeps the weights, and so the activations, from growing.
    """
    def check(layer, values, source, plot):
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if v.size < opts.min_points:
            return None
        factor = curves.growth_factor(v, 0.2, 1)
        rising = curves.monotonic_fraction(curves.ema_smooth(np.abs(v), 0.6))
        fifth = max(1, v.size // 5)
        middle = float(np.median(np.abs(v[2 * fifth:3 * fifth]))) if v.size >= 5 else float(abs(v[0]))
        late_growth = float(np.median(np.abs(v[-fifth:]))) / middle if middle > 0 else float("inf")
        if factor is not None and factor > opts.growth_factor and rising >= opts.min_rising \
                and late_growth >= opts.min_late_growth:
            return Hit(layer, f"activation magnitude of {layer} grew {factor:.3g}× over training ({source})",
                       {"growth_factor": factor, "rising_share": rising, "source": source,
                        "threshold": opts.growth_factor}, plot=plot)
        return None

    seen = set()
    for layer, stats in run.signals.act_stats.items():
        s = stats.get("std") or stats.get("mean")
        if s is None:
            continue
        hit = check(layer, s.values, "activation_stats", ActivationSeriesPlot(run.name, layer))
        if hit:
            seen.add(layer)
            yield hit
    if len(run.probe) >= 2:
        layers = run.probe[-1][1].activations
        for layer, last in layers.items():
            # hidden activations only: a classifier's logits growing as it gets confident is healthy
            if layer in seen or last.kind not in ("relu-like", "sigmoid", "tanh"):
                continue
            vals = [r.activations[layer].std for _, r in run.probe if layer in r.activations]
            hit = check(layer, vals, "probe over checkpoints", ProbeSeriesPlot(run.name, layer))
            if hit:
                yield hit


@dataclass(frozen=True)
class RedundantChannelOptions:
    high_pair_share: float = opt(0.5, "share of channel pairs with |corr| > 0.9 on the probe batch")
    min_channels: int = opt(8, "ignore layers with fewer channels")


@rule("A104", "redundant-channels", "warning", needs=(Signal.PROBE,), options=RedundantChannelOptions)
def redundant_channels(run, opts: RedundantChannelOptions):
    """
    What it detects:
        Activation channels of a layer that respond almost identically on the probe batch: more than
        `high_pair_share` of channel pairs correlate above 0.9 (the seed tutorial's channel-correlation check).
    Why it matters:
        Redundant channels carry the same information: the layer's width is wasted.
    Typical causes:
        Too many filters, symmetric initialisation, a collapsed upstream layer.
    What to try:
        Visualise the layer's kernels, consider fewer channels, check that the layer trains.

        Check the initialisation too; the kernel grid in this report shows duplicates.
    """
    probe = _last_probe(run)
    if probe is None:
        return
    for layer, st in probe.activations.items():
        if st.units < opts.min_channels or not np.isfinite(st.channel_corr_high_frac):
            continue
        if st.kind not in ("relu-like", "sigmoid", "tanh"):
            continue
        if st.channel_corr_high_frac > opts.high_pair_share:
            yield Hit(layer, f"{st.channel_corr_high_frac:.0%} of channel pairs of {layer} correlate above 0.9 "
                             f"(mean |corr| {st.channel_corr_mean:.2f})",
                      {"high_pair_share": float(st.channel_corr_high_frac),
                       "mean_abs_corr": float(st.channel_corr_mean), "channels": st.units,
                       "threshold": opts.high_pair_share})


@dataclass(frozen=True)
class UnstableOptions:
    max_cv: float = opt(0.5, "coefficient of variation (std/mean) of the logged activation std above this")
    late_share: float = opt(0.5, "the last share of the points examined")
    min_points: int = opt(8, "points needed in that late part")


@rule("A105", "unstable-activations", "warning", needs=(Signal.ACT_STATS,), options=UnstableOptions)
def unstable_activations(run, opts: UnstableOptions):
    """
    What it detects:
        Activation statistics that swing strongly between logged batches late in training: the
        coefficient of variation (std/mean) of the layer's logged activation std above `max_cv`.
    Why it matters:
        Swinging activation scales make the downstream layers chase a moving target; the seed tutorial
        links it to batches that are too small.
    Typical causes:
        Tiny batch size, very heterogeneous batches, a learning rate too high, BatchNorm with tiny batches.
    What to try:
        Use a larger batch or gradient accumulation, lower the learning rate, add normalization.

        With small batches use LayerNorm/GroupNorm instead of BatchNorm.
    """
    for layer, stats in run.signals.act_stats.items():
        s = stats.get("std")
        if s is None:
            continue
        v = curves.late(s.values, opts.late_share)
        if v.size < opts.min_points:
            continue
        mean = float(np.mean(np.abs(v)))
        if mean <= 0:
            continue
        cv = float(np.std(v) / mean)
        if cv > opts.max_cv:
            yield Hit(layer, f"the activation std of {layer} varies by {cv:.0%} (std/mean) between logged batches "
                             f"late in training",
                      {"coefficient_of_variation": cv, "points": int(v.size), "threshold": opts.max_cv},
                      plot=ActivationSeriesPlot(run.name, layer))
