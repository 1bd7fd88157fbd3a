"""Reconciler behaviour against the real kernel: drift, ownership, drains, batching."""

from __future__ import annotations

import socket
import struct
import time

from ipvsmgr.ipvs import client as ipvs_client
from ipvsmgr.ipvs import constants as c
from ipvsmgr.ipvs.client import IPVSClient
from ipvsmgr.ipvs.model import Destination, DestKey, Service, ServiceKey, SyncDaemon
from ipvsmgr.reconcile.operations import DeleteReal, EditReal
from tests.kernel.helpers import Lab, connect, ipvsadm, listener, rules

BASE = """
ipvs:
  timeouts: {tcp_fin: 2s}
  drain_timeout: 60s
virtual_servers:
  - name: web
    address: 198.18.0.10
    port: 80
    scheduler: wrr
    reals:
      - {address: 198.18.2.2, port: 8080, weight: 5}
      - {address: 198.18.2.3, port: 8080, weight: 5}
  - name: dns6
    address: "2001:db8::53"
    port: 53
    protocol: udp
    scheduler: mh
    scheduler_flags: [mh-fallback, mh-port]
    reals:
      - {address: "2001:db8:1::1"}
"""


def kinds(rnd: object) -> list[str]:
    return [type(op).__name__ for op in rnd.plan.operations]  # type: ignore[attr-defined]


def test_zero_writes_when_kernel_matches(ipvs: Lab) -> None:
    ipvs.reconcile(BASE)
    with IPVSClient() as fresh:
        from ipvsmgr.config import load_text
        from ipvsmgr.reconcile import engine
        from ipvsmgr.reconcile.state import StateStore

        store = StateStore(ipvs.state_dir)
        rnd = engine.plan(load_text(BASE, "t.yaml"), fresh, store)
        engine.apply(rnd, fresh, store)
        assert rnd.plan.operations == []
        assert fresh.write_requests == 0


def test_drift_behind_our_back_is_repaired(ipvs: Lab) -> None:
    ipvs.reconcile(BASE)
    want = rules()
    ipvsadm("-e", "-t", "198.18.0.10:80", "-r", "198.18.2.2:8080", "-m", "-w", "1")
    ipvsadm("-E", "-t", "198.18.0.10:80", "-s", "rr")
    ipvsadm("-d", "-u", "[2001:db8::53]:53", "-r", "[2001:db8:1::1]:53")
    ipvsadm("-a", "-t", "198.18.0.10:80", "-r", "198.18.2.9:8080", "-m")  # a stranger in our service
    ipvsadm("--set", "900", "120", "300")
    rnd = ipvs.reconcile(BASE)
    assert sorted(kinds(rnd)) == sorted(["SetTimeouts", "EditService", "EditReal", "AddReal", "DeleteReal"])
    assert rules() == want
    assert ipvsadm("-L", "--timeout").split()[-3:] == ["900", "2", "300"]
    assert kinds(ipvs.reconcile(BASE)) == []


def test_foreign_services_are_never_touched(ipvs: Lab) -> None:
    ipvsadm("-A", "-t", "198.18.0.99:25", "-s", "rr")
    ipvsadm("-a", "-t", "198.18.0.99:25", "-r", "198.18.2.50:25", "-m")
    foreign = [r for r in rules() if "198.18.0.99" in r]
    ipvs.reconcile(BASE)
    assert all(r in rules() for r in foreign)
    # removing everything from the config removes only what we own
    rnd = ipvs.reconcile("virtual_servers: []\n")
    assert sorted(kinds(rnd)) == ["DeleteService", "DeleteService"]
    assert rules() == sorted(foreign)


def test_adopts_existing_service_on_first_run(ipvs: Lab) -> None:
    """A service the config declares is ours even if another run or tool created it."""
    ipvsadm("-A", "-t", "198.18.0.10:80", "-s", "rr")
    ipvsadm("-a", "-t", "198.18.0.10:80", "-r", "198.18.2.2:8080", "-m", "-w", "5")
    rnd = ipvs.reconcile(BASE)
    web = [o for o in rnd.plan.operations if "198.18.0.10:80" in o.text()]
    assert [o.text() for o in web] == [
        "~ service tcp 198.18.0.10:80 scheduler rr -> wrr",
        "+ real 198.18.2.3:8080 of tcp 198.18.0.10:80 nat weight 5",
    ]


def test_batched_failures_map_to_their_request(ipvs: Lab) -> None:
    """600 requests in batches of 256; the kernel refuses exactly the duplicates."""
    key = ServiceKey(socket.AF_INET, c.IPPROTO_TCP, "198.18.0.20", 80)
    reqs = [ipvs_client.new_service(Service(key, "rr"))]
    dupes = {100, 257, 511}
    for i in range(599):
        n = i - 1 if i in dupes else i
        dest = Destination(DestKey(socket.AF_INET, f"198.19.{n >> 8}.{n & 255}", 80))
        reqs.append(ipvs_client.new_dest(key, dest))
    with IPVSClient() as cl:
        failures = cl.execute(reqs)
        assert cl.sends == 3 + 1  # family lookup + ceil(600 / 256)
    assert sorted(f.index - 1 for f in failures) == sorted(dupes)
    assert {f.errno for f in failures} == {17}  # EEXIST
    assert "add real 198.19.0.99:80 of tcp 198.18.0.20:80: File exists" in str(failures[0])
    assert len(rules()) == 1 + 599 - len(dupes)


def test_sync_daemon_start_query_stop(ipvs: Lab) -> None:
    with IPVSClient() as cl:
        cl.execute_one(ipvs_client.new_daemon(SyncDaemon(c.IP_VS_STATE_BACKUP, "lo", 9)))
        assert cl.daemons() == [SyncDaemon(c.IP_VS_STATE_BACKUP, "lo", 9)]
        assert "backup sync daemon (mcast=lo, syncid=9" in ipvsadm("-L", "--daemon")
        cl.execute_one(ipvs_client.del_daemon(c.IP_VS_STATE_BACKUP))
        assert cl.daemons() == []
    assert ipvsadm("-L", "--daemon").strip() == ""


# --------------------------------------------------------------- graceful drain


def conns(real: str) -> tuple[int, int]:
    for line in ipvsadm("-Ln").splitlines():
        if real in line:
            active, inact = line.split()[-2:]
            return int(active), int(inact)
    raise AssertionError(f"{real} is not in the table")


def stats_conns(real: str) -> int:
    for line in ipvsadm("-Ln", "--stats", "--exact").splitlines():
        if real in line:
            return int(line.split()[2])
    raise AssertionError(f"{real} is not in the table")


def weight(real: str) -> int:
    for line in ipvsadm("-Ln").splitlines():
        if real in line:
            return int(line.split()[3])
    raise AssertionError(f"{real} is not in the table")


def web(a: str, b: str, wa: int = 5, wb: int = 5) -> str:
    """BASE with its web reals replaced: each test uses its own reals, because a
    re-added real inherits the connection counters of a deleted one (IPVS trash)."""
    old = "".join(f"      - {{address: 198.18.2.{i}, port: 8080, weight: 5}}\n" for i in (2, 3))
    return BASE.replace(
        old,
        "".join(f"      - {{address: {x}, port: 8080, weight: {w}}}\n" for x, w in ((a, wa), (b, wb)) if x),
    )


def reset(*socks: socket.socket) -> None:
    """Close with RST: IPVS moves the entry to CLOSE (10 s) instead of TIME_WAIT (2 min)."""
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


def test_removed_real_drains_then_goes(ipvs: Lab, nat_lab: None) -> None:
    a, b = "198.18.2.2", "198.18.2.3"
    servers = [listener("rs", a, 8080), listener("rs", b, 8080)]
    ipvs.reconcile(web(a, b))
    held = [connect("cl", "198.18.0.10", 80) for _ in range(4)]  # wrr 5:5: two on each
    accepted = [s.accept()[0] for s in servers for _ in range(2)]
    assert conns(f"{a}:8080") == (2, 0)
    # our decoder (learnt-layout fast path) reads the same counters as ipvsadm;
    # the stats are folded in by the kernel's 2 s estimator, so wait for them
    deadline = time.monotonic() + 10
    while stats_conns(f"{a}:8080") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    web_key = ServiceKey(socket.AF_INET, c.IPPROTO_TCP, "198.18.0.10", 80)
    with IPVSClient() as cl:
        ours = cl.table().dests[web_key]
    for addr in (a, b):
        d = ours[DestKey(socket.AF_INET, addr, 8080)]
        assert (d.active_conns, d.inact_conns) == conns(f"{addr}:8080")
        assert d.stats is not None and d.stats.conns == stats_conns(f"{addr}:8080") == 2

    rnd = ipvs.reconcile(web("", b))
    assert kinds(rnd) == ["EditReal"]
    drain = rnd.plan.operations[0]
    assert isinstance(drain, EditReal) and drain.new.weight == 0 and "2 connections" in drain.reason
    assert weight(f"{a}:8080") == 0 and conns(f"{a}:8080") == (2, 0)
    # established flows keep working while draining; new ones avoid the real
    for s in held:
        s.sendall(b"ping")
    assert all(x.recv(4) == b"ping" for x in accepted)
    extra = connect("cl", "198.18.0.10", 80)
    assert conns(f"{a}:8080") == (2, 0) and conns(f"{b}:8080")[0] == 3
    assert kinds(ipvs.reconcile(web("", b))) == []  # still busy: nothing to do

    reset(*held, *accepted, extra)
    deadline = time.monotonic() + 40
    while conns(f"{a}:8080") != (0, 0):
        assert time.monotonic() < deadline, ipvsadm("-Lnc")
        time.sleep(0.5)
    rnd = ipvs.reconcile(web("", b))
    assert [(type(o), o.key.addr) for o in rnd.plan.operations] == [(DeleteReal, a)]  # type: ignore[union-attr]
    assert not any(a in r for r in rules())
    for s in servers:
        s.close()


def test_drain_timeout_deletes_busy_real(ipvs: Lab, nat_lab: None) -> None:
    a, b = "198.18.2.4", "198.18.2.5"
    server = listener("rs", b, 8080)
    ipvs.reconcile(web(a, b, wa=0))
    held = connect("cl", "198.18.0.10", 80)
    assert conns(f"{b}:8080") == (1, 0)
    t0 = time.time()
    rnd = ipvs.reconcile(web(a, "", wa=5), now=t0)
    assert sorted(o.text() for o in rnd.plan.operations) == [
        f"~ real {a}:8080 of tcp 198.18.0.10:80 weight 0 -> 5",
        f"~ real {b}:8080 of tcp 198.18.0.10:80 weight 5 -> 0 (draining, 1 connections)",
    ]
    assert kinds(ipvs.reconcile(web(a, "", wa=5), now=t0 + 59)) == []
    rnd = ipvs.reconcile(web(a, "", wa=5), now=t0 + 60)
    assert [o.text() for o in rnd.plan.operations] == [
        f"- real {b}:8080 of tcp 198.18.0.10:80 (drain timeout after 60s, 1 connections left)"
    ]
    assert not any(b in r for r in rules())
    reset(held)
    server.close()


def test_removed_service_drains_before_deletion(ipvs: Lab, nat_lab: None) -> None:
    a, b = "198.18.2.6", "198.18.2.7"
    server = listener("rs", a, 8080)
    ipvs.reconcile(web(a, b, wb=0))
    held = connect("cl", "198.18.0.10", 80)
    only_dns = BASE.split("  - name: web")[0] + "  - name: dns6" + BASE.split("  - name: dns6")[1]
    t0 = time.time()
    rnd = ipvs.reconcile(only_dns, now=t0)
    # the busy real goes to weight 0 and keeps the service; the idle one goes now
    assert [o.text() for o in rnd.plan.operations] == [
        f"~ real {a}:8080 of tcp 198.18.0.10:80 weight 5 -> 0 (draining, 1 connections)",
        f"- real {b}:8080 of tcp 198.18.0.10:80 (removed from config, no connections)",
    ]
    assert any("198.18.0.10:80" in r for r in rules())
    assert kinds(ipvs.reconcile(only_dns, now=t0 + 30)) == []
    rnd = ipvs.reconcile(only_dns, now=t0 + 60)
    assert [o.text() for o in rnd.plan.operations] == ["- service tcp 198.18.0.10:80 (removed from config)"]
    assert not any("198.18.0.10" in r for r in rules())
    # and it is no longer ours: a later round does not mention it
    assert kinds(ipvs.reconcile(only_dns, now=t0 + 61)) == []
    reset(held)
    server.close()
