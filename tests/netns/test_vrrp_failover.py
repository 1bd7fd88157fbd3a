"""Failover between two ipvsmgr nodes as a client sees it: pings to the VIP every 10 ms.

Advert interval 0.1 s (priorities 150 / 100): the backup's master-down
interval is 3 x 0.1 + 156/256 x 0.1 = 0.36 s. A crash (SIGKILL and the
link down, since a killed process leaves its VIP configured) must be over
within that plus the gratuitous ARPs' trip; a graceful stop (priority 0)
within the skew time plus a few milliseconds.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.netns.vrrplab import VIP4, Pinger, VrrpLab, ipvsmgr_conf


@pytest.fixture
def pair(vrrp_lab: VrrpLab) -> VrrpLab:
    vrrp_lab.sniff("pc")  # the client's port: it sees every node's multicast
    return vrrp_lab


@pytest.mark.parametrize("mode", ["crash", "graceful"])
def test_client_outage(pair: VrrpLab, mode: str) -> None:
    master = pair.ipvsmgr("a", ipvsmgr_conf(150), "a")
    pair.ipvsmgr("b", ipvsmgr_conf(100), "b")
    pair.wait_for(lambda: pair.has_address("a", VIP4) and not pair.has_address("b", VIP4), 15, "a master")
    time.sleep(0.5)
    pinger = Pinger(pair.ns("c"), VIP4, 4.0)
    pinger.start()
    time.sleep(1.0)
    event = time.monotonic()
    if mode == "crash":
        pair.stop(master, signal.SIGKILL)
        pair.link("a", up=False)
    else:
        pair.stop(master, signal.SIGTERM)
    pinger.join()
    outage = pinger.outage(event)
    assert outage is not None, "the VIP never answered again"
    assert pair.has_address("b", VIP4)
    limit = 1.0 if mode == "crash" else 0.3
    assert outage < limit, f"{mode}: {outage * 1000:.0f} ms without replies"
    # After the take-over only b advertises, and b announced the VIP with its MAC.
    settled = event + outage + 1.0
    masters = {c.src for c in pair.captured if c.at >= settled and c.vrrp[2] > 0}
    assert masters == {"198.18.10.2"}
    assert any(mac == pair.mac("b") and addr == VIP4 and at >= event for at, mac, addr in pair.announced)
