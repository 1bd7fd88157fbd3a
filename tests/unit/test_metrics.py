"""Metrics: the text parses with prometheus_client's own parser, values come
from the snapshot and the kernel table; the HTTP side refuses and counts junk."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from ipvsmgr.ipvs.model import Destination, DestKey, Service, ServiceKey, Stats, Table
from ipvsmgr.metrics import MetricsServer, RealView, Snapshot, render

SK = ServiceKey(socket.AF_INET, 6, "198.18.0.10", 80)
DK = DestKey(socket.AF_INET, "198.18.1.1", 8080)
DK2 = DestKey(socket.AF_INET, "198.18.1.2", 8080)


def snapshot() -> Snapshot:
    return Snapshot(
        version="9.9",
        reals=[RealView("web", SK, DK, 10, "up", 0.002), RealView("web", SK, DK2, 5, "down", None)],
        services={SK: "web"},
        quorum={SK: True},
        vrrp=[{"name": "vi_1", "state": "master", "priority": 150, "transitions": 2,
               "adverts_sent": 40, "adverts_received": 0}],
        vrrp_drops={("", "ttl"): 3, ("vi_1", "address_list_mismatch"): 2},
        counters={"reconcile_rounds": 7, "reconcile_operations": 4},
        reloads={"ok": 1, "refused": 2},
        checks={"runs": 100, "failures": 5, "skipped": 0, "lag_p50": 0.004, "lag_p99": 0.011},
    )  # fmt: skip


TABLE = Table(
    services={
        SK: Service(SK, "wrr", stats=Stats(conns=12, inpkts=100, outpkts=90, inbytes=6000, outbytes=9000))
    },
    dests={
        SK: {
            DK: Destination(DK, weight=10, active_conns=3, inact_conns=1, stats=Stats(conns=12, inbytes=6000))
        }
    },
)


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_render_parses_and_carries_the_values() -> None:
    got = samples(render(snapshot(), TABLE, True))
    web = (("service", "tcp 198.18.0.10:80"), ("virtual_server", "web"))
    assert got[("ipvsmgr_virtual_server_connections_total", web)] == 12
    assert got[("ipvsmgr_virtual_server_bytes_total", (("direction", "out"), *web))] == 9000
    r1 = (("real", "198.18.1.1:8080"), ("virtual_server", "web"))
    r2 = (("real", "198.18.1.2:8080"), ("virtual_server", "web"))
    assert got[("ipvsmgr_real_weight", r1)] == 10
    assert got[("ipvsmgr_real_active_connections", r1)] == 3
    assert got[("ipvsmgr_real_connections_total", r1)] == 12
    assert got[("ipvsmgr_real_up", r1)] == 1 and got[("ipvsmgr_real_up", r2)] == 0
    assert ("ipvsmgr_real_weight", r2) not in got  # not in the kernel: absent, not 0
    assert got[("ipvsmgr_real_configured_weight", r2)] == 5
    assert got[("ipvsmgr_vrrp_state", (("instance", "vi_1"), ("state", "master")))] == 1
    assert got[("ipvsmgr_vrrp_state", (("instance", "vi_1"), ("state", "backup")))] == 0
    assert got[("ipvsmgr_vrrp_dropped_packets_total", (("instance", ""), ("reason", "ttl")))] == 3
    key = ("ipvsmgr_vrrp_dropped_packets_total", (("instance", "vi_1"), ("reason", "address_list_mismatch")))
    assert got[key] == 2
    assert got[("ipvsmgr_reloads_total", (("result", "refused"),))] == 2
    assert got[("ipvsmgr_build_info", (("version", "9.9"),))] == 1
    assert got[("ipvsmgr_kernel_readable", ())] == 1
    assert got[("ipvsmgr_health_check_lag_seconds", (("quantile", "0.99"),))] == 0.011


def test_bgp_metrics() -> None:
    snap = snapshot()
    snap.bgp = {
        "exabgp_pid": 42, "node_drained": False,
        "neighbors": {"198.18.0.1": {"state": "up", "since": 0.0, "reason": "", "ups": 3}},
        "prefixes": {"198.18.100.1/32": {"announce": True, "reason": "healthy: web"},
                     "198.18.100.2/32": {"announce": False, "reason": "no quorum: dns"}},
        "counters": {"starts": 2, "crashes": 1, "commands": 9, "acks_done": 8, "acks_error": 1},
    }  # fmt: skip
    got = samples(render(snap, TABLE, True))
    assert got[("ipvsmgr_bgp_exabgp_running", ())] == 1
    assert got[("ipvsmgr_bgp_peer_state", (("peer", "198.18.0.1"), ("state", "up")))] == 1
    assert got[("ipvsmgr_bgp_peer_state", (("peer", "198.18.0.1"), ("state", "down")))] == 0
    assert got[("ipvsmgr_bgp_peer_established_total", (("peer", "198.18.0.1"),))] == 3
    assert got[("ipvsmgr_bgp_prefix_announced", (("prefix", "198.18.100.1/32"),))] == 1
    assert got[("ipvsmgr_bgp_prefix_announced", (("prefix", "198.18.100.2/32"),))] == 0
    assert got[("ipvsmgr_bgp_command_acks_total", (("result", "error"),))] == 1
    assert got[("ipvsmgr_bgp_exabgp_crashes_total", ())] == 1
    assert got[("ipvsmgr_bgp_messages_malformed_total", ())] == 0
    assert not any(name.startswith("ipvsmgr_bgp") for name, _ in samples(render(snapshot(), TABLE, True)))


XDP_STATUS = {
    "state": "active", "error": None, "verifier_log_tail": "", "object": "x.o", "pin_path": "/sys/fs/bpf/i",
    "interfaces": [{"name": "eth0", "mode": "native", "program_id": 7, "adopted": True}],
    "counters": {"syn": {"verdict": "pass", "packets": 10, "bytes": 600},
                 "challenge": {"verdict": "tx", "packets": 5000, "bytes": 290000},
                 "no_service": {"verdict": "drop", "packets": 3, "bytes": 180}},
    "vips": [{"address": "198.18.0.10", "under_attack": True, "syn_rate": 9000, "attacks": 2}],
    "drop_samples": [], "program_id": 7,
}  # fmt: skip


def test_xdp_metrics() -> None:
    snap = snapshot()
    snap.xdp = XDP_STATUS
    got = samples(render(snap, TABLE, True))
    assert got[("ipvsmgr_xdp_active", ())] == 1 and got[("ipvsmgr_xdp_degraded", ())] == 0
    assert got[("ipvsmgr_xdp_attached", (("interface", "eth0"), ("mode", "native")))] == 1
    assert got[("ipvsmgr_xdp_packets_total", (("reason", "challenge"), ("verdict", "tx")))] == 5000
    assert got[("ipvsmgr_xdp_bytes_total", (("reason", "no_service"), ("verdict", "drop")))] == 180
    assert got[("ipvsmgr_xdp_vip_under_attack", (("vip", "198.18.0.10"),))] == 1
    assert got[("ipvsmgr_xdp_vip_syn_rate", (("vip", "198.18.0.10"),))] == 9000
    assert got[("ipvsmgr_xdp_vip_attacks_total", (("vip", "198.18.0.10"),))] == 2
    snap.xdp = {**XDP_STATUS, "state": "degraded", "error": "refused", "interfaces": [], "counters": {},
                "vips": []}  # fmt: skip
    got = samples(render(snap, TABLE, True))
    assert got[("ipvsmgr_xdp_active", ())] == 0 and got[("ipvsmgr_xdp_degraded", ())] == 1
    assert not any(name.startswith("ipvsmgr_xdp") for name, _ in samples(render(snapshot(), TABLE, True)))


def test_xdp_status_text() -> None:
    from ipvsmgr.statusview import render_xdp

    text = render_xdp({**XDP_STATUS, "verified_sources": 4, "challenge": "retransmit",
                       "verified_budget": [50, 100], "drop_samples": [
        {"age_s": 1.5, "reason": "no_service", "source": "198.18.3.2", "destination": "198.18.0.10",
         "protocol": 17, "sport": 5000, "dport": 9, "tcp_flags": 0, "ifindex": 2}]})  # fmt: skip
    lines = text.splitlines()
    assert lines[0] == "XDP guard: program 7 on eth0 (native); 3 packets dropped; UNDER ATTACK: 198.18.0.10"
    assert any(line.split() == ["tx", "challenge", "5000", "290000"] for line in lines)
    assert any(line.split() == ["198.18.0.10", "9000", "YES", "2"] for line in lines)
    assert (
        "verified sources (passed the challenge): 4; challenge: retransmit; "
        "budget under attack: 50 SYN/s, bursts of 100"
    ) in lines
    assert any(
        line.split() == ["1.5s", "no_service", "198.18.3.2:5000", "198.18.0.10:9", "17"] for line in lines
    )
    degraded = render_xdp({**XDP_STATUS, "state": "degraded", "error": "loading x.o failed: EACCES",
                           "verifier_log_tail": "R1 offset is outside of the packet"})  # fmt: skip
    assert degraded.splitlines() == [
        "XDP guard: DEGRADED, running without it: loading x.o failed: EACCES",
        "  R1 offset is outside of the packet",
    ]


def test_served_over_http_with_junk_refused() -> None:
    async def main() -> None:
        def dump() -> Table:
            return TABLE

        server = MetricsServer("127.0.0.1", 0, snapshot, dump, fresh=0.0)  # every scrape renders
        await server.start()
        base = f"http://127.0.0.1:{server.port}"

        def get(path: str, method: str = "GET") -> tuple[int, bytes, str]:
            req = urllib.request.Request(base + path, method=method)
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, r.read(), r.headers["Content-Type"]
            except urllib.error.HTTPError as e:
                return e.code, e.read(), ""

        def raw(data: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                return s.recv(4096)

        try:
            status, body, ctype = await asyncio.to_thread(get, "/metrics")
            assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
            assert (
                samples(body)[
                    ("ipvsmgr_real_weight", (("real", "198.18.1.1:8080"), ("virtual_server", "web")))
                ]
                == 10
            )
            assert (await asyncio.to_thread(get, "/nope"))[0] == 404
            assert (await asyncio.to_thread(get, "/metrics", "POST"))[0] == 405
            assert (await asyncio.to_thread(raw, b"\x00\x01garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
            assert (await asyncio.to_thread(raw, b"GET /metrics")).startswith(
                b"HTTP/1.1 400"
            )  # never finished
            assert server.refused == {"not_found": 1, "method": 1, "bad_request": 2}
            # the refusals show up in the next scrape
            body = (await asyncio.to_thread(get, "/metrics"))[1]
            assert (
                samples(body)[("ipvsmgr_metrics_requests_refused_total", (("reason", "bad_request"),))] == 2
            )
        finally:
            await server.close()

    asyncio.run(main())


def test_a_kernel_that_cannot_be_read_is_reported_not_fatal() -> None:
    got = samples(render(snapshot(), None, False))
    assert got[("ipvsmgr_kernel_readable", ())] == 0
    assert got[("ipvsmgr_real_up", (("real", "198.18.1.1:8080"), ("virtual_server", "web")))] == 1


def test_a_burst_of_scrapes_shares_one_render() -> None:
    """100 scrapes at once, with a kernel dump that takes 0.2 s: every one is answered, by a
    handful of renders (one per FRESH window), not 100 in a row (20 s)."""

    async def main() -> None:
        calls = {"snapshot": 0, "dump": 0}

        def counted_snapshot() -> Snapshot:
            calls["snapshot"] += 1
            return snapshot()

        def slow_dump() -> Table:
            calls["dump"] += 1
            time.sleep(0.2)
            return TABLE

        server = MetricsServer("127.0.0.1", 0, counted_snapshot, slow_dump)
        await server.start()

        def scrape() -> int:
            url = f"http://127.0.0.1:{server.port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as r:
                body = r.read()
                assert b"ipvsmgr_real_weight" in body
                return int(r.status)

        loop = asyncio.get_running_loop()
        clients = concurrent.futures.ThreadPoolExecutor(100)  # the server renders in the default pool
        try:
            t = time.monotonic()
            answers = await asyncio.gather(*(loop.run_in_executor(clients, scrape) for _ in range(100)))
            took = time.monotonic() - t
        finally:
            clients.shutdown()
            await server.close()
        assert answers == [200] * 100
        assert calls["dump"] <= 3 and calls["snapshot"] == calls["dump"], calls
        assert took < 5, took
        assert server.scrapes == 100

    asyncio.run(main())
