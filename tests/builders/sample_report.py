"""A realistic report dict (report.json schema 1 + `details`) for renderer tests and benchmarks.

`make_report_dict(n_findings=6, hostile=False)` builds two runs with curves, distributions, gradient
depth, a layer table, layer series and images. With `hostile=True` every name and text that comes from
user data (run names, subjects, tags, messages, hparams, file names...) carries HTML/Markdown payloads.
"""
from __future__ import annotations

import base64
import math
import struct
import tempfile
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(1)> | `tick` @octocat *b* _i_ [l](http://x)"

_CODES = [  # (code, name, category, severity, plot kind)
    ("K101", "dead-kernels", "dead-kernels", "error", "kernels"),
    ("G101", "vanishing-gradients", "vanishing-gradients", "warning", "grad_depth"),
    ("L201", "divergence", "divergence", "error", "curve"),
    ("W301", "wide-weights", "wide-weights", "warning", "distribution"),
    ("U101", "unbalanced-updates", "unbalanced-updates", "info", "layer_series"),
    ("O101", "overfitting", "overfitting", "warning", None),
]


def tiny_png(width: int = 32, height: int = 32, seed: int = 0) -> bytes:
    """A valid greyscale PNG with a simple pattern, built with zlib (no imaging library needed)."""
    rows = b"".join(b"\x00" + bytes(((x * 7 + y * 13 + seed * 31) % 256) for x in range(width))
                    for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _curve(tag: str, n: int, f) -> dict:
    steps = list(range(0, n * 10, 10))
    return {"tag": tag, "steps": steps, "values": [f(i) for i in range(n)]}


def _percentiles(n: int, width: float) -> dict:
    keys = ["0", "7", "16", "31", "50", "69", "84", "93", "100"]
    z = [-3.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 3.0]
    return {k: [round(zi * width * (1 + i / n), 5) for i in range(n)] for k, zi in zip(keys, z)}


def _run_details(run: str, params: list[str], tag: str, hostile: bool) -> dict:
    n = 60
    curves = {
        "train_loss": _curve("train/loss", n, lambda i: 2.3 * math.exp(-i / 20) + 0.05 * math.sin(i)),
        "val_loss": _curve("val/loss", n, lambda i: None if i == 40 else 2.4 * math.exp(-i / 25) + 0.1),
        "train_acc": _curve("train/acc", n, lambda i: 1 - math.exp(-i / 15)),
        "val_acc": _curve("val/acc", n, lambda i: 0.9 - math.exp(-i / 15)),
        "lr": _curve("lr", n, lambda i: 0.1 * 0.5 ** (i // 20)),
        f"other:{tag}": _curve(tag, n, lambda i: "inf" if i == 30 else i * 0.01),
    }
    curves[f"other:{tag}"]["values"][31] = "nan"
    dist_steps = list(range(0, 600, 50))
    distributions = {f"weight:{params[0]}": {"steps": dist_steps, "percentiles": _percentiles(len(dist_steps), 0.1)},
                     f"grad:{params[1]}": {"steps": dist_steps, "percentiles": _percentiles(len(dist_steps), 1e-4)}}
    layers = [{"param": p, "shape": [16, 3, 3, 3] if "conv" in p else [10, 64],
               "facts": {"dead_kernel_ratio": 0.19 if d == 0 else 0.0, "grad_rms": 10 ** (-6 + d),
                         "update_ratio": 3e-3, "weight_std": 0.12, "max_corr": "nan" if d == 2 else 0.4},
               "flags": {"dead_kernel_ratio": "error"} if d == 0 else ({"grad_rms": "warning"} if d == 1 else {})}
              for d, p in enumerate(params)]
    return {
        "summary": {"steps": [0, (n - 1) * 10], "wall_time_s": 93.2, "checkpoints": 5, "parameters": len(params),
                    "parameter_count": 51234, "signals": ["train_loss", "val_loss", "weight_hist", tag],
                    "hparams": {"lr": 0.1, "optimizer": HOSTILE if hostile else "sgd",
                                (HOSTILE if hostile else "batch_size"): 64}},
        "curves": curves,
        "distributions": distributions,
        "grad_depth": [{"param": p, "depth": d, "grad_rms": 10 ** (-6 + d)} for d, p in enumerate(params)],
        "layers": layers,
        "layer_series": {params[0]: {"steps": dist_steps, "rel_update": [1e-3 * (1 + i) for i in range(len(dist_steps))],
                                     "weight_norm": [1.0] * len(dist_steps)}},
        "activation_series": {},
        "images": {f"kernels:{params[0]}": {"title": f"kernels of {params[0]}",
                                            "png_base64": base64.b64encode(tiny_png(64, 64, 1)).decode()},
                   f"logged:{tag}": {"title": f"logged {tag}", "step": 10,
                                     "png_base64": base64.b64encode(tiny_png(32, 24, 2)).decode()}},
    }


def _finding(i: int, run: str, params: list[str], hostile: bool) -> dict[str, Any]:
    code, name, category, severity, kind = _CODES[i % len(_CODES)]
    subject = params[i % len(params)]
    plot = {"kernels": {"kind": "kernels", "run": run, "image": f"kernels:{params[0]}"},
            "grad_depth": {"kind": "grad_depth", "run": run},
            "curve": {"kind": "curve", "run": run, "series": ["train_loss", "val_loss"], "mark_step": 400},
            "distribution": {"kind": "distribution", "run": run, "key": f"weight:{params[0]}"},
            "layer_series": {"kind": "layer_series", "run": run, "param": params[0], "fact": "rel_update"},
            None: None}[kind]
    text = f" {HOSTILE}" if hostile else ""
    return {"code": code, "name": name, "category": category, "severity": severity, "run": run,
            "subject": subject, "message": f"{name} in {subject}: 12 of 64 kernels (19%) are dead{text} #{i}",
            "evidence": {"dead": 12, "total": 64, "ratio": 0.1875, "threshold": 0.01,
                         **({HOSTILE: HOSTILE} if hostile else {})},
            "suggestion": f"Check the initialisation and the learning rate.{text}", "plot": plot}


def _series_read(tag: str, params: list[str]) -> list[dict[str, Any]]:
    """inputs.runs[].series as the engine writes it: scalars one by one, one histogram per parameter."""
    return ([{"tag": "train/loss", "kind": "scalar", "source": "TensorBoard", "points": 600, "role": "train_loss"},
             {"tag": tag, "kind": "scalar", "source": "TensorBoard", "points": 60, "role": "other_loss",
              "note": f"mapped by the configuration ({tag})"}]
            + [{"tag": f"weight_hist/{p}", "kind": "histogram", "source": "TensorBoard", "points": 30,
                "role": "weight_hist"} for p in params])


def _series_ignored(tag: str, hostile: bool) -> list[dict[str, Any]]:
    return [{"tag": f"{tag}/ignored", "kind": "scalar", "source": "TensorBoard", "points": 3,
             "reason": "no rule reads it" + (HOSTILE if hostile else "")}]


def make_report_dict(n_findings: int = 6, hostile: bool = False, baseline: bool = False) -> dict[str, Any]:
    """A report dict like the engine produces; `baseline=True` adds a baseline comparison."""
    names = [f"healthy_cnn{HOSTILE}" if hostile else "healthy_cnn", "sick_cnn"]
    params = [f"conv1.weight{HOSTILE}" if hostile else "conv1.weight", "layer1.0.conv1.weight",
              "layer2.0.conv1.weight", "fc.weight"]
    tag = f"custom/{HOSTILE}" if hostile else "custom/metric"
    findings = [_finding(i, names[i % 2], params, hostile) for i in range(n_findings)]
    if baseline:
        for i, f in enumerate(findings):
            f["status"] = "new" if i % 3 == 0 else "persisting"
    counts = {s: sum(1 for f in findings if f["severity"] == s) for s in ("error", "warning", "info")}
    verdict = "fail" if counts["error"] else "warn" if counts["warning"] else "pass"
    problem = {"file": f"events.out.tfevents.1{HOSTILE if hostile else ''}", "kind": "truncated-record",
               "message": "last record truncated (killed run?)" + (HOSTILE if hostile else ""),
               "severity": "info", "offset": 1234}
    report = {
        "schema_version": 1,
        "generator": {"name": "report_gen", "version": "0.1.0"},
        "created": "2026-11-26T16:00:00Z",
        "inputs": {"runs": [{"name": n, "path": f"/runs/{n}", "event_files": 3, "checkpoints": 5, "first_step": 0,
                             "last_step": 590, "problems": [problem] if i == 0 else [],
                             "series": _series_read(tag, params), "ignored": _series_ignored(tag, hostile),
                             "weights_at": ["model_state" + (HOSTILE if hostile else "")]}
                            for i, n in enumerate(names)],
                   "trust_pickles": False, "probe": None},
        "summary": {"verdict": verdict, "counts": counts},
        "findings": findings,
        "not_evaluated": [{"code": "A101", "name": "dead-activations", "reason": "no activation statistics logged"
                           + (HOSTILE if hostile else ""),
                           "enable": "writer.add_scalars(f'activation_stats/{name}', {'mean': m}, step)"}],
        "evaluated": [{"code": c[0], "name": c[1], "category": c[2], "runs": names} for c in _CODES],
        "suppressed": [{**_finding(1, names[0], params, hostile), "reason": "ignored by config: G1"}],
        "unused_suppressions": ["W9"],
        "baseline": None,
        "details": {"runs": {n: _run_details(n, params, tag, hostile) for n in names}},
    }
    if baseline:
        resolved = _finding(2, names[1], params, hostile)
        report["baseline"] = {"path": "/reports/main/report.json", "resolved": [resolved],
                              "new": sum(1 for f in findings if f["status"] == "new"),
                              "persisting": sum(1 for f in findings if f["status"] == "persisting"),
                              "deltas": [{"run": names[0], "metric": "best val loss", "baseline": 0.31,
                                          "candidate": 0.45, "better": "lower"}]}
    return report


@lru_cache(maxsize=None)
def rendered_sample(n_findings: int = 12, hostile: bool = False, baseline: bool = True) -> Path:
    """render() the sample report into a fresh temporary folder once per test session (read-only use)."""
    from report_gen.render import render

    out = Path(tempfile.mkdtemp(prefix="report_gen_sample_"))
    render(make_report_dict(n_findings=n_findings, hostile=hostile, baseline=baseline), out)
    return out
