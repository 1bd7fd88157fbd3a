"""Small parts of the daemon: sd_notify over a real datagram socket, operator
name lookup, the overrides file, JSON logs, the status view."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import pytest

from ipvsmgr import lookup
from ipvsmgr.config import load_text
from ipvsmgr.ipvs.model import DestKey, ServiceKey
from ipvsmgr.logsetup import JsonFormatter
from ipvsmgr.reconcile.overrides import Overrides, OverrideStore
from ipvsmgr.sdnotify import Notifier
from ipvsmgr.statusview import render


def _receiver(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    return s


def test_notify_sends_key_value_datagrams(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with _receiver(path) as rx:
        n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
        assert n.enabled and n.watchdog == 2.0
        n.ready("2 virtual servers\nsecond line")
        assert rx.recv(4096) == b"READY=1\nSTATUS=2 virtual servers second line"
        n.reloading()
        msg = rx.recv(4096).decode().split("\n")
        assert msg[0] == "RELOADING=1" and msg[1].startswith("MONOTONIC_USEC=") and int(msg[1][15:]) > 0
        n.ping()
        assert rx.recv(4096) == b"WATCHDOG=1"
        n.stopping()
        assert rx.recv(4096) == b"STOPPING=1"
        n.close()


def test_notify_abstract_socket_and_absent_systemd() -> None:
    name = f"ipvsmgr-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind("\0" + name)
        rx.settimeout(2)
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        n.status("hello")
        assert rx.recv(100) == b"STATUS=hello"
    off = Notifier.from_env({})
    assert not off.enabled and off.watchdog == 0
    off.ready("nothing happens")
    # The watchdog belongs to another process: not ours to ping.
    assert Notifier.from_env({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog == 0


def test_notify_to_a_vanished_socket_is_counted_not_raised(tmp_path: Path) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    n.ready("x")
    assert n.errors == 1 and n.sent == 0


CFG = load_text(
    """\
virtual_servers:
  - name: web
    address: 198.18.0.10
    port: 80
    reals:
      - {address: 198.18.1.1, port: 8080}
      - {address: 198.18.1.1, port: 8081}
      - {address: 198.18.1.2}
  - name: v6
    address: "2001:db8::10"
    port: 443
    reals: [{address: "2001:db8::1"}]
""",
    "t.yaml",
)


def test_lookup_by_name_and_endpoint() -> None:
    web = lookup.virtual_server(CFG, "web")
    assert lookup.real(web, "198.18.1.1:8081")[1].port == 8081
    assert lookup.real(web, "198.18.1.2")[1].port == 80
    v6 = lookup.virtual_server(CFG, "v6")
    assert lookup.real(v6, "[2001:db8::1]:443")[1].addr == "2001:db8::1"
    assert lookup.real(v6, "2001:0db8::1")[1].addr == "2001:db8::1"  # any spelling of the address
    with pytest.raises(lookup.NotFound, match=r"no virtual server named 'x' \(virtual servers: v6, web\)"):
        lookup.virtual_server(CFG, "x")
    with pytest.raises(lookup.NotFound, match="matches several reals of 'web': give the port"):
        lookup.real(web, "198.18.1.1")
    with pytest.raises(
        lookup.NotFound, match=r"has no real 198.18.1.9 \(reals: 198.18.1.1:8080, 198.18.1.1:8081"
    ):
        lookup.real(web, "198.18.1.9")
    for bad in ("web1", "198.18.1.1:http", "[2001:db8::1", "1.2.3.4:70000"):
        with pytest.raises(lookup.NotFound):
            lookup.real(web, bad)


SK = ServiceKey(socket.AF_INET, 6, "198.18.0.10", 80)
DK = DestKey(socket.AF_INET, "198.18.1.1", 8080)


def test_overrides_round_trip_and_prune(tmp_path: Path) -> None:
    store = OverrideStore(str(tmp_path))
    assert store.load() == Overrides()
    o = Overrides(frozenset({(SK, DK)}), frozenset({SK}), frozenset({"vi_1"}))
    store.save(o)
    assert store.load() == o
    assert o.prune(set(), {SK}, set()) == Overrides(disabled=frozenset({SK}))
    Path(store.path).write_text("{not json")
    assert store.load() == Overrides()  # unreadable: warned about, not fatal


def test_json_log_lines_carry_extra_fields() -> None:
    rec = logging.LogRecord("ipvsmgr", logging.WARNING, __file__, 1, "real %s down", ("a",), None)
    rec.instance = "vi_1"
    out = json.loads(JsonFormatter().format(rec))
    assert out["msg"] == "real a down" and out["level"] == "warning" and out["instance"] == "vi_1"
    assert out["ts"].endswith("Z")


def test_status_view_shows_what_matters() -> None:
    st = {
        "daemon": {"version": "1", "pid": 7, "uptime_s": 3725, "config": "/etc/x.yaml",
                   "last_reload": {"at": 0, "ok": False, "problems": ["a", "b"]}, "kernel_error": None},
        "virtual_servers": [{
            "name": "web", "service": "tcp 198.18.0.10:80", "scheduler": "wrr", "in_kernel": True,
            "quorum": False, "disabled": False, "connections_total": 5, "cps": 1,
            "reals": [{"address": "198.18.1.1:8080", "sorry_server": False, "configured_weight": 10,
                       "weight": 0, "health": "down", "reason": "connect refused", "drained": True,
                       "active_connections": 2, "inactive_connections": 0, "connections_total": 9,
                       "cps": 0, "in_bytes_per_s": 2048, "out_bytes_per_s": 0}],
        }],
        "vrrp": [{"name": "vi_1", "interface": "eth0", "vrid": 51, "state": "backup", "priority": 1,
                  "configured_priority": 150, "master": "198.18.10.2", "released": True, "faults": {},
                  "virtual_mac": None}],
    }  # fmt: skip
    text = render(st)
    assert "up 1h02m" in text and "REFUSED (2 problems, previous config kept)" in text
    assert "quorum LOST" in text
    line = next(x for x in text.splitlines() if "198.18.1.1:8080" in x)
    assert "0/10" in line and "down" in line and "drained; connect refused" in line and "2.0k" in line
    vrrp = next(x for x in text.splitlines() if "vi_1" in x)
    assert "BACKUP" in vrrp and "1/150" in vrrp and "198.18.10.2" in vrrp and "released" in vrrp


def test_top_shows_connection_rates_between_samples() -> None:
    def st(conns: int) -> dict[str, object]:
        real = {"address": "198.18.1.1:8080", "connections_total": conns, "cps": 0, "active_connections": 1,
                "inactive_connections": 0, "weight": 5, "health": "up", "drained": False,
                "in_bytes_per_s": 0, "out_bytes_per_s": 0}  # fmt: skip
        return {
            "daemon": {"version": "1", "pid": 7, "uptime_s": 5},
            "virtual_servers": [{"name": "web", "service": "tcp 198.18.0.10:80", "connections_total": conns,
                                 "cps": 0, "quorum": None, "disabled": False, "reals": [real]}],
            "vrrp": [],
        }  # fmt: skip

    from ipvsmgr.statusview import render_top

    first = render_top(st(100), None, 0.0)
    assert "web  tcp 198.18.0.10:80  0 conn/s" in first
    second = render_top(st(130), st(100), 2.0)
    assert "15.0 conn/s" in second
    assert any("198.18.1.1:8080" in line and "15.0" in line for line in second.splitlines())


def test_status_view_names_the_vrrp_process_and_its_scheduling() -> None:
    def text(process: dict[str, object] | None) -> str:
        st = {
            "daemon": {"version": "1", "pid": 7, "uptime_s": 5, "config": "/etc/x.yaml", "last_reload": None,
                       "kernel_error": None, "vrrp_process": process},
            "virtual_servers": [],
            "vrrp": [{"name": "vi_1", "interface": "eth0", "vrid": 51, "state": "master", "priority": 150,
                      "configured_priority": 150, "master": None, "released": False, "faults": {},
                      "virtual_mac": None}],
        }  # fmt: skip
        return next(x for x in render(st).splitlines() if x.startswith("VRRP"))

    rr = {"policy": "rr", "priority": 10, "wanted": 10, "demotions": 0, "error": ""}
    assert text({"pid": 42, "restarts": 0, "scheduling": rr}) == "VRRP (process 42, SCHED_RR 10)"
    denied = {
        "policy": "other",
        "priority": 0,
        "wanted": 10,
        "demotions": 0,
        "error": "Operation not permitted",
    }
    assert text({"pid": 42, "restarts": 2, "scheduling": denied}) == (
        "VRRP (process 42, restarted 2x, NOT REAL-TIME (Operation not permitted))"
    )
    spent = {"policy": "other", "priority": 0, "wanted": 10, "demotions": 3, "error": ""}
    assert "NOT REAL-TIME (budget ran out 3x)" in text({"pid": 42, "restarts": 0, "scheduling": spent})
    off = {"policy": "other", "priority": 0, "wanted": 0, "demotions": 0, "error": ""}
    assert text({"pid": 42, "restarts": 0, "scheduling": off}) == "VRRP (process 42)"
    assert text(None) == "VRRP"
