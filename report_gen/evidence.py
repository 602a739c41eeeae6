"""The `details` section of report.json: the evidence the renderers plot, extracted from RunFacts.

Only numbers (downsampled) and small pictures go here (pixels, or the PNG bytes a run logged; render
encodes them), so that `report-gen render report.json` can redraw every plot without the run. What is
extracted is driven by the findings' plots: distributions and kernel grids only for flagged layers (plus
a few summary ones). Evidence never re-decides: findings are only read, and where the layer table shows
a rule's fact it uses the options that rule ran with.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from report_gen.core import Finding, severity_rank
from report_gen.facts import curves, dead_units
from report_gen.facts import histograms as hf
from report_gen.facts.run import RunFacts, is_weight_name
from report_gen.rules.kernels import DeadKernelOptions
from report_gen.vocab import (DISTRIBUTION_SOURCES, SCALAR_SIGNALS, WRITTEN, CurvePlot, DistributionPlot, ImagePlot,
                              Key, KernelsPlot, LayerFact, LayerSeriesPlot, Picture, Signal)

MAX_CURVE_POINTS = 1000
MAX_DISTRIBUTIONS = 12
MAX_KERNEL_GRIDS = 6


def _num(x: Any) -> Any:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def _series_dict(tag: str, steps, values) -> dict:
    st, va = curves.downsample(np.asarray(steps), np.asarray(values, dtype=float), MAX_CURVE_POINTS)
    return {"tag": tag, "steps": [int(s) for s in st], "values": [_num(v) for v in va]}


def build_details(run: RunFacts, findings: list[Finding], options: Mapping[str, Any]) -> dict[str, Any]:
    """The details of one run. `options`: rule code -> the resolved options object each rule ran with
    (the layer table applies them: its dead-kernel share is the rule's own, at the configured threshold).
    Findings are only read."""
    mine = [f for f in findings if f.run == run.name]
    return {
        "summary": _summary(run),
        "curves": _curves(run, mine),
        "distributions": _distributions(run, mine),
        "grad_depth": _grad_depth(run),
        "layers": _layers(run, mine, _options(options, DeadKernelOptions)),
        "layer_series": _layer_series(run, mine),
        "activation_series": _activation_series(run),
        "images": _images(run, mine),
    }


def _summary(run: RunFacts) -> dict[str, Any]:
    first, last = run.step_range
    n_params = len([n for n in run.param_order if run.tensor_role(n) == "param"])
    count = None
    if run.checkpoints:
        c = run.checkpoints[-1]
        count = int(sum(int(np.prod(t.shape)) for n, t in c.tensors.items() if getattr(t, "role", "param") == "param"))
    opt = next((c.optimizer for c in reversed(run.checkpoints) if c.optimizer), None)
    optimizer = None if not opt else {k: opt.get(k) for k in ("kind", "mapping", "note", "step")}
    return {"steps": [first, last], "wall_time_s": run.wall_time, "checkpoints": len(run.checkpoints),
            "optimizer": optimizer,
            "parameters": n_params, "parameter_count": count, "signals": [s.value for s in sorted(run.available - {Signal.INPUT_PROBLEMS})],
            "hparams": {str(k): (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                        for k, v in run.signals.hparams.items()},
            "event_tags": run.events.table.tag_count()}


def _curves(run: RunFacts, findings) -> dict[str, Any]:
    s = run.signals
    out = {}
    for key in SCALAR_SIGNALS:
        ser = getattr(s, key.value)
        if ser is not None:
            out[key.value] = _series_dict(ser.tag, ser.steps, ser.values)
    for tag, ser in list(s.other_losses.items())[:8]:
        out[Key.OTHER.of(tag)] = _series_dict(tag, ser.steps, ser.values)
    wanted = dict.fromkeys(k for f in findings if isinstance(f.plot, CurvePlot) for k in f.plot.series)  # ordered
    for k in wanted:
        param = Key.UPDATE_RATIO.name_in(k)
        if param in s.update_ratio:
            ser = s.update_ratio[param]
            out[k] = _series_dict(ser.tag, ser.steps, ser.values)
    return out


def _distributions(run: RunFacts, findings) -> dict[str, Any]:
    s = run.signals
    keys = [f.plot.key for f in findings if isinstance(f.plot, DistributionPlot)]
    # summary distributions: first and last weight layer's gradient and weight
    order = [n for n in run.param_order if is_weight_name(n)]
    for n in (order[:1] + order[-1:]):
        for source in (Key.GRAD, Key.WEIGHT):
            keys.append(source.of(n))
    histograms = dict(zip(DISTRIBUTION_SOURCES, (s.weight_hist, s.grad_hist, s.act_hist)))
    out = {}
    for key in dict.fromkeys(keys):
        if len(out) >= MAX_DISTRIBUTIONS:
            break
        h = next((src.get(name) for source, src in histograms.items() if (name := source.name_in(key)) is not None), None)
        if h is not None and len(h):
            bands = hf.percentile_bands(h)
            bands["percentiles"] = {p: [_num(v) for v in vals] for p, vals in bands["percentiles"].items()}
            out[key] = bands
    return out


def _grad_depth(run: RunFacts) -> list[dict[str, Any]]:
    est = run.grad_estimates
    names = [n for n in run.param_order if n in est] + [n for n in est if n not in run.param_order]
    return [{"param": n, "depth": i, "grad_rms": _num(est[n].value), "source": est[n].source}
            for i, n in enumerate(names)]


def _options(options: Mapping[str, Any], kind: type):
    """The resolved options of the rule whose options are of `kind`; its defaults when it did not run."""
    return next((o for o in options.values() if isinstance(o, kind)), None) or kind()


def _layers(run: RunFacts, findings, dead: DeadKernelOptions) -> list[dict[str, Any]]:
    flags: dict[str, dict[str, str]] = {}
    fact_of = {"dead-kernels": "dead_kernel_ratio", "vanishing-gradients": "grad_rms",
               "exploding-gradients": "grad_rms", "unbalanced-updates": "update_ratio",
               "frozen-layer": "update_ratio", "weight-collapse": "weight_std", "wide-weights": "weight_std",
               "low-kernel-diversity": "kernel_diversity", "redundant-filters": "max_corr",
               "nonfinite-weights": "nonfinite", "bimodal-weights": "weight_std"}
    for f in findings:
        fact = fact_of.get(f.category)
        if fact is None:
            continue
        params = f.evidence.get("params") or [f.subject]
        for p in params:
            prev = flags.setdefault(p, {}).get(fact)
            if prev is None or severity_rank(f.severity) > severity_rank(prev):
                flags[p][fact] = f.severity
    rows = []
    est = run.grad_estimates
    opt_rms = next((c.optimizer.get("grad_rms") or {} for c in reversed(run.checkpoints) if c.optimizer), {})
    names = list(run.param_order) or list(est)
    for n in names:
        st = run.last_stats.get(n)
        ps = run.series.get(n)
        facts: dict[str, Any] = {}
        shape = list(st.shape) if st is not None else None
        if st is not None:
            facts["weight_std"] = _num(st.std)
            facts["nonfinite"] = int(st.nan_count + st.inf_count)
            if st.unit_absmax is not None:
                mask = dead_units(st.unit_absmax, dead.threshold, dead.relative)
                facts["dead_kernel_ratio"] = _num(np.mean(mask)) if mask.size else None
            if st.kernel_diversity is not None:
                facts["kernel_diversity"] = _num(st.kernel_diversity)
            if st.has("correlations"):  # shown when a rule computed it; the table never forces a fact
                mc = np.asarray(st.unit_max_corr if st.unit_max_corr is not None else [], dtype=float)
                if np.isfinite(mc).any():
                    facts["max_corr"] = _num(np.nanmax(mc))
        elif n in run.signals.weight_hist:
            h = run.signals.weight_hist[n]
            facts["weight_std"] = _num(h.std[-1]) if len(h) else None
        if n in est:
            facts["grad_rms"] = _num(est[n].value)
        if n in opt_rms:  # the optimizer's post-hoc window onto gradients, shown beside logged ones
            facts["grad_rms_optimizer"] = _num(opt_rms[n])
        if ps is not None and len(ps.rel_update):
            ru = np.asarray(ps.rel_update, dtype=float)
            facts["update_ratio"] = _num(np.nanmedian(ru)) if np.isfinite(ru).any() else None
        elif n in run.signals.update_ratio:
            v = run.signals.update_ratio[n].values
            facts["update_ratio"] = _num(np.median(curves.late(v))) if curves.late(v).size else None
        n_flags = flags.get(n, {})
        for f in findings:  # module-level subjects (frozen-layer) flag every param of the module
            if f.subject and n.startswith(f.subject + ".") and f.category in fact_of:
                n_flags.setdefault(fact_of[f.category], f.severity)
        if facts or n_flags:
            rows.append({"param": n, "shape": shape, "facts": facts, "flags": n_flags})
    return rows


def _layer_series(run: RunFacts, findings) -> dict[str, Any]:
    wanted = dict.fromkeys(f.plot.param for f in findings if isinstance(f.plot, LayerSeriesPlot))  # ordered
    out = {}
    for n in wanted:
        ps = run.series.get(n)
        if ps is None:
            continue
        norms = [None] * len(ps.steps)
        for i, st in zip(ps.present, ps.stats):
            norms[i] = _num(st.l2)
        out[n] = {"steps": list(ps.steps), LayerFact.REL_UPDATE.value: [_num(v) for v in ps.rel_update],
                  LayerFact.WEIGHT_NORM.value: norms}
    return out


def _activation_series(run: RunFacts) -> dict[str, Any]:
    out = {}
    for layer, stats in list(run.signals.act_stats.items())[:16]:
        any_s = next(iter(stats.values()))
        d = {"steps": [int(x) for x in curves.downsample(any_s.steps, any_s.values, 300)[0]]}
        for k in WRITTEN.act_stat_keys:
            if k in stats:
                d[k] = [_num(v) for v in curves.downsample(stats[k].steps, stats[k].values, 300)[1]]
        out[layer] = d
    if len(run.probe) >= 2:
        for layer in list(run.probe[-1][1].activations)[:16]:
            pts = [(step, r.activations[layer]) for step, r in run.probe if layer in r.activations]
            out[Key.PROBE.of(layer)] = {"steps": [s for s, _ in pts], "mean": [_num(a.mean) for _, a in pts],
                                     "std": [_num(a.std) for _, a in pts], "max": [_num(a.max) for _, a in pts],
                                     "min": [_num(a.min) for _, a in pts]}
    return out


def kernel_grid(weight) -> np.ndarray:
    """A mosaic of conv kernels (torchvision's make_grid on [out*in, 1, kh, kw], each normalised)."""
    import torch
    from torchvision.utils import make_grid

    w = weight.detach().float()
    out_c, in_c = w.shape[:2]
    if in_c == 3:
        tiles = w  # colour kernels, as the first layer of an image model
        nrow = int(np.ceil(np.sqrt(out_c)))
    else:
        tiles = w[:64, :min(in_c, 16)].reshape(-1, 1, *w.shape[2:])
        nrow = min(in_c, 16)
    lo = tiles.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = tiles.flatten(1).max(1).values.view(-1, 1, 1, 1)
    tiles = (tiles - lo) / torch.clamp(hi - lo, min=1e-12)
    grid = make_grid(tiles, nrow=nrow, padding=1, pad_value=0.5)
    img = grid.permute(1, 2, 0).numpy()
    scale = max(1, int(256 / max(img.shape[:2])))
    return np.kron(img, np.ones((scale, scale, 1)))


def probe_mosaic(maps) -> np.ndarray:
    """The probe's activation maps of one layer side by side, scaled to [0, 1] and enlarged to ~64 px high."""
    m = np.asarray(maps, dtype=float)
    m = (m - m.min()) / max(m.max() - m.min(), 1e-12)
    mosaic = np.concatenate(list(m), axis=1)
    return np.kron(mosaic, np.ones((max(1, 64 // mosaic.shape[0]),) * 2))


def attention_mosaic(maps) -> np.ndarray:
    """Up to 8 heads' attention maps side by side, scaled by the largest weight, enlarged 4x."""
    m = np.asarray(maps, dtype=float)
    m = m / max(m.max(), 1e-12)
    return np.kron(np.concatenate(list(m[:8]), axis=1), np.ones((4, 4)))


def _images(run: RunFacts, findings) -> dict[str, Picture]:
    """Pictures (pixels or the run's own PNG bytes) for details.images; render encodes them."""
    out: dict[str, Picture] = {}
    wanted = [f.plot.image for f in findings if isinstance(f.plot, KernelsPlot)]
    for key in list(dict.fromkeys(wanted))[:MAX_KERNEL_GRIDS]:
        name = Key.KERNELS.name_in(key)
        for c in reversed(run.checkpoints):
            if name in c.tensors:
                try:
                    out[key] = Picture(f"kernels of {name} (last checkpoint)", kernel_grid(c.load(name)))
                except Exception:  # noqa: BLE001  (an image is a nicety; never lose the report for it)
                    pass
                break
    layers = {f.subject for f in findings}
    for tag, imgs in list(run.signals.kernel_images.items()) + list(run.signals.act_images.items()):
        if imgs and (tag in layers or len(out) < MAX_KERNEL_GRIDS + 2):
            last = imgs[-1]
            out[Key.LOGGED.of(tag)] = Picture(f"{tag} (logged, step {last.step})", png=last.png_bytes(),
                                              step=int(last.step))
    if run.probe:
        res = run.probe[-1][1]
        for f in findings:  # the rules point at the probe maps they want shown
            layer = Key.PROBE.name_in(f.plot.image) if isinstance(f.plot, ImagePlot) else None
            st = res.activations.get(layer) if layer is not None else None
            if st is not None and st.maps is not None and len(st.maps):
                out[f.plot.image] = Picture(f"probe activation maps of {layer}", probe_mosaic(st.maps))
        for layer, at in res.attention.items():
            if at.maps is not None and len(at.maps):
                out[Key.ATTENTION.of(layer)] = Picture(
                    f"attention maps of {layer} (heads side by side, probe sample 0)", attention_mosaic(at.maps))
    return out
