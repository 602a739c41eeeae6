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

from sample_report import rendered_sample

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
