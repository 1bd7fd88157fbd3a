"""VRRP between ipvsmgr and keepalived 2.2.7 on a bridged LAN of namespaces.

The peers' roles are read from the outside: which namespace holds the VIP
(`ip addr`) and what is on the wire (an AF_PACKET sniffer in the client
namespace). Intervals are 0.1 s to keep the tests short.
"""

from __future__ import annotations

import ipaddress
import signal
import time

import pytest

from tests.netns.vrrplab import ADDR4, VIP4, VIP6, VrrpLab, ipvsmgr_conf, keepalived, keepalived_conf
from vrrp.packet import GROUP4, Advert, decode, encode

pytestmark = pytest.mark.skipif(keepalived() is None, reason="keepalived is not installed (scripts/setup.sh)")


@pytest.fixture
def vlab(vrrp_lab: VrrpLab) -> VrrpLab:
    vrrp_lab.sniff()
    return vrrp_lab


def settle(lab: VrrpLab, master: str, backup: str, vip: str = VIP4, timeout: float = 15.0) -> None:
    lab.wait_for(lambda: lab.has_address(master, vip), timeout, f"{vip} on {master}")
    time.sleep(1.0)  # a few more intervals: it must stay there, alone
    assert lab.has_address(master, vip)
    assert not lab.has_address(backup, vip)


def adverts_from(lab: VrrpLab, node_addr: str, since: float) -> list[bytes]:
    return [c.vrrp for c in lab.captured if c.src == node_addr and c.at >= since]


def test_ipvsmgr_higher_priority_is_master_keepalived_backup(vlab: VrrpLab) -> None:
    vlab.keepalived("b", keepalived_conf(100), "ka")
    vlab.ipvsmgr("a", ipvsmgr_conf(150), "im")
    settle(vlab, "a", "b")
    t = time.monotonic()
    time.sleep(0.5)
    # Only ipvsmgr advertises (keepalived, as backup, is silent), ~10 per second.
    assert not adverts_from(vlab, ADDR4["b"], t)
    assert 3 <= len(adverts_from(vlab, ADDR4["a"], t)) <= 7
    # Becoming master, a announced the VIP: 5 gratuitous ARPs (the default count) with its MAC.
    garps = [mac for _, mac, addr in vlab.announced if addr == VIP4]
    assert garps.count(vlab.mac("a")) >= 5


def test_keepalived_higher_priority_is_master_ipvsmgr_backup(vlab: VrrpLab) -> None:
    vlab.ipvsmgr("a", ipvsmgr_conf(100), "im")
    vlab.keepalived("b", keepalived_conf(150), "ka")
    settle(vlab, "b", "a")
    assert "-> BACKUP" in vlab.log("im")


def test_advert_is_byte_identical_to_keepalived(vlab: VrrpLab) -> None:
    # The same VRID, priority, interval and VIP, sent from the same address
    # (one after the other on node a): the VRRP messages are equal byte for byte.
    conf_i = ipvsmgr_conf(150, interval="1s", vip=VIP4)
    conf_k = keepalived_conf(150, interval="1", vip=VIP4)
    ka = vlab.keepalived("a", conf_k, "ka")
    vlab.wait_for(lambda: bool(adverts_from(vlab, ADDR4["a"], 0)), 15, "a keepalived advert")
    vlab.stop(ka)
    k_frames = [c for c in vlab.captured if c.src == ADDR4["a"] and c.vrrp[2] != 0]
    t = time.monotonic()
    im = vlab.ipvsmgr("a", conf_i, "im")
    vlab.wait_for(lambda: bool(adverts_from(vlab, ADDR4["a"], t)), 15, "an ipvsmgr advert")
    vlab.stop(im)
    i_frames = [c for c in vlab.captured if c.src == ADDR4["a"] and c.at >= t and c.vrrp[2] != 0]
    k, i = k_frames[0], i_frames[0]
    assert i.vrrp == k.vrrp, (i.vrrp.hex(" "), k.vrrp.hex(" "))
    assert (i.ttl, i.tos) == (k.ttl, k.tos) == (255, 0xC0)
    expected = encode(
        Advert(3, 51, 150, 100, (ipaddress.IPv4Address(VIP4),)), ipaddress.IPv4Address(ADDR4["a"]), GROUP4
    )
    assert i.vrrp == expected

    # ... and a graceful stop of either says priority 0
    def zeros() -> int:
        return sum(1 for c in vlab.captured if c.src == ADDR4["a"] and c.vrrp[2] == 0)

    vlab.wait_for(lambda: zeros() >= 2, 2, "a priority-0 advert from each on stop")


def test_preempt_matches_keepalived(vlab: VrrpLab) -> None:
    # keepalived (100) is master alone; ipvsmgr (150, preempt) arrives and takes over.
    vlab.keepalived("b", keepalived_conf(100), "ka")
    vlab.wait_for(lambda: vlab.has_address("b", VIP4), 15, "keepalived master")
    vlab.ipvsmgr("a", ipvsmgr_conf(150), "im")
    settle(vlab, "a", "b")


def test_no_preempt_matches_keepalived(vlab: VrrpLab) -> None:
    # Both without preemption: the master that is there stays, whoever has the higher priority.
    vlab.keepalived("b", keepalived_conf(100, preempt=False), "ka")
    vlab.wait_for(lambda: vlab.has_address("b", VIP4), 15, "keepalived master")
    vlab.ipvsmgr("a", ipvsmgr_conf(150, preempt=False), "im")
    time.sleep(2.0)
    assert vlab.has_address("b", VIP4) and not vlab.has_address("a", VIP4)
    # ...and the reverse: ipvsmgr master first, keepalived with a higher priority stays backup.
    for p in list(vlab.procs):
        vlab.stop(p)
    vlab.ipvsmgr("a", ipvsmgr_conf(100, preempt=False), "im2")
    vlab.wait_for(lambda: vlab.has_address("a", VIP4), 15, "ipvsmgr master")
    vlab.keepalived("b", keepalived_conf(150, preempt=False), "ka2")
    time.sleep(2.0)
    assert vlab.has_address("a", VIP4) and not vlab.has_address("b", VIP4)


def test_graceful_stop_hands_over_within_skew_time(vlab: VrrpLab) -> None:
    vlab.keepalived("b", keepalived_conf(100), "ka")
    im = vlab.ipvsmgr("a", ipvsmgr_conf(150), "im")
    settle(vlab, "a", "b")
    t = time.monotonic()
    vlab.stop(im, signal.SIGTERM)
    took = vlab.wait_for(lambda: vlab.has_address("b", VIP4), 5, "keepalived takes over")
    assert not vlab.has_address("a", VIP4)  # released on stop
    assert took < 0.5
    zero = [c for c in vlab.captured if c.src == ADDR4["a"] and c.at >= t - 0.1 and c.vrrp[2] == 0]
    assert zero, "no priority-0 advert on stop"


def test_unicast_peering_with_keepalived(vlab: VrrpLab) -> None:
    extra_i = f"      unicast_peers: [{ADDR4['b']}]\n"
    extra_k = f"    unicast_src_ip {ADDR4['b']}\n    unicast_peer {{\n        {ADDR4['a']}\n    }}\n"
    vlab.keepalived("b", keepalived_conf(100, extra=extra_k), "ka")
    vlab.ipvsmgr("a", ipvsmgr_conf(150, extra=extra_i), "im")
    settle(vlab, "a", "b")
    sent = [c for c in vlab.captured if c.src == ADDR4["a"]]
    assert sent and {c.dst for c in sent} == {ADDR4["b"]}  # never the multicast group
    out = decode(sent[-1].vrrp, ipaddress.IPv4Address(ADDR4["a"]), ipaddress.IPv4Address(ADDR4["b"]), 255)
    assert isinstance(out, Advert) and out.priority == 150


def test_ipv6_vrrpv3_with_keepalived(vlab: VrrpLab) -> None:
    vlab.keepalived("b", keepalived_conf(100, vip=VIP6 + "/64"), "ka")
    vlab.ipvsmgr("a", ipvsmgr_conf(150, vip=VIP6 + "/64"), "im")
    settle(vlab, "a", "b", vip=VIP6)
    v6 = [c for c in vlab.captured if ":" in c.src]
    assert v6, "no IPv6 adverts seen"
    mine = [c for c in v6 if c.src.startswith("fe80:") and c.vrrp[2] == 150]
    assert mine and all(c.ttl == 255 for c in mine)
    src = ipaddress.IPv6Address(mine[-1].src)
    out = decode(mine[-1].vrrp, src, ipaddress.IPv6Address("ff02::12"), 255)
    assert isinstance(out, Advert) and out.addresses == (ipaddress.IPv6Address(VIP6),)
    # ...and announced the VIP with unsolicited neighbour advertisements carrying a's MAC.
    assert [mac for _, mac, addr in vlab.announced if addr == VIP6].count(vlab.mac("a")) >= 5


@pytest.mark.parametrize("ipvsmgr_master", [True, False])
def test_vrrpv2_with_keepalived(vlab: VrrpLab, ipvsmgr_master: bool) -> None:
    high, low = (150, 100) if ipvsmgr_master else (100, 150)
    vlab.keepalived("b", keepalived_conf(low, interval="1", version=2), "ka")
    vlab.ipvsmgr("a", ipvsmgr_conf(high, interval="1s", version=2), "im")
    master, backup = ("a", "b") if ipvsmgr_master else ("b", "a")
    settle(vlab, master, backup)
    v2 = [c.vrrp for c in vlab.captured if c.vrrp[0] == 0x21]
    assert v2, "no VRRPv2 adverts on the wire"
    assert not [c for c in vlab.captured if c.vrrp[0] == 0x31]  # and no v3


KA_PASS = (
    "    authentication {\n        auth_type PASS\n        auth_pass k@l!ve1\n    }\n"  # keepalived reads k@l
)


@pytest.mark.parametrize("ipvsmgr_master", [True, False])
def test_vrrpv2_pass_authentication_with_keepalived(vlab: VrrpLab, ipvsmgr_master: bool) -> None:
    high, low = (150, 100) if ipvsmgr_master else (100, 150)
    auth = "      authentication: {type: pass, password: k@l}\n"
    ka = vlab.keepalived("b", keepalived_conf(low, interval="1", version=2, extra=KA_PASS), "ka")
    im = vlab.ipvsmgr("a", ipvsmgr_conf(high, interval="1s", version=2, extra=auth), "im")
    master, backup = ("a", "b") if ipvsmgr_master else ("b", "a")
    settle(vlab, master, backup)  # each accepts the other's adverts: one master
    sent = [c.vrrp for c in vlab.captured if c.vrrp[0] == 0x21 and c.vrrp[2] == 150]  # the master's
    assert sent and all(v[4] == 1 and v[-8:] == b"k@l\0\0\0\0\0" for v in sent), sent[:1]
    # the control: with another password each drops the other's adverts, and both are masters
    vlab.stop(im)
    vlab.stop(ka)
    vlab.keepalived("b", keepalived_conf(100, interval="1", version=2, extra=KA_PASS), "ka2")
    vlab.ipvsmgr("a", ipvsmgr_conf(150, interval="1s", version=2, extra=auth.replace("k@l", "k@l2")), "im2")
    vlab.wait_for(lambda: vlab.has_address("a", VIP4) and vlab.has_address("b", VIP4), 15, "two masters")
    vlab.wait_for(lambda: "another authentication password" in vlab.log("im2"), 5, "the drop's reason logged")


OTHER_LIST = (f"{VIP4}/24", "198.18.10.101/24")


@pytest.mark.parametrize("version", [3, 2])
def test_an_owner_with_another_address_list_is_obeyed(vlab: VrrpLab, version: int) -> None:
    """RFC 5798 / RFC 3768 7.1: an advert from the address owner (priority 255) is
    accepted even when its address list differs: ipvsmgr as backup of a keepalived owner
    that has one address more stays backup instead of becoming a second master.
    (The other way round keepalived 2.2.7 itself drops the owner's advert, "received an
    unexpected ip number count", and takes the VIPs too: keep the lists equal.)"""
    interval = "1" if version == 2 else "0.1"
    ka = keepalived_conf(255, vip="\n        ".join(OTHER_LIST), version=version, interval=interval)
    vlab.keepalived("b", ka, "ka")
    settle(vlab, "b", "a")
    since = time.monotonic()
    vlab.ipvsmgr("a", ipvsmgr_conf(100, version=version, interval="1s" if version == 2 else "100ms"), "im")
    time.sleep(
        4.0 if version == 2 else 2.0
    )  # past Master_Down: a backup dropping the adverts is master by now
    assert vlab.has_address("b", VIP4) and not vlab.has_address("a", VIP4)
    assert not adverts_from(vlab, ADDR4["a"], since), "ipvsmgr advertised beside the owner"
