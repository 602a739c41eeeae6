"""K: conv kernels and linear units (from the last checkpoint)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from report_gen.facts import DUP_CORR, binomial_tail, chance_dead_probability, dead_units
from report_gen.rules.base import Hit, opt, rule
from report_gen.vocab import KernelsPlot, Signal


def _unit_layers(run, min_units: int = 2):
    """(name, WeightStats) for conv/linear weights (ndim >= 2) of the last checkpoint, model order."""
    for name in run.param_order:
        st = run.last_stats.get(name)
        if st is not None and len(st.shape) >= 2 and st.unit_absmax is not None and st.shape[0] >= min_units:
            yield name, st


def _kernel_plot(run, name, st):
    return KernelsPlot.of(run.name, name) if len(st.shape) == 4 else None


@dataclass(frozen=True)
class DeadKernelOptions:
    threshold: float = opt(0.01, "a kernel/unit is dead when its max |w| is below this (the seed tutorial's "
                                 "dead-kernel level)...")
    relative: float = opt(0.1, "...and below this fraction of the layer's median kernel max |w| (a guard for layers "
                               "whose weights are small by design)")
    warning_ratio: float = opt(0.05, "dead share above this: a warning (the tutorial's healthy range is below 5%)")
    error_ratio: float = opt(0.15, "dead share above this: an error")
    min_dead: int = opt(2, "at least this many dead kernels")
    chance_p: float = opt(1e-3, "...and that many would be this unlikely by chance: the binomial probability of at "
                                "least that many units under `threshold` when each unit's weights are drawn from the "
                                "layer's own distribution at its first checkpoint (N(0, std^2)). A GRU's weight_ih_l0 "
                                "with input size 1 has one weight per unit, and 5.5% of them fall below 0.01 at its "
                                "U(-1/4, 1/4) init")


@rule("K101", "dead-kernels", "error", needs=(Signal.CHECKPOINT,), options=DeadKernelOptions)
def dead_kernels(run, opts: DeadKernelOptions):
    """
    What it detects:
        Conv kernels (or linear units) whose weights are all ~0: max |w| below `threshold` (the seed
        tutorial's dead-kernel ratio, mean(|W|.amax(dim=[1,2,3]) < 0.01)), and far below the layer's
        typical kernel so that layers with small weights by design are not flagged. The count must also be
        more than chance gives for the layer's fan-in: a unit of k weights drawn from the layer's own
        distribution is under the threshold with probability erf(t / (std sqrt 2))^k, negligible for a
        3x3 kernel but 5.5% for a "kernel" of one weight, and the finding needs a binomial probability
        below `chance_p` of that many such units appearing by chance.
    Why it matters:
        A dead kernel produces a constant output channel: capacity is wasted and the units after it
        see nothing. Many dead kernels mean the layer is collapsing.
    Typical causes:
        Too strong weight decay or L1, dying ReLUs upstream (no gradient reaches the kernel), a
        learning rate that pushed kernels to zero, pruning.
    What to try:
        Check the initialisation and learning rate of this layer; lower weight decay; dead kernels can
        also be pruned to save compute.

        Use LeakyReLU/GELU so dead units still get a gradient; if the kernels are pruned on purpose,
        suppress this rule for the layer.
    """
    for name, st in _unit_layers(run):
        amax = np.asarray(st.unit_absmax, dtype=float)
        med = float(np.median(amax))
        dead_mask = dead_units(amax, opts.threshold, opts.relative)
        dead = int(dead_mask.sum())
        total = int(amax.size)
        ratio = dead / total
        if dead < opts.min_dead or ratio <= opts.warning_ratio:
            continue
        ps = run.series.get(name)
        layer_std = ps.stats[0].std if ps is not None and ps.stats else st.std
        unit_size = int(np.prod(st.shape[1:]))
        p_unit = chance_dead_probability(unit_size, layer_std, opts.threshold)
        p_chance = binomial_tail(dead, total, p_unit)
        if p_chance >= opts.chance_p:
            continue  # as many as the layer's own spread puts under the threshold by chance
        sev = "error" if ratio > opts.error_ratio else "warning"
        kind = "kernels" if len(st.shape) == 4 else "units"
        yield Hit(name, f"{dead} of {total} {kind} ({ratio:.0%}) have max |w| < {opts.threshold:g}",
                  {"dead": dead, "total": total, "ratio": ratio, "threshold": opts.threshold,
                   "layer_median_max_abs": med, "dead_indices": np.flatnonzero(dead_mask)[:32].tolist(),
                   "unit_size": unit_size, "chance_per_unit": p_unit, "chance_probability": p_chance},
                  severity=sev, plot=_kernel_plot(run, name, st))


@dataclass(frozen=True)
class NormScaleOptions:
    threshold: float = opt(1e-3, "|gamma| below this: the channel is switched off")
    ratio: float = opt(0.1, "share of such channels for a warning")
    min_channels: int = opt(8, "ignore layers with fewer channels")


@rule("K104", "dead-norm-channels", "warning",
      needs=(Signal.CHECKPOINT,), options=NormScaleOptions, category="dead-kernels")
def dead_norm_channels(run, opts: NormScaleOptions):
    """
    What it detects:
        BatchNorm/LayerNorm/GroupNorm scale parameters (gamma) near zero: the channel's output is
        a constant (its bias) whatever the input.
    Why it matters:
        Such channels are dead even though the conv kernels before them look healthy.
    Typical causes:
        Weight decay applied to normalization scales, L1 sparsity on gamma (network slimming), a
        learning rate too high.
    What to try:
        Lower weight decay on normalization scales (exclude them from decay), check the learning rate.

        If pruning by gamma is intended (network slimming), suppress this rule.
    """
    from report_gen.facts.weights import is_norm_scale

    for name in run.param_order:
        st = run.last_stats.get(name)
        if st is None or len(st.shape) != 1 or st.numel < opts.min_channels or not is_norm_scale(name, st.shape):
            continue
        if st.values is None:
            continue
        share = float(np.mean(np.abs(st.values) < opts.threshold))
        if share < opts.ratio:
            continue
        yield Hit(name, f"{share:.0%} of {st.numel} normalization scales are below {opts.threshold:g}",
                  {"share": share, "channels": st.numel, "threshold": opts.threshold})


@dataclass(frozen=True)
class DiversityOptions:
    min_relative_diversity: float = opt(0.01, "std of the kernel means over the std of all weights below this")
    min_kernels: int = opt(8, "ignore layers with fewer kernels")


@rule("K102", "low-kernel-diversity", "warning", needs=(Signal.CHECKPOINT,), options=DiversityOptions)
def low_kernel_diversity(run, opts: DiversityOptions):
    """
    What it detects:
        Conv kernels too alike in their statistics: the spread of per-kernel means (the seed tutorial's
        kernel diversity std(W.mean(dim=[1,2,3]))) is tiny compared with the spread of the weights
        themselves. The tutorial's absolute range (0.1–0.3) depends on the layer's scale, so the rule
        uses the scale-free ratio.
    Why it matters:
        Kernels that all look the same extract the same feature: the layer's width is wasted.
    Typical causes:
        A constant or symmetric initialisation, a layer that barely trained (tiny learning rate,
        frozen), strong regularisation pulling all kernels to the same point.
    What to try:
        Check the initialisation (identical init gives identical kernels), raise the learning rate for
        this layer, or reduce its width.

        Use a random (He/Xavier) initialisation, check that the layer is in the optimizer and learns,
        and reduce regularisation.
    """
    for name, st in _unit_layers(run, opts.min_kernels):
        if len(st.shape) != 4 or st.kernel_diversity is None or not st.std or not np.isfinite(st.std):
            continue
        rel = float(st.kernel_diversity) / float(st.std)
        if rel < opts.min_relative_diversity:
            yield Hit(name, f"kernel means vary by only {rel:.2%} of the weight spread "
                            f"(diversity {st.kernel_diversity:.3g}, weight std {st.std:.3g})",
                      {"kernel_diversity": float(st.kernel_diversity), "weight_std": float(st.std),
                       "relative_diversity": rel, "threshold": opts.min_relative_diversity},
                      plot=_kernel_plot(run, name, st))


@dataclass(frozen=True)
class RedundantOptions:
    ratio: float = opt(0.3, "share of the sampled kernels in the largest family of near-duplicates...")
    twin_ratio: float = opt(0.9, "...or share of kernels with any near-duplicate (healthy layers reached 0.81), for "
                                 "layers copied in pairs rather than in one family")
    min_kernel_size: int = opt(16, "skip kernels with fewer weights (in × kh × kw): random small kernels correlate by "
                                   "chance")
    min_kernels: int = opt(8, "sampled kernels needed in the layer")


@rule("K103", "redundant-filters", "warning", needs=(Signal.CHECKPOINT,), options=RedundantOptions,
      facts=("correlations",))
def redundant_filters(run, opts: RedundantOptions):
    """
    What it detects:
        Highly correlated kernels within a layer: the largest family of near-duplicates (kernels linked
        by |Pearson correlation| of the flattened kernels above 0.9, the facts' fixed level) holds a
        large share of the layer. The seed tutorial's healthy range is a top-k correlation below 0.7;
        random kernels of small size correlate strongly by chance, so tiny kernels are skipped and the
        level is higher. Counting the largest family rather than every kernel with a twin keeps
        healthy layers quiet: Adam often leaves a few pairs of twin filters in a layer that is simply
        wider than the task needs (calibration: up to 0.19 on healthy runs).

        Only kernels with a receptive field are judged (convolution weights, 3-d and more:
        [out, in, k...], one filter per row). A 2-d matrix's rows are filters only for an nn.Linear:
        they are tokens in an embedding table, input features in Hugging Face's Conv1D ([in, out]),
        and coordinates of a rotation-invariant head space in attention projections, and the
        checkpoint does not say which. On the real HF Trainer fixtures (tests/fixtures/real/hf) every
        healthy BERT had 2-d "families" of 0.3-0.97: embeddings sharing one offset row, and
        projections close to rank 1 (stable rank 1.1-1.2, rows +-one direction: Adam's sign-like
        update of a rank-1 gradient). Redundant units of linear layers are judged on their
        activations (A104) when a probe runs.
    Why it matters:
        Duplicate filters waste capacity and compute; many duplicates suggest the layer collapsed.
    Typical causes:
        Too many channels for the task, symmetric initialisation, a layer that stopped learning early.
    What to try:
        Consider fewer channels for this layer, or decorrelating regularisation; check that the layer
        trains.

        The kernel grid in this report shows the duplicates; prune them.
    """
    for name, st in _unit_layers(run, opts.min_kernels):
        if len(st.shape) < 3 or st.dup_family_share is None or int(np.prod(st.shape[1:])) < opts.min_kernel_size:
            continue
        mc = np.asarray(st.unit_max_corr, dtype=float)
        mc = mc[np.isfinite(mc)]
        sampled = int(mc.size)
        share = float(st.dup_family_share)
        twins = float(np.mean(mc > DUP_CORR)) if sampled else 0.0
        if sampled < opts.min_kernels or (share < opts.ratio and twins < opts.twin_ratio):
            continue
        what = (f"{share:.0%} of {sampled} sampled kernels form one family of near-duplicates" if share >= opts.ratio
                else f"{twins:.0%} of {sampled} sampled kernels have a near-duplicate")
        yield Hit(name, f"{what} (|corr| > {DUP_CORR:g}); top-k mean |corr| {st.corr_topk_mean:.2f}",
                  {"family_share": share, "twin_share": twins, "sampled": sampled,
                   "corr_topk_mean": st.corr_topk_mean, "threshold": opts.ratio, "twin_threshold": opts.twin_ratio},
                  plot=_kernel_plot(run, name, st))
