"""Regenerate docs/report.png, the README's screenshot: the demo report's first screen in headless Chromium.

    python scripts/readme_screenshot.py            # writes docs/report.png
    python scripts/readme_screenshot.py --out x.png --width 1200 --height 1400

Runs `report-gen demo` (the bundled sample runs) in a temporary folder, then Chromium's own --screenshot
on the report.html it wrote (light colour scheme, no network). Needs chromium (apt-get install -y chromium).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1400)
    args = parser.parse_args(argv)
    browser = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    if browser is None:
        print("readme_screenshot: chromium not found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="report_gen_shot_") as tmp:
        subprocess.run([sys.executable, "-m", "report_gen", "demo"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        page = Path(tmp) / "reports" / "demo" / "report.html"
        shot = Path(tmp) / "shot.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--hide-scrollbars", "--force-color-profile=srgb", f"--user-data-dir={tmp}/profile",
                        f"--window-size={args.width},{args.height}", f"--screenshot={shot}", page.as_uri()],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
