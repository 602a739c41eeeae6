"""The `details` section of report.json: the evidence the renderers plot, extracted from RunFacts.

Only numbers (downsampled) and small already-encoded PNGs go here, so that `report-gen render
report.json` can redraw every plot without the run. What is extracted is driven by the findings:
distributions and kernel grids only for flagged layers (plus a few summary ones).
"""
from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from report_gen.core import Finding, severity_rank
from report_gen.facts import curves
from report_gen.facts import histograms as hf
from report_gen.facts.run import RunFacts, is_weight_name

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


def build_details(run: RunFacts, findings: list[Finding]) -> dict[str, Any]:
    mine = [f for f in findings if f.run == run.name]
    return {
        "summary": _summary(run),
        "curves": _curves(run, mine),
        "distributions": _distributions(run, mine),
        "grad_depth": _grad_depth(run),
        "layers": _layers(run, mine),
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
            "parameters": n_params, "parameter_count": count, "signals": sorted(run.available - {"input_problems"}),
            "hparams": {str(k): (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                        for k, v in run.signals.hparams.items()},
            "event_tags": int(run.events.scalars["tag"].nunique()) if not run.events.scalars.empty else 0}


def _curves(run: RunFacts, findings) -> dict[str, Any]:
    s = run.signals
    out = {}
    for key in ("train_loss", "val_loss", "train_acc", "val_acc", "lr", "grad_norm"):
        ser = getattr(s, key)
        if ser is not None:
            out[key] = _series_dict(ser.tag, ser.steps, ser.values)
    for tag, ser in list(s.other_losses.items())[:8]:
        out[f"other:{tag}"] = _series_dict(tag, ser.steps, ser.values)
    wanted = {k for f in findings if f.plot and f.plot.get("kind") == "curve" for k in f.plot.get("series", [])}
    for k in wanted:
        if k.startswith("update_ratio:") and k[13:] in s.update_ratio:
            ser = s.update_ratio[k[13:]]
            out[k] = _series_dict(ser.tag, ser.steps, ser.values)
    return out


def _flagged_subjects(findings, kind: str) -> list[str]:
    return [f.plot["key"] for f in findings if f.plot and f.plot.get("kind") == kind and "key" in f.plot]


def _distributions(run: RunFacts, findings) -> dict[str, Any]:
    s = run.signals
    keys = _flagged_subjects(findings, "distribution")
    # summary distributions: first and last weight layer's gradient and weight
    order = [n for n in run.param_order if is_weight_name(n)]
    for n in (order[:1] + order[-1:]):
        for prefix in ("grad", "weight"):
            keys.append(f"{prefix}:{n}")
    out = {}
    for key in dict.fromkeys(keys):
        if len(out) >= MAX_DISTRIBUTIONS:
            break
        kind, _, name = key.partition(":")
        src = {"weight": s.weight_hist, "grad": s.grad_hist, "activation": s.act_hist}.get(kind, {})
        h = src.get(name)
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


def _layers(run: RunFacts, findings) -> list[dict[str, Any]]:
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
                amax = np.asarray(st.unit_absmax, dtype=float)
                facts["dead_kernel_ratio"] = _num(np.mean(amax < 0.01)) if amax.size else None
            if st.kernel_diversity is not None:
                facts["kernel_diversity"] = _num(st.kernel_diversity)
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
    wanted = {f.plot.get("param") for f in findings if f.plot and f.plot.get("kind") == "layer_series"}
    out = {}
    for n in wanted:
        ps = run.series.get(n)
        if ps is None:
            continue
        out[n] = {"steps": list(ps.steps), "rel_update": [_num(v) for v in ps.rel_update],
                  "weight_norm": [None] * len(ps.steps)}
        for i, st in zip(ps.present, ps.stats):
            out[n]["weight_norm"][i] = _num(st.l2)
    return out


def _activation_series(run: RunFacts) -> dict[str, Any]:
    out = {}
    for layer, stats in list(run.signals.act_stats.items())[:16]:
        any_s = next(iter(stats.values()))
        d = {"steps": [int(x) for x in curves.downsample(any_s.steps, any_s.values, 300)[0]]}
        for k in ("mean", "std", "max", "min"):
            if k in stats:
                d[k] = [_num(v) for v in curves.downsample(stats[k].steps, stats[k].values, 300)[1]]
        out[layer] = d
    if len(run.probe) >= 2:
        for layer in list(run.probe[-1][1].activations)[:16]:
            pts = [(step, r.activations[layer]) for step, r in run.probe if layer in r.activations]
            out[f"probe:{layer}"] = {"steps": [s for s, _ in pts], "mean": [_num(a.mean) for _, a in pts],
                                     "std": [_num(a.std) for _, a in pts], "max": [_num(a.max) for _, a in pts],
                                     "min": [_num(a.min) for _, a in pts]}
    return out


def png_base64(array: np.ndarray) -> str:
    """Encode a (H, W) or (H, W, 3) float array in [0, 1] as a base64 PNG."""
    from PIL import Image

    a = np.clip(np.nan_to_num(np.asarray(array, dtype=float)), 0, 1)
    img = Image.fromarray((a * 255).round().astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


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


def _images(run: RunFacts, findings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    wanted = [f.plot["image"] for f in findings if f.plot and f.plot.get("kind") == "kernels" and "image" in f.plot]
    for key in list(dict.fromkeys(wanted))[:MAX_KERNEL_GRIDS]:
        name = key.split(":", 1)[1]
        for c in reversed(run.checkpoints):
            if name in c.tensors:
                try:
                    out[key] = {"title": f"kernels of {name} (last checkpoint)", "png_base64": png_base64(kernel_grid(c.load(name)))}
                except Exception:  # noqa: BLE001  (an image is a nicety; never lose the report for it)
                    pass
                break
    layers = {f.subject for f in findings}
    for tag, imgs in list(run.signals.kernel_images.items()) + list(run.signals.act_images.items()):
        if imgs and (tag in layers or len(out) < MAX_KERNEL_GRIDS + 2):
            last = imgs[-1]
            out[f"logged:{tag}"] = {"title": f"{tag} (logged, step {last.step})", "step": int(last.step),
                                    "png_base64": base64.b64encode(last.png_bytes()).decode("ascii")}
    if run.probe:
        res = run.probe[-1][1]
        for f in findings:
            if f.plot and f.plot.get("kind") == "probe_maps":
                st = res.activations.get(f.plot["layer"])
                if st is not None and st.maps is not None and len(st.maps):
                    m = np.asarray(st.maps, dtype=float)
                    m = (m - m.min()) / max(m.max() - m.min(), 1e-12)
                    mosaic = np.concatenate(list(m), axis=1)
                    key = f"probe:{f.plot['layer']}"
                    out[key] = {"title": f"probe activation maps of {f.plot['layer']}", "png_base64": png_base64(
                        np.kron(mosaic, np.ones((max(1, 64 // mosaic.shape[0]),) * 2)))}
                    f.plot = {"kind": "image", "run": run.name, "image": key}
        for layer, at in res.attention.items():
            if at.maps is not None and len(at.maps):
                m = np.asarray(at.maps, dtype=float)
                m = m / max(m.max(), 1e-12)
                mosaic = np.concatenate(list(m[:8]), axis=1)
                out[f"attention:{layer}"] = {"title": f"attention maps of {layer} (heads side by side, probe sample 0)",
                                             "png_base64": png_base64(np.kron(mosaic, np.ones((4, 4))))}
    for f in findings:  # image-backed plot kinds point at the image they need, or at nothing
        if f.plot and f.plot.get("kind") in ("probe_maps", "attention"):
            key = f"{'probe' if f.plot['kind'] == 'probe_maps' else 'attention'}:{f.plot.get('layer')}"
            f.plot = {"kind": "image", "run": run.name, "image": key} if key in out else None
    return out
