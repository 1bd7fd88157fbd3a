"""Debian's headless Chromium driven over the DevTools protocol on a pipe.

`--remote-debugging-pipe` makes Chromium read commands on fd 3 and write
replies and events on fd 4, each a JSON object ended by a NUL byte: no
WebSocket client, no webdriver, nothing from PyPI. Enough for the status
page tests: open a page, evaluate JavaScript, take a screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium-headless-shell", "chromium")


def binary() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class CdpError(Exception):
    pass


class Browser:
    def __init__(self, proc: subprocess.Popen[bytes], tx: int, rx: int) -> None:
        self.proc, self.tx, self.rx = proc, tx, rx
        self._ids = 0
        self._buf = b""
        self.session: str | None = None

    def call(self, method: str, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        self._ids += 1
        msg: dict[str, Any] = {"id": self._ids, "method": method, "params": params}
        if self.session is not None and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self.session
        os.write(self.tx, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for reply in self._messages(deadline):
                if reply.get("id") == self._ids:
                    if "error" in reply:
                        raise CdpError(f"{method}: {reply['error']}")
                    return reply.get("result", {})  # type: ignore[no-any-return]

    def _messages(self, deadline: float) -> Iterator[dict[str, Any]]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CdpError("no reply from Chromium in time")
        ready, _, _ = select.select([self.rx], [], [], left)
        if not ready:
            raise CdpError("no reply from Chromium in time")
        chunk = os.read(self.rx, 1 << 20)
        if not chunk:
            raise CdpError(f"Chromium closed the pipe (exit {self.proc.poll()})")
        self._buf += chunk
        *whole, self._buf = self._buf.split(b"\0")
        for raw in whole:
            yield json.loads(raw)

    def open(self, url: str) -> None:
        """A new tab on `url`, attached: later calls go to it."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable")
        metrics = {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}
        self.call("Emulation.setDeviceMetricsOverride", **metrics)
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in out:
            raise CdpError(f"{expression}: {out['exceptionDetails']}")
        return out["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = True) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            root = "document.documentElement"
            size = self.evaluate(f"[{root}.scrollWidth, {root}.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", **params)["data"]
        path.write_bytes(base64.b64decode(data))

    def wait_for(self, expression: str, timeout: float, every: float = 0.25) -> Any:
        """Until the expression is truthy in the page; its value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(CdpError):
                last = self.evaluate(expression)
                if last:
                    return last
            time.sleep(every)
        raise AssertionError(f"not true after {timeout:g} s: {expression} (last: {last!r})")


@contextlib.contextmanager
def chromium(extra: tuple[str, ...] = ()) -> Iterator[Browser]:
    exe = binary()
    if exe is None:
        raise RuntimeError("no headless Chromium: apt-get install chromium-headless-shell")
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    # The child needs them as fd 3 and 4: first moved above anything dup2 could clobber.
    high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 100)
    high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 100)
    profile = tempfile.mkdtemp(prefix="ipvsmgr-chromium-")

    def plumb() -> None:
        os.dup2(high_r, 3)
        os.dup2(high_w, 4)

    argv = [
        exe, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
        "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions", "--mute-audio",
        "--disable-background-networking", "--disable-component-update", "--hide-scrollbars",
        f"--user-data-dir={profile}", *extra, "about:blank",
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        pass_fds=(3, 4, high_r, high_w), preexec_fn=plumb,
    )  # fmt: skip
    for fd in (to_child_r, from_child_w, high_r, high_w):
        os.close(fd)
    browser = Browser(proc, to_child_w, from_child_r)
    try:
        yield browser
    finally:
        with contextlib.suppress(Exception):
            browser.call("Browser.close", timeout=5)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(to_child_w)
        os.close(from_child_r)
        shutil.rmtree(profile, ignore_errors=True)
