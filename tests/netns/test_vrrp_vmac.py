"""VRRP with the RFC virtual MAC (00:00:5e:00:01:VRID), against keepalived's use_vmac.

Read from the outside: the client's neighbour table (`ip neigh`), the source
MAC of every frame through the peers' switch ports, `ip link` / sysctl in
the peers' namespaces.
"""

from __future__ import annotations

import signal
import socket
import time

import pytest

from tests.netns.lab import in_netns, sh
from tests.netns.vrrplab import (
    ADDR6,
    VIP4,
    VIP6,
    Pinger,
    VrrpLab,
    ipvsmgr_conf,
    keepalived,
    keepalived_conf,
)

VMAC4 = bytes.fromhex("00005e000133")  # VRID 51
VMAC6 = bytes.fromhex("00005e000233")
VMAC_CONF = "      virtual_mac: true\n"

pytestmark = pytest.mark.skipif(keepalived() is None, reason="keepalived is not installed (scripts/setup.sh)")


def conf(priority: int, vip: str = VIP4 + "/24") -> str:
    return ipvsmgr_conf(priority, vip=vip) + VMAC_CONF


def link_state(lab: VrrpLab, node: str, dev: str) -> str | None:
    out = sh("ip", "-n", lab.ns(node), "-br", "link", "show", dev, check=False).split()
    return out[1] if len(out) > 1 else None


def sent_from(lab: VrrpLab, port: str, mac: bytes, since: float) -> int:
    return sum(1 for at, p, src in lab.frames if p == port and src == mac and at >= since)


@pytest.fixture
def vlab(vrrp_lab: VrrpLab) -> VrrpLab:
    vrrp_lab.sniff("pa")
    vrrp_lab.sniff("pb")
    return vrrp_lab


def test_master_answers_from_the_virtual_mac_and_keepalived_takes_it_over(vlab: VrrpLab) -> None:
    vlab.keepalived("b", keepalived_conf(100, extra="    use_vmac\n"), "ka")
    im = vlab.ipvsmgr("a", conf(150), "im")
    vlab.wait_for(lambda: vlab.has_address("a", VIP4, "vrrp4.51"), 15, "the VIP on a's macvlan")
    assert not vlab.has_address("a", VIP4)  # on the macvlan, not on the base
    # The base keeps quiet about the VIP (no ARP reply, never the VIP as an ARP sender).
    assert vlab.sysctl("a", "net.ipv4.conf.eth0.arp_ignore") == "1"
    assert vlab.sysctl("a", "net.ipv4.conf.eth0.arp_announce") == "2"
    ping = Pinger(vlab.ns("c"), VIP4, 4.0)
    ping.start()
    time.sleep(1.0)
    # The client reached the VIP at the virtual MAC; a's adverts and GARPs come from it.
    assert vlab.neighbour("c", VIP4) == VMAC4
    adverts = [c for c in vlab.captured if c.src_mac == VMAC4]
    assert adverts and all(c.vrrp[0] == 0x31 and c.vrrp[1] == 51 for c in adverts)
    assert {mac for _, mac, addr in vlab.announced if addr == VIP4} == {VMAC4}
    # Graceful stop: keepalived takes over the VIP on its macvlan and speaks
    # from the same MAC. (keepalived leaves its base's ARP settings alone, so
    # its ARP requests, sent from the VIP, teach the client its base MAC:
    # what the client's table shows afterwards is keepalived's doing.)
    event = time.monotonic()
    vlab.stop(im)
    ping.join()
    assert vlab.has_address("b", VIP4, "vrrp.51")
    outage = ping.outage(event)
    assert outage is not None and outage < 0.5, outage
    assert sent_from(vlab, "pb", VMAC4, event) > 0  # now b speaks from the virtual MAC
    # a cleaned up: its macvlan is gone and the base's ARP settings are back.
    assert link_state(vlab, "a", "vrrp4.51") is None
    assert vlab.sysctl("a", "net.ipv4.conf.eth0.arp_ignore") == "0"
    assert vlab.sysctl("a", "net.ipv4.conf.eth0.arp_announce") == "0"


def test_backup_is_silent_on_the_virtual_mac_until_it_takes_over(vlab: VrrpLab) -> None:
    ka = vlab.keepalived("b", keepalived_conf(150, extra="    use_vmac\n"), "ka")
    vlab.wait_for(lambda: vlab.has_address("b", VIP4, "vrrp.51"), 15, "the VIP on keepalived's macvlan")
    vlab.ipvsmgr("a", conf(100), "im")
    vlab.wait_for(lambda: link_state(vlab, "a", "vrrp4.51") is not None, 15, "a's macvlan")
    time.sleep(1.0)
    t = time.monotonic()
    ping = Pinger(vlab.ns("c"), VIP4, 1.0)
    ping.start()
    ping.join()
    assert len(ping.replies) > 80
    # Backup: the macvlan is down and not one frame left a from the virtual MAC.
    assert link_state(vlab, "a", "vrrp4.51") == "DOWN"
    assert sent_from(vlab, "pa", VMAC4, t) == 0
    assert sent_from(vlab, "pb", VMAC4, t) > 0
    assert "-> BACKUP" in vlab.log("im")
    # keepalived crashes (killed, its link taken down): a takes over on the same MAC.
    ping = Pinger(vlab.ns("c"), VIP4, 3.0)
    ping.start()
    time.sleep(0.3)
    event = time.monotonic()
    vlab.stop(ka, signal.SIGKILL)
    vlab.link("b", up=False)
    ping.join()
    assert vlab.has_address("a", VIP4, "vrrp4.51")
    assert link_state(vlab, "a", "vrrp4.51") == "UP"
    assert vlab.neighbour("c", VIP4) == VMAC4
    assert sent_from(vlab, "pa", VMAC4, event) > 0
    outage = ping.outage(event)
    assert outage is not None and outage < 1.0, outage


def test_ipv6_virtual_mac(vlab: VrrpLab) -> None:
    im = vlab.ipvsmgr("a", conf(150, vip=VIP6 + "/64"), "im")
    vlab.wait_for(lambda: vlab.has_address("a", VIP6, "vrrp6.51"), 15, "the IPv6 VIP on a's macvlan")
    time.sleep(0.5)
    # Adverts leave from 00:00:5e:00:02:VRID, sourced at the base's link-local
    # (the macvlan has none: one per router would be the same everywhere).
    adverts = [c for c in vlab.captured if c.dst == "ff02::12"]
    assert adverts and {c.src_mac for c in adverts} == {VMAC6}
    base_ll = sh(
        "ip", "-n", vlab.ns("a"), "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"
    ).split()[3]
    assert {c.src for c in adverts} == {base_ll.split("/")[0]}
    assert "inet6" not in sh(
        "ip", "-n", vlab.ns("a"), "-6", "-o", "addr", "show", "dev", "vrrp6.51", "scope", "link"
    )
    assert {mac for _, mac, addr in vlab.announced if addr == VIP6} == {VMAC6}

    # The client resolves the VIP (neighbour solicitation) to the virtual MAC.
    def poke() -> None:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        with s:
            s.sendto(b"x", (VIP6, 9))

    for _ in range(20):
        in_netns(vlab.ns("c"), poke)
        time.sleep(0.05)
        if vlab.neighbour("c", VIP6) is not None:
            break
    assert vlab.neighbour("c", VIP6) == VMAC6
    assert ADDR6["a"] not in {c.src for c in adverts}
    vlab.stop(im)
    assert link_state(vlab, "a", "vrrp6.51") is None


def test_an_interface_in_the_way_is_refused_not_deleted(vlab: VrrpLab) -> None:
    sh("ip", "-n", vlab.ns("a"), "link", "add", "vrrp4.51", "type", "veth", "peer", "name", "other")
    im = vlab.ipvsmgr("a", conf(150), "im")
    assert im.wait(timeout=30) != 0
    assert "cannot start VRRP: vrrp4.51 exists and is not a macvlan (veth): not touching it" in vlab.log("im")
    assert "Traceback" not in vlab.log("im")
    assert link_state(vlab, "a", "vrrp4.51") is not None
    assert vlab.sysctl("a", "net.ipv4.conf.eth0.arp_ignore") == "0"
