"""G: gradients (from gradient histograms, optimizer state, or per-parameter gradient norms)."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np

from report_gen.facts import curves
from report_gen.facts.run import is_embedding_name, is_weight_name
from report_gen.rules.base import Hit, opt, rule
from report_gen.rules.spiking import SpikeOptions, check_method, lr_jump, spike_events
from report_gen.vocab import CurvePlot, GradDepthPlot, Signal

_SOURCE = {Signal.GRAD_HIST: "logged gradient histograms",
           Signal.OPTIMIZER_STATE: "the optimizer's second-moment state",
           Signal.GRAD_NORM_PARAM: "logged per-parameter gradient norms"}


def _weight_grads(run):
    """[(name, GradEstimate)] for weight tensors (not biases/norm scales) in model order."""
    est = run.grad_estimates
    order = [n for n in run.param_order if n in est] + [n for n in est if n not in run.param_order]
    picked = [(n, est[n]) for n in order if is_weight_name(n) and not _is_norm(run, n) and not is_embedding_name(n)]
    return picked or [(n, est[n]) for n in order]


_BLOCK = r"^(?P<stack>.+?)\.(?P<index>\d+)\.(?P<role>.+\..+)$"  # compiled (and cached by re) when used


def _block_stack(run, layers) -> tuple[str, list[int], dict[str, list[int]]] | None:
    """The stack of repeated blocks most weight tensors sit in (transformer layers), or None.

    A block is a numbered module holding sub-modules (`encoder.layer.3.attention.self.query.weight`:
    stack `encoder.layer`, block 3, role `attention.self.query.weight`); the blocks of a stack repeat
    the same roles with the same shapes. Returns (stack, block indices in order, role -> positions
    in `layers`) when the stack holds at least two blocks and half of the weight tensors, so a CNN's
    short stages (ResNet's layer1.0, layer1.1) never qualify.
    """
    stacks: dict[str, dict[int, dict[str, int]]] = {}
    for pos, (name, _) in enumerate(layers):
        m = re.match(_BLOCK, name)
        if m:
            stacks.setdefault(m["stack"], {}).setdefault(int(m["index"]), {})[m["role"]] = pos
    best = None
    for stack, blocks in stacks.items():
        if len(blocks) < 2:
            continue
        roles = [set(b) for b in blocks.values()]
        if any(r != roles[0] for r in roles):
            continue
        shapes = [{role: _shape(run, layers[pos][0]) for role, pos in b.items()} for b in blocks.values()]
        if any(sh != shapes[0] for sh in shapes):
            continue
        size = sum(len(b) for b in blocks.values())
        if size * 2 >= len(layers) and (best is None or size > best[0]):
            order = sorted(blocks)
            best = (size, stack, order, {role: [blocks[i][role] for i in order] for role in roles[0]})
    return None if best is None else best[1:]


def _shape(run, name: str):
    st = run.last_stats.get(name)
    return tuple(st.shape) if st is not None else None


def _is_norm(run, name: str) -> bool:
    st = run.last_stats.get(name)
    if st is not None:
        return len(st.shape) == 1
    low = name.lower()
    return any(k in low for k in ("bn", "norm", ".ln", "layernorm", "batchnorm"))


@dataclass(frozen=True)
class VanishingOptions:
    ratio_error: float = opt(1e-3, "first/last layer gradient RMS ratio below this (AUTOTRAINER)...")
    first_abs_error: float = opt(1e-4, "...with the first layer's RMS below this: an error")
    ratio_warning: float = opt(1e-2, "first/last ratio below this alone: a warning")
    all_tiny: float = opt(1e-7, "every layer's gradient RMS below this: nothing learns, an error (SageMaker, "
                                "DeepDiagnosis)")
    min_layers: int = opt(3, "weight tensors with gradients needed for the depth comparison")


@rule("G101", "vanishing-gradients", "error",
      needs=(Signal.GRAD_HIST, Signal.OPTIMIZER_STATE), options=VanishingOptions)
def vanishing_gradients(run, opts: VanishingOptions):
    """
    What it detects:
        Gradients that shrink towards the input: the first weight layer's gradient RMS is orders of
        magnitude below the last layer's (AUTOTRAINER's first/last ratio < 1e-3 with the first layer
        < 1e-4), or every layer's gradient is below 1e-7 (SageMaker, DeepDiagnosis). Uses gradient
        histograms (late-training median of the exact RMS), or, with checkpoints only, the RMS
        estimated from Adam's exp_avg_sq. Embedding tables are left out of the depth comparison: only
        the rows a batch touches get a gradient, so their RMS shrinks with the vocabulary, not depth.
        A stack of repeated blocks (transformer layers) is compared block to block, like with like:
        the median over the blocks' roles (query, key, ... of block 0 against the same tensor of the
        last block) of the first/last RMS ratio. The task head after the stack is not "the last
        layer" there: in the healthy HF Trainer BERT fixture (optimizer state) the classifier's
        gradient RMS is 4.6e-2 and layer 0's query 1.1e-4, a ratio of 0.0024, while block 0 against
        block 1 is 0.66.
    Why it matters:
        Early layers stop learning; the network behaves like a shallow one on random features, and
        training stalls.
    Typical causes:
        Deep stacks of sigmoid/tanh, poor initialisation (too small), no normalization or skip
        connections, saturated activations, a huge loss scale difference between heads.
    What to try:
        Use ReLU-family activations with He/Kaiming initialisation, add normalization layers or residual
        connections, and check for saturated sigmoid/tanh units.

        Monitor the gradient norm per layer (this report's gradient-by-depth plot); see
        saturated-activations.
    """
    layers = [(n, e) for n, e in _weight_grads(run) if np.isfinite(e.value)]
    if not layers:
        return
    values = np.array([e.value for _, e in layers])
    source = _SOURCE[layers[0][1].source]
    if np.all(values < opts.all_tiny):
        yield Hit("(all layers)", f"every layer's gradient RMS is below {opts.all_tiny:g} "
                                  f"(max {values.max():.3g}, from {source}): nothing is learning",
                  {"max_grad_rms": float(values.max()), "threshold": opts.all_tiny, "source": layers[0][1].source},
                  plot=GradDepthPlot(run.name))
        return
    if len(layers) < opts.min_layers:
        return
    first_name, first = layers[0]
    last_name, last = layers[-1]
    stack = _block_stack(run, layers)
    if stack is not None:
        name, blocks, roles = stack
        ratios = [layers[pos[0]][1].value / layers[pos[-1]][1].value for pos in roles.values()
                  if layers[pos[-1]][1].value > 0]
        if not ratios:
            return
        ratio = float(np.median(ratios))
        first_name, last_name = f"{name}.{blocks[0]}", f"{name}.{blocks[-1]}"
        first_value = float(np.median([layers[pos[0]][1].value for pos in roles.values()]))
        last_value = float(np.median([layers[pos[-1]][1].value for pos in roles.values()]))
        first, last = dataclasses.replace(first, value=first_value), dataclasses.replace(last, value=last_value)
    elif last.value <= 0:
        return
    else:
        ratio = first.value / last.value
    sev = None
    if ratio < opts.ratio_error and first.value < opts.first_abs_error:
        sev = "error"
    elif ratio < opts.ratio_warning:
        sev = "warning"
    if sev is None:
        return
    what = ("first block", "last block", " (median over the blocks' tensors)") if stack else ("first layer", "last layer", "")
    yield Hit(first_name, f"gradient RMS of the {what[0]} {first_name} is {first.value:.3g}, "
                          f"{ratio:.2g}× that of the {what[1]} {last_name} ({last.value:.3g}{what[2]}; from {source})",
              {"first_layer": first_name, "first_grad_rms": first.value, "last_layer": last_name,
               "last_grad_rms": last.value, "ratio": ratio, "ratio_threshold": opts.ratio_error
               if sev == "error" else opts.ratio_warning, "source": first.source, "layers": len(layers)},
              severity=sev, plot=GradDepthPlot(run.name))


@dataclass(frozen=True)
class ExplodingOptions:
    max_rms: float = opt(1e3, "any layer's late gradient RMS above this: an error")
    growth_factor: float = opt(100.0, "total gradient norm grew this much from the first to the last fifth of the "
                                      "run...")
    min_monotonic: float = opt(0.6, "...rising on at least this share of the smoothed steps: a warning")
    min_points: int = opt(10, "points needed for the growth test")


@rule("G102", "exploding-gradients", "error",
      needs=(Signal.GRAD_HIST, Signal.GRAD_NORM, Signal.OPTIMIZER_STATE), options=ExplodingOptions)
def exploding_gradients(run, opts: ExplodingOptions):
    """
    What it detects:
        Non-finite gradients; a layer's gradient RMS above `max_rms`; or a total gradient norm that grows
        steadily by more than `growth_factor` over the run (TheDeepChecker's growth test, on logged norms).
    Why it matters:
        Huge gradients make steps that throw the weights far away: the loss spikes or becomes NaN and
        earlier progress is lost.
    Typical causes:
        Learning rate too high, no gradient clipping (RNNs, transformers), bad initialisation (too
        large), unnormalised inputs or targets, a loss that can become huge.
    What to try:
        Clip gradients (torch.nn.utils.clip_grad_norm_), lower the learning rate, add normalization, and
        check the loss scale and inputs for extreme values.

        Warm-up helps, and so do normalised inputs and targets; check the loss for division by small
        numbers.
    """
    est = run.grad_estimates
    bad = [n for n, e in est.items() if e.nonfinite]
    if bad:
        yield Hit(bad[0], f"{len(bad)} parameter(s) have NaN/Inf gradients, first {bad[0]}",
                  {"nonfinite_params": len(bad), "examples": bad[:5]}, plot=GradDepthPlot(run.name))
    big = [(n, e.value) for n, e in est.items() if np.isfinite(e.value) and e.value > opts.max_rms]
    if big:
        n, v = max(big, key=lambda t: t[1])
        yield Hit(n, f"{len(big)} parameter(s) have gradient RMS above {opts.max_rms:g}; largest {n} at {v:.3g}",
                  {"max_grad_rms": v, "params_above": len(big), "threshold": opts.max_rms},
                  plot=GradDepthPlot(run.name))
    g = run.signals.grad_norm
    if g is not None:
        v = g.values[np.isfinite(g.values)]
        if v.size >= opts.min_points:
            factor = curves.growth_factor(v, 0.2)
            mono = curves.monotonic_fraction(curves.ema_smooth(v, 0.6))
            if factor is not None and factor >= opts.growth_factor and mono >= opts.min_monotonic:
                yield Hit(g.tag, f"{g.tag} grew {factor:.3g}× from the start to the end of the run "
                                 f"(rising on {mono:.0%} of steps)",
                          {"growth_factor": factor, "rising_share": mono, "threshold": opts.growth_factor},
                          severity="warning", plot=CurvePlot(run.name, [Signal.GRAD_NORM]))


@rule("G103", "grad-norm-spike", "warning", needs=(Signal.GRAD_NORM,), options=SpikeOptions,
      category="exploding-gradients")
def grad_norm_spike(run, opts: SpikeOptions):
    """
    What it detects:
        Spikes in the logged total gradient norm, by the same published detector as loss-spike (the
        `method` option; llm-foundry's KillLossSpike rule by default: >= 2x the mean of the previous 100
        values on 5 consecutive points). A gradient-norm spike followed within `lead_window` steps by a loss
        spike is a warning (OLMo 2, arXiv:2501.00656: gradient-norm spikes precede loss spikes, so this is
        the earliest sign of the instability); one the loss shrugs off is reported as info. A jump of the
        learning rate just before is named as the root cause ("lr-spike").
    Why it matters:
        A gradient-norm spike is an update far larger than the ones before it; with Adam it also pollutes
        the second-moment estimate for thousands of steps.
    Typical causes:
        A learning-rate jump, a bad batch, an unstable layer (attention logits, a tiny LayerNorm scale),
        fp16 overflow, missing gradient clipping.
    What to try:
        Clip gradients (torch.nn.utils.clip_grad_norm_ with max_norm=1.0 is the transformer default), check
        the learning rate at the spike, and inspect the batch that produced it.

        Large-model recipes track a spike score (OLMo 2) and skip batches around spikes.
    """
    check_method(opts)
    g = run.signals.grad_norm
    events = spike_events(g, opts)
    if not events:
        return
    t = run.train_loss_steps
    loss_events = spike_events(t, opts) if t is not None else []
    for ev in events[:3]:
        followed = next((le for le in loss_events if 0 <= le["onset_step"] - ev["onset_step"] <= opts.lead_window), None)
        jump = lr_jump(run, ev["onset_step"], opts)
        parts = [f"{g.tag} spiked from {ev['before']:.4g} to {ev['peak']:.4g} at step {ev['peak_step']} (onset step "
                 f"{ev['onset_step']}, {opts.method} rule)"]
        parts.append(f"the loss spiked {followed['onset_step'] - ev['onset_step']} steps later" if followed
                     else "the training loss did not spike with it")
        if jump is not None:
            parts.append(f"root cause: the learning rate jumped {jump['lr_factor']:.3g}x (to {jump['lr_peak']:.3g} at "
                         f"step {jump['lr_peak_step']})")
        yield Hit(g.tag, "; ".join(parts),
                  {"method": opts.method, **ev, "loss_spike_step": followed["onset_step"] if followed else None,
                   "root_cause": "lr-spike" if jump is not None else None, **(jump or {})},
                  severity=None if followed else "info",
                  plot=CurvePlot(run.name, [Signal.GRAD_NORM], ev["onset_step"]))
