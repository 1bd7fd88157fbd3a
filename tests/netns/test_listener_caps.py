"""A connection flood on the metrics port of a VRRP-only daemon, from an
unprivileged user (issue 19, part 1): the listener stays under its cap and
refuses the rest (counted), the daemon's descriptors come back to where they
were, the log gets one line instead of a traceback per connection, the
control socket keeps answering, and the master's adverts keep their pace."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ipvsmgr.metrics import MAX_CONNECTIONS
from tests.netns.test_vrrp_process import INTERVAL, adverts_from, ipvsmgr_master, max_gap
from tests.netns.vrrplab import VrrpLab, keepalived

pytestmark = pytest.mark.skipif(keepalived() is None, reason="keepalived is not installed (scripts/setup.sh)")

HOLDER = r"""
import socket, sys, time
n, hold = int(sys.argv[1]), float(sys.argv[2])
socks, opened = [], 0
for _ in range(n):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", 9474))
        opened += 1
    except OSError:
        pass
    socks.append(s)
time.sleep(hold)
alive = 0
for s in socks:  # which ones the daemon kept (the others it closed at once)
    s.setblocking(False)
    try:
        if s.recv(1):  # b"": closed by the daemon
            alive += 1
    except BlockingIOError:  # nothing to read: still open
        alive += 1
    except OSError:  # reset by the daemon
        pass
print(opened, alive, flush=True)
"""


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_connection_flood_on_the_metrics_port_is_capped(vrrp_lab: VrrpLab) -> None:
    lab = vrrp_lab
    im = ipvsmgr_master(lab, peer=False)
    time.sleep(1.0)
    before, rss_before = fds(im.pid), rss_kib(im.pid)
    log_before = len(lab.log("im").encode())
    lab.sniff()
    time.sleep(0.3)
    start = time.monotonic()
    holder = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{lab.ns('a')}", "setpriv", "--reuid=65534", "--regid=65534",
         "--clear-groups", "prlimit", "--nofile=4096:4096", "/usr/bin/python3", "-c", HOLDER, "1100", "4"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(2.0)
    during = fds(im.pid)
    status = lab.ctl("im", "status", "--json")  # the control socket still answers
    assert status.returncode == 0, status.stderr
    out, _ = holder.communicate(timeout=60)
    end = time.monotonic()
    opened, kept = (int(x) for x in out.split())
    time.sleep(1.0)
    after, rss_after = fds(im.pid), rss_kib(im.pid)
    logged = lab.log("im").encode()[log_before:]
    print(
        f"flood: {opened} connections opened, {kept} kept by the daemon after 4 s; daemon fds {before} -> "
        f"{during} during -> {after} after; RSS {rss_before} -> {rss_after} KiB; {len(logged)} bytes logged"
    )
    assert rss_after <= rss_before + 4096, (rss_before, rss_after)
    assert during <= before + MAX_CONNECTIONS + 8, (before, during)
    assert after <= before + 2, (before, after)
    assert 0 < kept <= MAX_CONNECTIONS, kept
    lines = [line for line in logged.decode(errors="replace").splitlines() if line.strip()]
    assert sum("its cap; refusing more" in line for line in lines) == 1, lines[-20:]
    assert not any("Traceback" in line or "Too many open files" in line for line in lines), lines[-20:]
    # the daemon runs at debug level here: what the flood added at warning level and above
    loud = [line for line in lines if " DEBUG " not in line and " INFO " not in line]
    assert sum(len(line) for line in loud) < 4096, loud[-10:]
    sent = [t for t in adverts_from(lab, "a", start) if t <= end]
    assert max_gap([start, *sent, end]) <= 2 * INTERVAL
    metrics = subprocess.run(
        ["ip", "netns", "exec", lab.ns("a"), sys.executable, "-c",
         "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9474/metrics').read().decode())"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    refused_line = [x for x in metrics.splitlines() if 'reason="too_many_connections"' in x]
    assert refused_line and float(refused_line[0].split()[-1]) >= 1100 - MAX_CONNECTIONS - 50, refused_line
