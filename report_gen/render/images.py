"""PNG encoding of the images in `details.images`: evidence hands over pictures (vocab.Picture: pixels,
or PNG bytes a run logged), report.json holds base64 PNG text. Every renderer entry point first calls
`encoded(report)`, so the view model and the plot store only ever see the JSON form.
"""
from __future__ import annotations

import base64
import binascii
import io
import weakref
from typing import Any

import numpy as np

from report_gen.vocab import Picture

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ENCODED: "weakref.WeakKeyDictionary[Picture, bytes | None]" = weakref.WeakKeyDictionary()


def encode_png(array: Any) -> bytes:
    """A (H, W) or (H, W, 3) float array in [0, 1] as PNG bytes (NaN as 0, values clipped)."""
    from PIL import Image

    a = np.clip(np.nan_to_num(np.asarray(array, dtype=float)), 0, 1)
    buffer = io.BytesIO()
    Image.fromarray((a * 255).round().astype(np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def picture_png(picture: Picture) -> bytes | None:
    """The picture's PNG bytes (its own, or its pixels encoded once), None when they cannot be made."""
    if picture not in _ENCODED:
        try:
            _ENCODED[picture] = picture.png if picture.png is not None else encode_png(picture.pixels)
        except Exception:  # noqa: BLE001  (an image is a nicety; never lose the report for it)
            _ENCODED[picture] = None
    return _ENCODED[picture]


def picture_json(picture: Picture) -> dict[str, Any] | None:
    """The JSON form of a picture in report.json, or None when it has no bytes."""
    png = picture_png(picture)
    if png is None:
        return None
    out: dict[str, Any] = {"title": picture.title}
    if picture.step is not None:
        out["step"] = picture.step
    out["png_base64"] = base64.b64encode(png).decode("ascii")
    return out


def encoded(report: dict) -> dict:
    """The report with every Picture of details.runs[*].images in its JSON form (a copy where needed)."""
    runs = report.get("details", {}).get("runs") if isinstance(report.get("details"), dict) else None
    if not isinstance(runs, dict) or not any(isinstance(i, Picture) for r in runs.values() if isinstance(r, dict)
                                             for i in (r.get("images") or {}).values()):
        return report
    new_runs = {}
    for name, run in runs.items():
        images = run.get("images") if isinstance(run, dict) else None
        if isinstance(images, dict):
            converted = {k: picture_json(v) if isinstance(v, Picture) else v for k, v in images.items()}
            run = {**run, "images": {k: v for k, v in converted.items() if v is not None}}
        new_runs[name] = run
    return {**report, "details": {**report["details"], "runs": new_runs}}


def decode_png(encoded_text: Any) -> bytes | None:
    """base64 text -> PNG bytes, or None when it is not valid base64 of a PNG."""
    if not isinstance(encoded_text, str):
        return None
    try:
        data = base64.b64decode(encoded_text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if data.startswith(PNG_SIGNATURE) else None
