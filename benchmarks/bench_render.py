"""Time report rendering (all formats) for a typical report and a very large one.

Usage: python benchmarks/bench_render.py [OUT_DIR]
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from report_gen.render import render  # noqa: E402
from builders.sample_report import make_report_dict  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="bench_render_"))
    for label, report in (("typical (12 findings, 2 runs)", make_report_dict(12, baseline=True)),
                          ("large (2000 findings)", make_report_dict(2000))):
        start = time.perf_counter()
        paths = render(report, out / label.split()[0])
        elapsed = time.perf_counter() - start
        sizes = ", ".join(f"{fmt} {path.stat().st_size / 1024:.0f} KiB" for fmt, path in paths.items())
        print(f"{label}: {elapsed:.2f} s  ({sizes})")


if __name__ == "__main__":
    main()
