"""The VRRP service in-process on a real LAN of namespaces: what it drops and
counts, tracking, sync groups and notify hooks.

The service runs on an asyncio loop in a thread inside namespace a; packets
are forged in namespace b with IP_HDRINCL raw sockets (any TTL, any bytes).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.netns.lab import enter, in_netns, sh
from tests.netns.vrrplab import ADDR4, VIP4, VrrpLab
from vrrp.instance import (
    InstanceConfig,
    TrackFile,
    TrackInterface,
    TrackScript,
    TrackVirtualServer,
    parse_vip,
)
from vrrp.machine import Params, State
from vrrp.packet import GROUP4, Advert, encode
from vrrp.service import VrrpService

A, B = ipaddress.IPv4Address(ADDR4["a"]), ipaddress.IPv4Address(ADDR4["b"])
VIP = ipaddress.IPv4Address(VIP4)


@pytest.fixture
def vlab(vrrp_lab: VrrpLab) -> VrrpLab:
    return vrrp_lab  # no sniffer: the tests that read the wire start one


class Running:
    """A VrrpService on its own loop in a thread inside a namespace."""

    def __init__(self, ns: str, instances: list[InstanceConfig], groups: tuple[Any, ...] = ()) -> None:
        self.loop = asyncio.new_event_loop()
        self.service: VrrpService | None = None
        self.transitions: list[tuple[str, str, str, str]] = []
        ready = threading.Event()
        self.error: BaseException | None = None

        def body() -> None:
            enter(ns)
            asyncio.set_event_loop(self.loop)

            async def start() -> None:
                self.service = VrrpService(instances, groups)
                self.service.listeners.append(
                    lambda n, o, new, r: self.transitions.append((n, o.value, new.value, r))
                )
                await self.service.start()

            try:
                self.loop.run_until_complete(start())
            except BaseException as e:
                self.error = e
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()
        ready.wait(10)
        if self.error is not None:
            raise self.error

    def call(self, fn: Callable[[VrrpService], Any]) -> Any:
        async def run() -> Any:
            assert self.service is not None
            return fn(self.service)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def state(self, name: str = "vi") -> State:
        return self.call(lambda s: s.state(name))  # type: ignore[no-any-return]

    def stop(self) -> None:
        async def stop() -> None:
            assert self.service is not None
            await self.service.stop()
            self.service.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def instance(priority: int = 100, interval_cs: int = 10, **kw: Any) -> InstanceConfig:
    base: dict[str, Any] = {
        "name": "vi",
        "interface": "eth0",
        "params": Params(vrid=51, priority=priority, interval_cs=interval_cs),
        "vips": (parse_vip(VIP4 + "/24"),),
    }
    return InstanceConfig(**{**base, **kw})


def ip_header(src: str, dst: str, ttl: int, payload_len: int) -> bytes:
    return struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0xC0, 20 + payload_len, 0, 0, ttl, 112, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip


def forge(
    lab: VrrpLab, packets: list[tuple[int, bytes]], src: str = ADDR4["b"], dst: str = str(GROUP4)
) -> None:
    """Send each (ttl, VRRP bytes) from namespace b with a hand-made IP header."""

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
            for ttl, data in packets:
                s.sendto(ip_header(src, dst, ttl, len(data)) + data, (dst, 0))

    in_netns(lab.ns("b"), send)


def advert(
    priority: int = 200, vrid: int = 51, interval_cs: int = 10, vips: tuple[Any, ...] = (VIP,)
) -> bytes:
    return encode(Advert(3, vrid, priority, interval_cs, vips), B, GROUP4)


def wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_malformed_and_spoofed_adverts_are_dropped_and_counted(vlab: VrrpLab) -> None:
    r = Running(vlab.ns("a"), [instance(priority=100)])
    try:
        wait(lambda: r.state() is State.MASTER, 5, "master alone")
        good = advert()
        bad_sum = bytearray(good)
        bad_sum[6] ^= 0xFF
        forge(
            vlab,
            [
                (64, good),  # TTL 64: not from the link
                (255, bytes(bad_sum)),
                (255, advert(vrid=52)),  # not our VRID
                (255, good[:10]),  # truncated inside the address list
                (255, good[:5]),  # truncated header
                (255, advert(vips=(ipaddress.IPv4Address("198.18.10.200"),))),  # another VIP list
                (255, bytes([0x41]) + good[1:]),  # version 4
            ],
        )
        expect = {
            "ttl_not_255": 1, "bad_checksum": 1, "unknown_vrid": 1, "truncated": 2,
            "address_list_mismatch": 1, "bad_version": 1,
        }  # fmt: skip
        wait(lambda: dict(r.call(lambda s: s.drops)) == expect, 5, f"drop counters {expect}")
        # each counted against the instance its VRID byte names (keepalived's per-instance errors),
        # but for the VRID nobody has
        per = r.call(lambda s: s.drop_counts())
        name = instance().name
        assert per == {(name, reason): n for reason, n in expect.items() if reason != "unknown_vrid"} | {
            ("", "unknown_vrid"): 1
        }, per
        assert r.state() is State.MASTER  # none of them moved us; nothing raised
        # ...and a valid higher-priority advert does.
        forge(vlab, [(255, good)])
        wait(lambda: r.state() is State.BACKUP, 5, "backup after a valid higher advert")
        assert not vlab.has_address("a", VIP4)
    finally:
        r.stop()


def test_unicast_instance_drops_strangers(vlab: VrrpLab) -> None:
    cfg = instance(priority=100, unicast_peers=(ipaddress.IPv4Address(ADDR4["c"]),))
    r = Running(vlab.ns("a"), [cfg])
    try:
        wait(lambda: r.state() is State.MASTER, 5, "master")
        forge(vlab, [(255, encode(Advert(3, 51, 200, 10, (VIP,)), B, A))], dst=ADDR4["a"])
        wait(lambda: r.call(lambda s: s.drops["unknown_peer"]) == 1, 5, "unknown_peer counted")
        assert r.state() is State.MASTER
    finally:
        r.stop()


def test_interface_tracking_faults_and_recovers(vlab: VrrpLab) -> None:
    # a veth pair inside a (the host kernel has no dummy driver); its carrier needs both ends up
    sh("ip", "-n", vlab.ns("a"), "link", "add", "uplink", "type", "veth", "peer", "name", "uplink-peer")
    sh("ip", "-n", vlab.ns("a"), "link", "set", "uplink-peer", "up")
    sh("ip", "-n", vlab.ns("a"), "link", "set", "uplink", "up")
    cfg = instance(track_interfaces=(TrackInterface("uplink", 0),))
    r = Running(vlab.ns("a"), [cfg])
    try:
        wait(lambda: r.state() is State.MASTER, 5, "master")
        assert vlab.has_address("a", VIP4)
        sh("ip", "-n", vlab.ns("a"), "link", "set", "uplink", "down")
        # within 1 s: a netlink event, not the 5 s re-check
        wait(lambda: r.state() is State.FAULT, 1.0, "fault when the tracked link goes down")
        assert not vlab.has_address("a", VIP4)
        sh("ip", "-n", vlab.ns("a"), "link", "set", "uplink", "up")
        wait(lambda: r.state() is State.MASTER, 5, "master again after recovery")
        reasons = [t[3] for t in r.transitions]
        assert "uplink down" in reasons
    finally:
        r.stop()


def test_priority_tracking_hands_over_to_a_keepalived_peer(vlab: VrrpLab) -> None:
    from tests.netns.vrrplab import keepalived_conf

    weight_file = vlab.work / "weight"
    weight_file.write_text("0\n")
    cfg = instance(
        priority=150,
        track_files=(TrackFile(str(weight_file), -1),),
        track_virtual_servers=(TrackVirtualServer("web", -100),),
    )
    vlab.keepalived("b", keepalived_conf(100), "ka")
    r = Running(vlab.ns("a"), [cfg])
    try:
        wait(lambda: vlab.has_address("a", VIP4), 10, "ipvsmgr master")
        r.call(lambda s: s.set_virtual_server("web", False))  # 150 - 100 = 50 < 100
        wait(
            lambda: vlab.has_address("b", VIP4) and not vlab.has_address("a", VIP4),
            5,
            "keepalived takes over",
        )
        assert r.state() is State.BACKUP
        r.call(lambda s: s.set_virtual_server("web", True))
        wait(lambda: vlab.has_address("a", VIP4), 5, "ipvsmgr preempts back")
        weight_file.write_text("60\n")  # 150 - 60 = 90 < 100
        wait(lambda: vlab.has_address("b", VIP4), 5, "keepalived takes over on the file weight")
        assert r.call(lambda s: s.status()[0]["priority"]) == 90
    finally:
        r.stop()


def test_track_file_weight_0_and_below_253_fault_as_in_keepalived(vrrp_lab: VrrpLab) -> None:
    lab = vrrp_lab
    flag, weight = lab.work / "flag", lab.work / "weight"
    flag.write_text("0\n")
    weight.write_text("0\n")
    cfg = instance(priority=150, track_files=(TrackFile(str(flag), 0), TrackFile(str(weight), -1)))
    r = Running(lab.ns("a"), [cfg])
    try:
        wait(lambda: r.state() is State.MASTER, 5, "master")
        flag.write_text("1\n")  # weight 0: any non-zero value is a FAULT
        wait(lambda: r.state() is State.FAULT, 3, "FAULT on the flag file")
        flag.write_text("0\n")
        wait(lambda: r.state() is State.MASTER, 5, "master again")
        weight.write_text("200\n")  # -200: priority 1 at worst, still master alone
        time.sleep(1.0)
        assert r.state() is State.MASTER
        weight.write_text("254\n")  # -254 is below -253: a FAULT
        wait(lambda: r.state() is State.FAULT, 3, "FAULT below -253")
    finally:
        r.stop()


KA_TWO = """\
global_defs {
    router_id ka
    vrrp_version 3
}
vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int 0.1
    virtual_ipaddress {
        %s/24
    }
}
vrrp_instance VI_2 {
    state BACKUP
    interface eth0
    virtual_router_id 52
    priority 100
    advert_int 0.1
    virtual_ipaddress {
        %s/24
    }
}
"""


def test_sync_group_moves_together(vlab: VrrpLab) -> None:
    vip2 = "198.18.10.101"
    weight_file = vlab.work / "weight"
    weight_file.write_text("0\n")
    one = instance(priority=150, name="one", track_files=(TrackFile(str(weight_file), -100),))
    two = instance(priority=150, name="two", params=Params(52, 150, 10), vips=(parse_vip(vip2 + "/24"),))
    vlab.keepalived("b", KA_TWO % (VIP4, vip2), "ka")
    r = Running(vlab.ns("a"), [one, two], (("g", ("one", "two")),))
    try:
        wait(lambda: vlab.has_address("a", VIP4) and vlab.has_address("a", vip2), 10, "both on a")
        # Only instance one loses priority (150 - 100); the group takes two along to keepalived.
        weight_file.write_text("1\n")
        on_b = [(n, v) for n in ("a", "b") for v in (VIP4, vip2)]
        wait(lambda: [vlab.has_address(n, v) for n, v in on_b] == [False, False, True, True], 5, "both on b")
        assert ("two", "master", "backup", "sync group g: one is backup") in r.transitions
        weight_file.write_text("0\n")  # one preempts back, and two with it
        wait(lambda: vlab.has_address("a", VIP4) and vlab.has_address("a", vip2), 5, "both back on a")
        assert not vlab.has_address("b", vip2)
    finally:
        r.stop()


def test_notify_runs_with_instance_state_and_priority(vlab: VrrpLab) -> None:
    out = vlab.work / "notify.out"
    script = vlab.work / "notify.py"
    script.write_text(f"import sys\nopen({str(out)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n")
    r = Running(vlab.ns("a"), [instance(priority=120, notify=(sys.executable, str(script)))])
    try:
        wait(lambda: out.exists() and "vi master 120" in out.read_text(), 5, "notify master")
    finally:
        r.stop()
    wait(lambda: "vi init 120" in out.read_text(), 5, "notify init on stop")
    assert out.read_text().splitlines()[0] == "vi backup 120"


def test_script_tracking_faults_while_the_script_fails(vlab: VrrpLab) -> None:
    flag = vlab.work / "healthy"
    flag.write_text("")
    script = TrackScript(("/usr/bin/test", "-e", str(flag)), interval=0.1, timeout=1.0, weight=0, fall=2)
    r = Running(vlab.ns("a"), [instance(track_scripts=(script,))])
    try:
        wait(lambda: r.state() is State.MASTER, 5, "master")
        flag.unlink()
        wait(lambda: r.state() is State.FAULT, 5, "fault once the script fails twice")
        assert not vlab.has_address("a", VIP4)
        assert any(t[3] == "script /usr/bin/test: script exit 1" for t in r.transitions), r.transitions
        flag.write_text("")
        wait(lambda: r.state() is State.MASTER, 5, "master again")
    finally:
        r.stop()


def test_reload_keeps_unchanged_instances_running(vlab: VrrpLab) -> None:
    vip2, vip3 = "198.18.10.101", "198.18.10.102"
    one = instance(priority=150, name="one")
    two = instance(priority=150, name="two", params=Params(52, 150, 10), vips=(parse_vip(vip2 + "/24"),))
    four = instance(
        priority=150, name="four", params=Params(54, 150, 10), vips=(parse_vip("198.18.10.104/24"),)
    )
    r = Running(vlab.ns("a"), [one, two, four])
    try:
        wait(lambda: all(r.state(n) is State.MASTER for n in ("one", "two", "four")), 5, "all master")
        before = {s["name"]: s["transitions"] for s in r.call(lambda s: s.status())}
        vlab.sniff()
        t = time.monotonic()
        # one unchanged; two: another priority (applied in place); four: another
        # interval (a different router on the wire: restarted); three: new
        two_b = instance(
            priority=140, name="two", params=Params(52, 140, 10), vips=(parse_vip(vip2 + "/24"),)
        )
        four_b = instance(
            priority=150, name="four", params=Params(54, 150, 20), vips=(parse_vip("198.18.10.104/24"),)
        )
        three = instance(
            priority=120, name="three", params=Params(53, 120, 10), vips=(parse_vip(vip3 + "/24"),)
        )
        assert r.call(lambda s: s.update([one, two_b, three, four_b])) == (["three"], [], ["four"])
        wait(lambda: all(r.state(n) is State.MASTER for n in ("three", "four")), 5, "three and four master")
        after = {s["name"]: s["transitions"] for s in r.call(lambda s: s.status())}
        assert after["one"] == before["one"] and after["two"] == before["two"]  # no transition at all
        assert vlab.has_address("a", VIP4) and vlab.has_address("a", vip2)
        time.sleep(0.3)
        ones = [c.vrrp[2] for c in vlab.captured if c.at >= t and c.vrrp[1] == 51]
        assert ones and set(ones) == {150}  # never a priority 0, never a gap
        twos = [c.vrrp[2] for c in vlab.captured if c.at >= t and c.vrrp[1] == 52]
        assert twos and 0 not in twos and twos[-1] == 140  # the new priority, advertised at once
        # removing two releases its VIP with a priority-0 advert
        assert r.call(lambda s: s.update([one, three, four_b])) == ([], ["two"], [])
        wait(lambda: not vlab.has_address("a", vip2), 5, "two's VIP released")
        assert any(c.vrrp[1] == 52 and c.vrrp[2] == 0 for c in vlab.captured)
    finally:
        r.stop()
