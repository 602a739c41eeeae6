"""Open report.html from disk in headless Chromium and check it works offline.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: NUL-separated JSON
on file descriptors 3 and 4), so no extra Python package is needed. Checked: no console errors or
exceptions, no request other than file:// and data:, every <img> decodes. A screenshot is written to
tests/_artifacts/report.png.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from builders.sample_report import make_report_dict, rendered_sample

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
ARTIFACTS = Path(__file__).parents[1] / "_artifacts"
TIMEOUT_S = 20.0


def _chromium() -> str:
    """Path of the Chromium binary; fails in CI (CI=true) and skips locally when there is none."""
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("chromium")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is required in CI (apt-get install -y chromium)")
    pytest.skip("chromium not installed (apt-get install -y chromium)")


def _high_fd(fd: int) -> int:
    """The same file as `fd` on a descriptor >= 10 (close-on-exec); `fd` itself is closed."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class DevTools:
    """A minimal Chrome DevTools Protocol client over --remote-debugging-pipe."""

    def __init__(self, executable: str, profile: Path) -> None:
        # the pipe ends are moved above fd 9 first: were one of them already fd 3 or 4, dup2 onto itself
        # would keep its close-on-exec flag (or the second dup2 would overwrite the first) and kill the pipe
        to_browser_r, self._to_browser = map(_high_fd, os.pipe())
        self._from_browser, from_browser_w = map(_high_fd, os.pipe())

        def wire_fds() -> None:  # the browser reads commands on fd 3 and writes replies on fd 4
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-extensions",
             "--disable-dev-shm-usage", "--remote-debugging-pipe", f"--user-data-dir={profile}",
             "--window-size=1200,900", "about:blank"],
            preexec_fn=wire_fds, close_fds=False,  # os.pipe() fds are non-inheritable; only 3 and 4 pass
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and wait for its reply (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        reply = self._read_until(lambda m: m.get("id") == self._next_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str) -> dict:
        seen = next((e for e in self.events if e.get("method") == method), None)
        return seen or self._read_until(lambda m: m.get("method") == method)

    def _read_until(self, done) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if done(message):
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._from_browser], [], [], remaining)[0]:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


IMAGE_CHECK = """JSON.stringify(Array.from(document.images).map(i => ({src: i.src.slice(0, 40),
    ok: i.complete && i.naturalWidth > 0})))"""


def _open_in_chromium(page: Path, profile: Path, screenshot: Path | None = None) -> dict:
    """Load a file:// page; return the requests made, console/JS errors and the <img> decode status."""
    url = page.resolve().as_uri()
    browser = DevTools(_chromium(), profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Page.navigate", {"url": url}, session=session)
        browser.wait_event("Page.loadEventFired")
        images = json.loads(browser.send("Runtime.evaluate", {"expression": IMAGE_CHECK, "returnByValue": True},
                                         session=session)["result"]["value"])
        if screenshot is not None:
            size = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 12000), "scale": 1}
            shot = browser.send("Page.captureScreenshot", {"format": "png", "clip": clip,
                                                           "captureBeyondViewport": True}, session=session)
            screenshot.parent.mkdir(exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
    finally:
        browser.close()
    events = browser.events
    return {
        "url": url,
        "requests": [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"],
        "errors": [e["params"] for e in events if e["method"] == "Runtime.exceptionThrown"
                   or (e["method"] == "Runtime.consoleAPICalled" and e["params"].get("type") == "error")
                   or (e["method"] == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")],
        "images": images,
    }


def _external(result: dict) -> list[str]:
    return [u for u in result["requests"] if not (u.startswith("data:") or u == result["url"])]


def test_report_html_works_offline_in_chromium(tmp_path):
    result = _open_in_chromium(rendered_sample() / "report.html", tmp_path / "profile", ARTIFACTS / "report.png")
    assert result["url"] in result["requests"]
    assert _external(result) == []
    assert result["errors"] == []
    assert len(result["images"]) >= 10
    assert [i for i in result["images"] if not i["ok"]] == []
    assert (ARTIFACTS / "report.png").read_bytes().startswith(b"\x89PNG")


def test_the_browser_check_catches_requests_errors_and_broken_images(tmp_path):
    """The same checks on a page that misbehaves: they must see each problem (so the test above can fail)."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><img src="http://report-gen.invalid/x.png"><img src="data:image/png;base64,AAAA">'
                    "<script>console.error('boom')</script>", encoding="utf-8")
    result = _open_in_chromium(page, tmp_path / "profile")
    assert _external(result) == ["http://report-gen.invalid/x.png"]
    assert result["errors"]
    assert [i["ok"] for i in result["images"]] == [False, False]


# ------------------------------------------------------------------------------------ layout in the page

#: measured in the laid-out page: evidence tables that overlap their finding's plot, evidence cells or plots
#: wider than their finding card, and run headings (h3) or whole sections with nothing under them
LAYOUT_CHECK = """(() => {
  const out = {findings: 0, overlaps: [], spills: [], empty: [], notes: []};
  const overlap = (a, b) => Math.max(0, Math.min(a.right, b.right) - Math.max(a.left, b.left)) *
                            Math.max(0, Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top));
  for (const card of document.querySelectorAll('.finding')) {
    out.findings += 1;
    const box = card.getBoundingClientRect();
    const img = card.querySelector('figure img');
    const parts = card.querySelectorAll('.evidence table, .evidence ul');
    if (img && Array.from(parts).some(p => overlap(p.getBoundingClientRect(), img.getBoundingClientRect()) > 0))
      out.overlaps.push(card.id);
    for (const cell of card.querySelectorAll('.evidence th, .evidence td, .evidence li, figure img')) {
      const r = cell.getBoundingClientRect();
      if (r.right > box.right + 1 || cell.scrollWidth > cell.clientWidth + 1) {
        out.spills.push(card.id + ': ' + cell.textContent.slice(0, 40));
        break;
      }
    }
  }
  const says = n => (n.innerText || '').trim() !== '' || n.querySelector('img') !== null;
  for (const section of document.querySelectorAll('main > section')) {
    for (const h of section.querySelectorAll('h3')) {
      let shown = false;
      for (let n = h.nextElementSibling; n && n.tagName !== 'H3'; n = n.nextElementSibling) shown = shown || says(n);
      if (!shown) out.empty.push(section.id + ': ' + h.textContent.trim());
    }
    if (!Array.from(section.children).some(n => n.tagName !== 'H2' && says(n))) out.empty.push(section.id);
    for (const p of section.querySelectorAll('.left-out')) out.notes.push(section.id + ': ' + p.innerText);
  }
  return JSON.stringify(out);
})()"""


def _measure_layout(page: Path, profile: Path, width: int = 1200) -> dict:
    """Load a file:// page at `width` CSS px and run LAYOUT_CHECK in it."""
    browser = DevTools(_chromium(), profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        browser.send("Page.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1,
                                                            "mobile": False}, session=session)
        browser.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        browser.wait_event("Page.loadEventFired")
        value = browser.send("Runtime.evaluate", {"expression": LAYOUT_CHECK, "returnByValue": True},
                             session=session)["result"]["value"]
    finally:
        browser.close()
    return json.loads(value)


#: the evidence of a real frozen-layer finding (U101 on sample_runs/frozen_layer): a list and a long note
FROZEN_EVIDENCE = {
    "params": ["conv2.weight"], "source": "checkpoints", "others_median_change": 1.4196627653165348,
    "prefix_of_model": False, "grad_rms": 1.606789135483164,
    "optimizer_note": "7 optimizer entries for 8 model parameters (frozen, shared or missing parameters?); "
                      "3 of 7 optimizer entries mapped by a shape unique in the model",
    "has_optimizer_state": None,
}


def _capped_page(tmp_path: Path, max_figures: int) -> Path:
    """The sample report with frozen-layer evidence on every finding that has a plot, drawn with a figure cap
    small enough that whole run sections lose their plots."""
    from report_gen.render.html import render_html
    from report_gen.render.plots import PlotStore

    report = make_report_dict(n_findings=6)
    for finding in report["findings"]:
        if finding.get("plot"):
            finding["evidence"] = {**finding.get("evidence", {}), **FROZEN_EVIDENCE}
    page = tmp_path / "report.html"
    page.write_text(render_html(report, plots=PlotStore(report, max_figures=max_figures)), encoding="utf-8")
    return page


@pytest.mark.parametrize("width", [1200, 900])
def test_evidence_never_overlaps_its_plot_and_no_section_is_silently_empty(tmp_path, width):
    layout = _measure_layout(_capped_page(tmp_path, max_figures=6), tmp_path / "profile", width)
    assert layout["findings"] >= 4
    assert layout["overlaps"] == []
    assert layout["spills"] == []
    assert layout["empty"] == []
    # the sections whose plots the cap took say so, with the cap
    assert layout["notes"] and all("at most 6 figures" in note for note in layout["notes"]), layout["notes"]


def test_the_layout_check_sees_overlap_spill_and_empty_sections(tmp_path):
    """LAYOUT_CHECK on a page built to have each defect: it must report every one (so the test above can fail)."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><main><section id="findings"><h2>Findings</h2>'
        '<article class="finding" id="f1" style="width:400px;position:relative">'
        '<div class="evidence" style="position:absolute;left:0;top:0;width:100px"><table><tr><th>k</th>'
        '<td style="white-space:nowrap">' + "x" * 200 + '</td></tr></table></div>'
        '<figure><img style="width:200px;height:50px" src="data:image/gif;base64,'
        'R0lGODlhAQABAIAAAP///wAAACwAAAAAAQABAAACAkQBADs="></figure></article></section>'
        '<section id="curves"><h2>Training curves</h2><h3>run-a</h3><div class="plots"></div></section>'
        '<section id="images"><h2>Kernels</h2></section></main>', encoding="utf-8")
    layout = _measure_layout(page, tmp_path / "profile")
    assert layout["overlaps"] == ["f1"]
    assert layout["spills"] and layout["spills"][0].startswith("f1")
    assert layout["empty"] == ["curves: run-a", "images"]
