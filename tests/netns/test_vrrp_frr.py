"""VRRPv3 between ipvsmgr and a second implementation: FRR's vrrpd (8.4).

FRR's state is read from FRR itself (`vtysh show vrrp json`), ipvsmgr's from
the outside (which namespace holds the VIP, what is on the wire).
Both use the virtual MAC; intervals are 0.1 s.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.netns.vrrplab import ADDR4, VIP4, FrrRouter, Pinger, VrrpLab, frr, ipvsmgr_conf

pytestmark = pytest.mark.skipif(
    not frr(), reason="FRR (zebra, vrrpd, vtysh) is not installed (scripts/setup.sh)"
)

VMAC4 = bytes.fromhex("00005e000133")
CONF = "      virtual_mac: true\n"


@pytest.fixture
def vlab(vrrp_lab: VrrpLab) -> VrrpLab:
    vrrp_lab.sniff("pa")
    vrrp_lab.sniff("pb")
    return vrrp_lab


def frr_status(lab: VrrpLab, router: FrrRouter) -> str:
    return str(lab.frr_vrrp(router)["status"])


def test_ipvsmgr_higher_priority_is_master_frr_backup(vlab: VrrpLab) -> None:
    d = vlab.frr("b", 100)
    vlab.ipvsmgr("a", ipvsmgr_conf(150) + CONF, "im")
    vlab.wait_for(lambda: vlab.has_address("a", VIP4, "vrrp4.51"), 15, "the VIP on ipvsmgr's macvlan")
    vlab.wait_for(lambda: frr_status(vlab, d) == "Backup", 10, "FRR in Backup")
    time.sleep(1.0)
    t = time.monotonic()
    time.sleep(1.0)
    v4 = vlab.frr_vrrp(d)
    assert v4["status"] == "Backup"
    stats = v4["stats"]
    assert isinstance(stats, dict) and stats["adverRx"] > 10  # it hears and accepts ipvsmgr's adverts
    # Only ipvsmgr speaks from the virtual MAC; FRR's macvlan is held protodown.
    assert any(p == "pa" and mac == VMAC4 and at >= t for at, p, mac in vlab.frames)
    assert not any(p == "pb" and mac == VMAC4 and at >= t for at, p, mac in vlab.frames)
    assert not [c for c in vlab.captured if c.src == ADDR4["b"] and c.at >= t]


def test_frr_higher_priority_is_master_ipvsmgr_backup_then_takes_over(vlab: VrrpLab) -> None:
    d = vlab.frr("b", 150)
    vlab.wait_for(lambda: frr_status(vlab, d) == "Master", 10, "FRR as Master")
    vlab.ipvsmgr("a", ipvsmgr_conf(100) + CONF, "im")
    vlab.wait_for(lambda: "-> BACKUP" in vlab.log("im"), 15, "ipvsmgr as backup")
    time.sleep(1.0)
    assert frr_status(vlab, d) == "Master"
    assert not vlab.has_address("a", VIP4, "vrrp4.51")
    # FRR's vrrpd stops (priority 0 advert): ipvsmgr takes over within its skew time.
    ping = Pinger(vlab.ns("c"), VIP4, 2.0)
    ping.start()
    time.sleep(0.3)
    event = time.monotonic()
    vlab.stop(d.vrrpd, signal.SIGTERM)
    took = vlab.wait_for(lambda: vlab.has_address("a", VIP4, "vrrp4.51"), 5, "ipvsmgr taking over")
    ping.join()
    assert took < 0.5, took
    assert vlab.neighbour("c", VIP4) == VMAC4
    outage = ping.outage(event)
    assert outage is not None and outage < 0.5, outage


def test_frr_preempts_when_it_returns_with_higher_priority(vlab: VrrpLab) -> None:
    vlab.ipvsmgr("a", ipvsmgr_conf(100) + CONF, "im")
    vlab.wait_for(lambda: vlab.has_address("a", VIP4, "vrrp4.51"), 15, "ipvsmgr as master")
    d = vlab.frr("b", 150)
    # FRR starts in Backup, hears a lower priority and preempts; ipvsmgr yields at once.
    vlab.wait_for(lambda: frr_status(vlab, d) == "Master", 10, "FRR preempting")
    vlab.wait_for(lambda: not vlab.has_address("a", VIP4, "vrrp4.51"), 5, "ipvsmgr releasing the VIP")
    time.sleep(0.5)
    assert frr_status(vlab, d) == "Master"
    assert not vlab.has_address("a", VIP4, "vrrp4.51")
