"""Spike events shared by loss-spike (L108) and grad-norm-spike (G103): the published detectors of
facts/spikes.py applied to a logged series, with report_gen's guard against near-zero noise, and the
learning-rate jump that explains a spike."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from report_gen.facts import curves
from report_gen.rules.base import opt


@dataclass(frozen=True)
class SpikeOptions:
    method: str = opt("foundry", "which published detector flags a point: 'foundry' (llm-foundry KillLossSpike: 2x the "
                                 "mean of the previous 100 values on 5 consecutive points), 'fabric' (Lightning Fabric "
                                 "SpikeDetection: a rise whose distance from the mean of the last 10 is >= 2x that "
                                 "mean), 'olmo' (OLMo-core StabilityMonitorCallback: above the mean + 6 std of the "
                                 "previous 128), 'megatron' (Megatron-LM: >= 10x the max of the first 100). The "
                                 "default needs a sustained excursion, so one noisy batch of a small-batch run is no "
                                 "spike, and it caught both real spike fixtures (tensorboardX, HF GPT-2) where "
                                 "Fabric's missed the gradual one and OLMo-core's and Megatron's missed the HF one")
    min_rise_share: float = opt(0.1, "the spike rises above the values before it by at least this share of the run's "
                                     "improvement (start minus best), so a loss near 0 that doubles is no spike "
                                     "(report_gen's guard, like Fabric's atol: calibration runs' converged losses double "
                                     "between batches)")
    recovered_share: float = opt(0.5, "the run recovered when its last value is back within this share of the spike's "
                                      "height above the level before it; otherwise the spike is an error")
    lead_window: int = opt(20, "a gradient-norm spike that starts at most this many logged steps before a loss spike "
                               "is reported as its lead (OLMo 2, arXiv:2501.00656: gradient-norm spikes accompany and "
                               "precede loss spikes)")
    lr_jump: float = opt(2.0, "the learning rate rose at least this factor over its level before the spike (in the "
                              "lead window): the finding names an lr spike as the root cause")


def spike_events(series, opts: SpikeOptions) -> list[dict]:
    """Spike events of one logged series: onset/peak/end positions, level before, height, in step units."""
    from report_gen.facts import spikes

    finite = np.isfinite(series.values)
    v, steps = series.values[finite], series.steps[finite]
    if v.size < 3:
        return []
    summ = curves.summarize(v)
    span = max(summ.span, 1e-12) if summ is not None else 1e-12
    events = []
    found = spikes.spike_events(spikes.detect(opts.method, v), gap=2)
    if not found:
        return []
    firsts, lasts = np.array(found, dtype=np.int64).T
    # flagged at the 5th consecutive outlier, foundry's excursion began 4 points before
    onsets = np.maximum(0, firsts - 4) if opts.method == "foundry" else firsts
    ends = np.minimum(v.size - 1, lasts + 1)
    befores = spikes.baselines_before(v, onsets, 10)
    peaks = _segment_argmax(v, onsets, ends)
    keep = np.isfinite(befores) & (v[peaks] - befores >= opts.min_rise_share * span)
    onsets, peaks, befores = onsets[keep], peaks[keep], befores[keep]
    heights = v[peaks] - befores
    for onset, onset_step, peak_step, peak, before, height in zip(
            onsets.tolist(), steps[onsets].tolist(), steps[peaks].tolist(), v[peaks].tolist(), befores.tolist(),
            heights.tolist()):
        events.append({"onset": onset, "onset_step": int(onset_step), "peak_step": int(peak_step), "peak": peak,
                       "before": before, "height": height, "rise_share": height / span})
    return events


_SEGMENT_COLUMNS = 64  # segments up to this long are looked at all at once, as rows of one array


def _segment_argmax(v: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The index of the first maximum of v[s:e + 1] for each segment (segments in order, possibly
    overlapping by a point), as `s + np.argmax(v[s:e + 1])` gives it."""
    widths = ends - starts + 1
    if not starts.size:
        return starts.copy()
    if int(widths.max()) <= _SEGMENT_COLUMNS:
        offsets = np.arange(int(widths.max()))
        rows = v[np.minimum(starts[:, None] + offsets, v.size - 1)]
        rows[offsets >= widths[:, None]] = -np.inf  # past a segment's end
        return starts + np.argmax(rows, axis=1)
    return np.array([s + int(np.argmax(v[s:e + 1])) for s, e in zip(starts.tolist(), ends.tolist())], dtype=np.int64)


def lr_jump(run, onset_step: int, opts: SpikeOptions) -> dict | None:
    lr = run.signals.lr
    if lr is None or not len(lr):
        return None
    s, v = lr.steps, lr.values
    before = v[(s < onset_step - opts.lead_window) & np.isfinite(v)]
    window = v[(s >= onset_step - opts.lead_window) & (s <= onset_step) & np.isfinite(v)]
    if not before.size or not window.size:
        return None
    base = float(np.median(before[-20:]))
    top = float(window.max())
    if base > 0 and top >= opts.lr_jump * base:
        at = int(s[(s >= onset_step - opts.lead_window) & (s <= onset_step) & np.isfinite(v)][int(np.argmax(window))])
        return {"lr_before": base, "lr_peak": top, "lr_peak_step": at, "lr_factor": top / base}
    return None


def check_method(opts: SpikeOptions) -> None:
    """A clear error for an unknown `method` (the engine reports it as the rule not evaluated)."""
    from report_gen.facts.spikes import METHODS

    if opts.method not in METHODS:
        raise ValueError(f"option method must be one of {', '.join(METHODS)}, got {opts.method!r}")
