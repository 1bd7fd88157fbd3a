"""The live status page in a real browser (issue 22): Debian's headless Chromium loads / from the
daemon's metrics listener, shows each real's row with its health, and, when a real's server stops,
that row turns down on its own (the page refreshes itself): no reload, no framework. Screenshots
of both moments are taken (docs/ keeps copies: IPVSMGR_SCREENSHOTS=DIR on the host collects them)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests import chromium, vm
from tests.kernel.helpers import Lab, connect, sh
from tests.kernel.test_daemon_control import Echo, echo_ok
from tests.kernel.test_health import wait_for, weights

LISTEN = "127.0.0.1:19475"
ROWS = (
    "(() => { const r = Object.fromEntries([...document.querySelectorAll('tr[data-real]')]"
    ".map(r => [r.dataset.real, r.dataset.health])); return Object.keys(r).length ? r : null })()"
)

CONFIG = """\
vrrp:
  instances:
    - {name: front, interface: dummy1, vrid: 61, priority: 150, advert_interval: 1s,
       virtual_addresses: [198.18.9.20/32]}
virtual_servers:
  - name: web
    address: 198.18.0.10
    port: 8484
    scheduler: wlc
    quorum: {min_up: 1}
    health_check: {type: tcp, interval: 0.5s, timeout: 0.5s, rise: 1, fall: 1, jitter: 0}
    reals:
      - {address: 198.18.2.2, port: 8080, weight: 100}
      - {address: 198.18.2.3, port: 8080, weight: 100}
      - {address: 198.18.2.4, port: 8080, weight: 50}
"""


def screenshots() -> Path | None:
    """Where the VM puts screenshots for the host to collect (tests/vm.py), if anywhere."""
    results = os.environ.get(vm.RESULTS_ENV)
    if not results:
        return None
    d = Path(results).parent / "screenshots"
    d.mkdir(exist_ok=True)
    return d


def test_the_page_shows_a_real_going_down(ipvs: Lab, nat_lab: None) -> None:
    if chromium.binary() is None:
        pytest.fail("no headless Chromium (scripts/setup.sh installs chromium-headless-shell)")
    servers = {a: Echo(a) for a in ("198.18.2.2", "198.18.2.3", "198.18.2.4")}
    sh("ip", "link", "add", "dummy1", "type", "dummy")
    sh("ip", "link", "set", "dummy1", "up")
    sh("ip", "addr", "add", "198.18.9.2/24", "dev", "dummy1")
    log = Path(ipvs.work / "daemon.log")
    daemon = ipvs.daemon(ipvs.write("lb.yaml", CONFIG), log, "--metrics", LISTEN)
    shots = screenshots() or ipvs.work
    held: list[socket.socket] = []
    try:
        wait_for(lambda: len([w for w in weights().values() if w]) == 3, 90)
        held = [connect("cl", "198.18.0.10", 8484) for _ in range(5)]  # some connections to show
        assert all(echo_ok(c) for c in held)
        t0 = time.monotonic()
        with chromium.chromium() as browser:
            browser.open(f"http://{LISTEN}/")
            rows = browser.wait_for(ROWS, 60)
            loaded = time.monotonic() - t0
            assert rows == {f"web|198.18.2.{i}:8080": "up" for i in (2, 3, 4)}, rows
            browser.wait_for(
                "document.querySelector(\"tr[data-instance='front']\")?.dataset.state === 'master'", 30
            )
            browser.screenshot(shots / "status-page.png")

            servers["198.18.2.3"].close()  # its checks now fail: down within about one interval
            stopped = time.monotonic()
            browser.wait_for(f"{ROWS}['web|198.18.2.3:8080'] === 'down'", 30, 0.1)
            seen = time.monotonic() - stopped
            rows = browser.evaluate(ROWS)
            assert rows["web|198.18.2.2:8080"] == "up" and rows["web|198.18.2.4:8080"] == "up", rows
            # the row says why, as status does
            why = browser.evaluate(
                "document.querySelector(\"tr[data-real='web|198.18.2.3:8080'] td.why\").textContent"
            )
            assert "refused" in why, why
            assert weights()["198.18.2.3:8080"] == 0
            browser.wait_for("document.querySelector(\"tr[data-real='web|198.18.2.3:8080']\")"
                             ".dataset.weight === '0'", 10)  # fmt: skip
            browser.screenshot(shots / "status-page-real-down.png")
        print(json.dumps({"page_loaded_s": round(loaded, 2), "down_on_page_after_s": round(seen, 2)}))
        assert seen < 5.0, seen  # 0.5 s checks, the page's 1 s refresh, a TCG VM
    finally:
        for c in held:
            c.close()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        for s in servers.values():
            s.close()
        sh("ip", "link", "del", "dummy1", check=False)
        print(log.read_text()[-3000:])
    assert code == 0
