"""Prometheus metrics over HTTP, served from the daemon's event loop.

A scrape takes a snapshot of the daemon's state on the loop (consistent, and
nothing is shared across threads), then dumps the kernel's IPVS counters and
renders the text in a worker thread with its own netlink socket, so a large
table never stalls health checks or VRRP. One scrape runs at a time.

The HTTP side is deliberately tiny: GET /metrics, the status page at /
and its data at /status.json (ipvsmgr/statuspage.py: who may read them);
any other path is 404, any other method 405, anything unparsable 400, each
counted; requests are capped in size and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ipvsmgr import compat, exposition, statuspage
from ipvsmgr.conncap import ConnectionCap
from ipvsmgr.exposition import CONTENT_TYPE, Family
from ipvsmgr.fresh import Fresh
from ipvsmgr.ipvs.model import DestKey, ServiceKey, Table

log = logging.getLogger("ipvsmgr.metrics")

MAX_HEAD = 8192
MAX_CONNECTIONS = 128  # open at once: more are closed at once and counted
WRITE_TIMEOUT = 10.0  # seconds a client may take to read a response
READ_TIMEOUT = 10.0
FRESH = 1.0  # seconds a rendered scrape is served again (a burst of scrapes shares one render)
VRRP_STATES = ("init", "backup", "master", "fault")
_C, _G = exposition.counter, exposition.gauge


@dataclass(frozen=True, slots=True)
class RealView:
    virtual_server: str
    service: ServiceKey
    key: DestKey
    configured_weight: int
    health: str  # up, down, pending, unchecked
    check_duration: float | None
    origin: str = "file"  # file | runtime (`ipvsmgr real add`) | a discovery source
    flips: int = 0  # up <-> down changes since the daemon started
    reason: str = ""  # why it is down (the last failure), while down


@dataclass(slots=True)
class Snapshot:
    """What the daemon knows, copied on the loop for one scrape."""

    version: str
    reals: list[RealView] = field(default_factory=list)
    services: dict[ServiceKey, str] = field(default_factory=dict)  # key -> name
    quorum: dict[ServiceKey, bool] = field(default_factory=dict)
    vrrp: list[dict[str, Any]] = field(default_factory=list)
    vrrp_drops: dict[tuple[str, str], int] = field(default_factory=dict)  # (instance or "", reason)
    vrrp_running: bool | None = None  # None: no VRRP configured
    counters: dict[str, int] = field(default_factory=dict)
    reloads: dict[str, int] = field(default_factory=dict)
    control_requests: dict[str, int] = field(default_factory=dict)
    control_refused: dict[str, int] = field(default_factory=dict)
    scrape_refused: dict[str, int] = field(default_factory=dict)
    checks: dict[str, float] = field(default_factory=dict)
    checks_not_run: tuple[tuple[str, str, int], ...] = ()  # (checker type, reason, runs)
    bgp: dict[str, Any] | None = None  # BgpPart.status(): peers, prefixes, counters
    discovery: list[dict[str, Any]] = field(default_factory=list)  # DiscoveryPart.status()
    xdp: dict[str, Any] | None = None  # XdpShield.status(): attachment, counters, attack state
    fleet: dict[str, Any] | None = None  # FleetPart.status()
    compat: tuple[str, ...] = compat.KINDS  # the drop-in series served too (ipvsmgr/compat.py)


def families(
    s: Snapshot, table: Table | None, kernel_ok: bool, totals: compat.Totals | None = None
) -> Iterator[Family]:
    """Every metric of one scrape."""
    yield exposition.info("ipvsmgr_build", "ipvsmgr's version.", {"version": s.version})
    up = _G("ipvsmgr_kernel_readable", "1 if this scrape could read IPVS from the kernel.")
    up.add_metric([], 1.0 if kernel_ok else 0.0)
    yield up

    vs_l = ["virtual_server", "service"]
    vconn = _C("ipvsmgr_virtual_server_connections", "Connections scheduled (IPVS).", labels=vs_l)
    vpkt = _C("ipvsmgr_virtual_server_packets", "Packets (IPVS).", labels=[*vs_l, "direction"])
    vbyte = _C("ipvsmgr_virtual_server_bytes", "Bytes (IPVS).", labels=[*vs_l, "direction"])
    quorum = _G("ipvsmgr_virtual_server_quorum_up", "1 while the quorum holds.", labels=vs_l)
    for key, name in s.services.items():
        lv = [name, str(key)]
        svc = table.services.get(key) if table is not None else None
        if svc is not None and svc.stats is not None:
            st = svc.stats
            vconn.add_metric(lv, st.conns)
            vpkt.add_metric([*lv, "in"], st.inpkts)
            vpkt.add_metric([*lv, "out"], st.outpkts)
            vbyte.add_metric([*lv, "in"], st.inbytes)
            vbyte.add_metric([*lv, "out"], st.outbytes)
        if key in s.quorum:
            quorum.add_metric(lv, 1.0 if s.quorum[key] else 0.0)
    yield from (vconn, vpkt, vbyte, quorum)

    r_l = ["virtual_server", "real"]
    rconn = _C("ipvsmgr_real_connections", "Connections scheduled to the real (IPVS).", labels=r_l)
    rpkt = _C("ipvsmgr_real_packets", "Packets (IPVS).", labels=[*r_l, "direction"])
    rbyte = _C("ipvsmgr_real_bytes", "Bytes (IPVS).", labels=[*r_l, "direction"])
    ract = _G("ipvsmgr_real_active_connections", "Active connections (IPVS).", labels=r_l)
    rinact = _G("ipvsmgr_real_inactive_connections", "Inactive connections (IPVS).", labels=r_l)
    rweight = _G("ipvsmgr_real_weight", "Weight in the kernel (absent: not in it).", labels=r_l)
    rcfg = _G("ipvsmgr_real_configured_weight", "Weight in the configuration.", labels=r_l)
    rup = _G("ipvsmgr_real_up", "1 up, 0 down; absent for reals without a health check.", labels=r_l)
    rdur = _G("ipvsmgr_real_check_duration_seconds", "How long the last health check took.", labels=r_l)
    rorig = _G("ipvsmgr_real_origin", "1 per real, labelled with where it came from: file, runtime "
               "(ipvsmgr real add) or a discovery source.", labels=[*r_l, "origin"])  # fmt: skip
    rflips = _C("ipvsmgr_real_health_transitions", "Times the real went up or down (flapping).", labels=r_l)
    rwhy = _G("ipvsmgr_real_down_reason", "1 while the real is down, labelled with its last failure.",
              labels=[*r_l, "reason"])  # fmt: skip
    for r in s.reals:
        lr = [r.virtual_server, str(r.key)]
        d = table.dests.get(r.service, {}).get(r.key) if table is not None else None
        if d is not None:
            rweight.add_metric(lr, d.weight)
            ract.add_metric(lr, d.active_conns)
            rinact.add_metric(lr, d.inact_conns)
            if d.stats is not None:
                rconn.add_metric(lr, d.stats.conns)
                rpkt.add_metric([*lr, "in"], d.stats.inpkts)
                rpkt.add_metric([*lr, "out"], d.stats.outpkts)
                rbyte.add_metric([*lr, "in"], d.stats.inbytes)
                rbyte.add_metric([*lr, "out"], d.stats.outbytes)
        rcfg.add_metric(lr, r.configured_weight)
        if r.health in ("up", "down"):
            rup.add_metric(lr, 1.0 if r.health == "up" else 0.0)
        if r.check_duration is not None:
            rdur.add_metric(lr, r.check_duration)
        rorig.add_metric([*lr, r.origin], 1.0)
        if r.health in ("up", "down"):
            rflips.add_metric(lr, r.flips)
        if r.health == "down":
            rwhy.add_metric([*lr, r.reason[:120] or "unknown"], 1.0)
    yield from (rconn, rpkt, rbyte, ract, rinact, rweight, rcfg, rup, rdur, rorig, rflips, rwhy)

    ch = s.checks
    if ch:
        runs = _C("ipvsmgr_health_checks", "Health checks run.")
        runs.add_metric([], ch["runs"])
        fails = _C("ipvsmgr_health_check_failures", "Health checks that failed.")
        fails.add_metric([], ch["failures"])
        skipped = _C("ipvsmgr_health_checks_skipped", "Runs skipped: the previous overran.")
        skipped.add_metric([], ch["skipped"])
        lag = _G("ipvsmgr_health_check_lag_seconds", "Schedule lag of recent checks.", labels=["quantile"])
        lag.add_metric(["0.5"], ch["lag_p50"])
        lag.add_metric(["0.99"], ch["lag_p99"])
        yield from (runs, fails, skipped, lag)
        notrun = _C(
            "ipvsmgr_health_checks_not_run",
            "Runs that could not get a file descriptor: neither up nor down.",
            labels=["type", "reason"],
        )
        for kind, reason, n in s.checks_not_run:
            notrun.add_metric([kind, reason], n)
        yield notrun
        if "open_fds" in ch:
            fds = _G("ipvsmgr_open_fds", "File descriptors the daemon holds.")
            fds.add_metric([], ch["open_fds"])
            fds_max = _G("ipvsmgr_open_fds_max", "The most file descriptors seen held (sampled each second).")
            fds_max.add_metric([], ch["open_fds_max"])
            limit = _G("ipvsmgr_open_fds_limit", "The daemon's open files limit.")
            limit.add_metric([], ch["fd_limit"])
            inflight = _G("ipvsmgr_health_checks_in_flight_max", "The most check runs in flight at once.")
            inflight.add_metric([], ch["in_flight_max"])
            yield from (fds, fds_max, limit, inflight)

    i_l = ["instance"]
    vstate = _G("ipvsmgr_vrrp_state", "1 for the instance's current state.", labels=[*i_l, "state"])
    vprio = _G("ipvsmgr_vrrp_priority", "Effective priority.", labels=i_l)
    vtrans = _C("ipvsmgr_vrrp_transitions", "State changes.", labels=i_l)
    vsent = _C("ipvsmgr_vrrp_adverts_sent", "Adverts sent.", labels=i_l)
    vrecv = _C("ipvsmgr_vrrp_adverts_received", "Adverts accepted.", labels=i_l)
    for inst in s.vrrp:
        li = [inst["name"]]
        for state in VRRP_STATES:
            vstate.add_metric([*li, state], 1.0 if inst["state"] == state else 0.0)
        vprio.add_metric(li, inst["priority"])
        vtrans.add_metric(li, inst["transitions"])
        vsent.add_metric(li, inst["adverts_sent"])
        vrecv.add_metric(li, inst["adverts_received"])
    vdrop = _C(
        "ipvsmgr_vrrp_dropped_packets",
        "VRRP packets dropped, by instance (empty: no instance claimed the packet) and reason.",
        labels=["instance", "reason"],
    )
    for (instance, reason), n in sorted(s.vrrp_drops.items()):
        vdrop.add_metric([instance, reason], n)
    yield from (vstate, vprio, vtrans, vsent, vrecv, vdrop)

    if s.fleet is not None:
        f = s.fleet
        m = _G(
            "ipvsmgr_fleet_revision_applied",
            "The fleet configuration's revision this node runs (0: the local file).",
        )
        m.add_metric([], f["applied"])
        yield m
        m = _G("ipvsmgr_fleet_revision_refused", "A newer revision this node refused (0: none).")
        m.add_metric([], f["refused"] or 0)
        yield m
        m = _G("ipvsmgr_fleet_etcd_connected", "1 while the fleet's etcd answers.")
        m.add_metric([], 1.0 if f["connected"] else 0.0)
        yield m
    if s.discovery:
        yield from _discovery(s.discovery)
    if s.bgp is not None:
        yield from _bgp(s.bgp)
    if s.xdp is not None:
        yield from _xdp(s.xdp)

    c = s.counters
    for name, text in (
        ("reconcile_rounds", "Reconcile rounds."),
        ("reconcile_operations", "IPVS operations applied."),
        ("reconcile_errors", "IPVS operations the kernel refused, and rounds that failed."),
        ("reconcile_drift_repairs", "Operations a periodic resync needed with nothing changed: drift."),
    ):
        m = _C(f"ipvsmgr_{name}", text)
        m.add_metric([], c.get(name, 0))
        yield m
    reload = _C(
        "ipvsmgr_reloads",
        "Configuration reloads: ok, refused (invalid file), guarded (stopped by the removal guard).",
        labels=["result"],
    )
    for result in ("ok", "refused", "guarded"):
        reload.add_metric([result], s.reloads.get(result, 0))
    yield reload
    creq = _C("ipvsmgr_control_requests", "Control socket requests.", labels=["command"])
    for cmd, n in sorted(s.control_requests.items()):
        creq.add_metric([cmd], n)
    cref = _C("ipvsmgr_control_refused", "Control requests refused.", labels=["reason"])
    for reason, n in sorted(s.control_refused.items()):
        cref.add_metric([reason], n)
    sref = _C("ipvsmgr_metrics_requests_refused", "Bad metrics requests.", labels=["reason"])
    for reason, n in sorted(s.scrape_refused.items()):
        sref.add_metric([reason], n)
    yield from (creq, cref, sref)

    if "node_ipvs" in s.compat and table is not None:
        yield from compat.node_ipvs(table, totals)
    if "keepalived" in s.compat and s.vrrp_running is not None:
        yield from compat.keepalived(s.vrrp, s.vrrp_drops, s.vrrp_running)


BGP_STATES = ("idle", "connected", "up", "down")
BGP_COUNTERS = {
    "starts": ("ipvsmgr_bgp_exabgp_starts", "ExaBGP processes started."),
    "crashes": ("ipvsmgr_bgp_exabgp_crashes", "ExaBGP exits the daemon did not ask for."),
    "start_failures": ("ipvsmgr_bgp_exabgp_start_failures", "ExaBGP starts that failed."),
    "commands": ("ipvsmgr_bgp_commands", "Announce and withdraw commands sent to ExaBGP."),
    "messages_malformed": ("ipvsmgr_bgp_messages_malformed", "Unreadable lines from ExaBGP."),
}


def _bgp(b: dict[str, Any]) -> Iterator[Family]:
    running = _G("ipvsmgr_bgp_exabgp_running", "1 while the ExaBGP child runs.")
    running.add_metric([], 0.0 if b["exabgp_pid"] is None else 1.0)
    drained = _G("ipvsmgr_bgp_node_drained", "1 while drain-node holds every route withdrawn.")
    drained.add_metric([], 1.0 if b["node_drained"] else 0.0)
    peer = _G("ipvsmgr_bgp_peer_state", "1 for the BGP session's current state.", labels=["peer", "state"])
    ups = _C("ipvsmgr_bgp_peer_established", "Times the session came up.", labels=["peer"])
    for address, n in sorted(b["neighbors"].items()):
        for state in BGP_STATES:
            peer.add_metric([address, state], 1.0 if n["state"] == state else 0.0)
        ups.add_metric([address], n["ups"])
    prefix = _G("ipvsmgr_bgp_prefix_announced", "1 while the prefix is announced.", labels=["prefix"])
    for p, d in sorted(b["prefixes"].items()):
        prefix.add_metric([p], 1.0 if d["announce"] else 0.0)
    acks = _C("ipvsmgr_bgp_command_acks", "ExaBGP's answers to commands.", labels=["result"])
    acks.add_metric(["done"], b["counters"].get("acks_done", 0))
    acks.add_metric(["error"], b["counters"].get("acks_error", 0))
    yield from (running, drained, peer, ups, prefix, acks)
    for key, (name, text) in BGP_COUNTERS.items():
        m = _C(name, text)
        m.add_metric([], b["counters"].get(key, 0))
        yield m


def _xdp(x: dict[str, Any]) -> Iterator[Family]:
    active = _G("ipvsmgr_xdp_active", "1 while the XDP guard is attached on every configured interface.")
    active.add_metric([], 1.0 if x["state"] == "active" else 0.0)
    degraded = _G("ipvsmgr_xdp_degraded", "1 while the daemon runs without the XDP guard it was asked for.")
    degraded.add_metric([], 1.0 if x["state"] == "degraded" else 0.0)
    attached = _G(
        "ipvsmgr_xdp_attached", "1 per interface the guard is attached to.", labels=["interface", "mode"]
    )
    for a in x["interfaces"]:
        attached.add_metric([a["name"], a["mode"]], 1.0)
    packets = _C("ipvsmgr_xdp_packets", "Packets the guard judged.", labels=["verdict", "reason"])
    nbytes = _C("ipvsmgr_xdp_bytes", "Bytes the guard judged.", labels=["verdict", "reason"])
    for reason, c in sorted(x["counters"].items()):
        packets.add_metric([c["verdict"], reason], c["packets"])
        nbytes.add_metric([c["verdict"], reason], c["bytes"])
    attack = _G("ipvsmgr_xdp_vip_under_attack", "1 while the VIP is in attack mode.", labels=["vip"])
    rate = _G("ipvsmgr_xdp_vip_syn_rate", "SYNs to the VIP in the last whole second.", labels=["vip"])
    attacks = _C("ipvsmgr_xdp_vip_attacks", "Times the VIP entered attack mode.", labels=["vip"])
    for v in x["vips"]:
        attack.add_metric([v["address"]], 1.0 if v["under_attack"] else 0.0)
        rate.add_metric([v["address"]], v["syn_rate"])
        attacks.add_metric([v["address"]], v["attacks"])
    yield from (active, degraded, attached, packets, nbytes, attack, rate, attacks)


def render(s: Snapshot, table: Table | None, kernel_ok: bool, totals: compat.Totals | None = None) -> bytes:
    return exposition.render(families(s, table, kernel_ok, totals))


class MetricsServer:
    """HTTP on `host:port`; snapshot() runs on the loop, dump() (the kernel read) in a thread."""

    def __init__(
        self,
        host: str,
        port: int,
        snapshot: Callable[[], Snapshot],
        dump: Callable[[], Table],
        fresh: float = FRESH,
        compat_kinds: tuple[str, ...] = compat.KINDS,
        status: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        token: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.snapshot = snapshot
        self.dump = dump
        self.compat = compat_kinds
        self.status = status  # the status page's data (ipvsmgr status --json); None: no page
        self.token = token  # --status-auth: needed on every path when set
        self._status_fresh: Fresh[bytes] = Fresh(min(fresh, 0.5))  # many open pages share one status a second
        self.refused: Counter[str] = Counter()
        self.scrapes = 0
        self.cap = ConnectionCap("metrics", MAX_CONNECTIONS, self.refused)
        self._server: asyncio.AbstractServer | None = None
        self._thread_lock = threading.Lock()
        # A burst of scrapes shares one render (ipvsmgr/fresh.py); Prometheus scrapes
        # every 15 s or so and never sees a shared one.
        self._fresh: Fresh[bytes] = Fresh(fresh)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]  # port 0: the one the kernel picked

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.cap.admit(writer):
            return
        try:
            status, body, ctype, extra = await self._handle(reader)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"Cache-Control: no-store\r\n{extra}Connection: close\r\n\r\n"
            )
            writer.write(head.encode())
            writer.write(body)  # not joined: the body may be megabytes, shared by a burst of scrapes
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)  # a client that never reads
        except TimeoutError:
            self.refused["slow_reader"] += 1
            writer.transport.abort()
        except ConnectionError:
            pass
        finally:
            self.cap.release()
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _handle(self, reader: asyncio.StreamReader) -> tuple[str, bytes, str, str]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            self.refused["bad_request"] += 1
            return "400 Bad Request", b"bad request\n", "text/plain", ""
        lines = head.split(b"\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self.refused["bad_request"] += 1
            return "400 Bad Request", b"bad request\n", "text/plain", ""
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            self.refused["method"] += 1
            return "405 Method Not Allowed", b"read-only: GET only\n", "text/plain", ""
        if target not in (b"/", b"/status.json", b"/metrics"):
            self.refused["not_found"] += 1
            return "404 Not Found", b"not found: metrics at /metrics, status at /\n", "text/plain", ""
        refusal = self._refuse(target, lines[1:])
        if refusal is not None:
            return refusal
        if target == b"/":
            if self.status is None:
                return "200 OK", b"ipvsmgr: metrics at /metrics\n", "text/plain", ""
            page = statuspage.PAGE.encode()
            return "200 OK", page if method == b"GET" else b"", "text/html; charset=utf-8", ""
        if target == b"/status.json":
            if self.status is None:
                self.refused["not_found"] += 1
                return "404 Not Found", b"no status here\n", "text/plain", ""
            body = await self._status_fresh.get(self._status_json)
            return "200 OK", body if method == b"GET" else b"", "application/json", ""
        self.scrapes += 1
        body = await self._fresh.get(self._make)
        return "200 OK", body if method == b"GET" else b"", CONTENT_TYPE, ""

    def _refuse(self, target: bytes, headers: list[bytes]) -> tuple[str, bytes, str, str] | None:
        """None: served. With a token every path needs it; without one, the page and its data
        are served on loopback only (metrics stay open, as they were)."""
        if self.token is None:
            if target == b"/metrics" or self.status is None or statuspage.is_loopback(self.host):
                return None
            self.refused["no_auth_configured"] += 1
            return (
                "403 Forbidden",
                f"the status page is served on {self.host} only with --status-auth FILE (a token): "
                "not on a non-loopback address without one\n".encode(),
                "text/plain", "",
            )  # fmt: skip
        auth = None
        for line in headers:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"authorization":
                auth = value.decode("latin-1").strip()
        if statuspage.authorized(auth, self.token):
            return None
        self.refused["unauthorized"] += 1
        return (
            "401 Unauthorized", b"a token is needed (Bearer, or the password of basic auth)\n", "text/plain",
            f'WWW-Authenticate: Basic realm="{statuspage.REALM}", charset="UTF-8"\r\n',
        )  # fmt: skip

    async def _status_json(self) -> bytes:
        assert self.status is not None
        data = await self.status()
        return json.dumps(data, default=str).encode()

    async def _make(self) -> bytes:
        snap = self.snapshot()
        snap.scrape_refused = dict(self.refused)
        snap.compat = self.compat
        return await asyncio.to_thread(self._render, snap)

    def _render(self, snap: Snapshot) -> bytes:
        table: Table | None = None
        totals: compat.Totals | None = None
        with self._thread_lock:
            try:
                table = self.dump()
            except OSError as e:
                log.warning("metrics: reading IPVS failed: %s", e)
            if table is not None and "node_ipvs" in snap.compat:
                totals = compat.read_totals()
        return render(snap, table, table is not None, totals)


def _discovery(sources: list[dict[str, Any]]) -> Iterator[Any]:
    labels = ["virtual_server", "source"]
    stale = _G("ipvsmgr_discovery_stale", "1 while a discovery source fails and its last good list is kept.",
               labels=labels)  # fmt: skip
    reals = _G("ipvsmgr_discovery_reals", "Reals the source's list gives the virtual server.", labels=labels)
    held = _G("ipvsmgr_discovery_removals_held", "Removals the churn limit holds back now.", labels=labels)
    age = _G("ipvsmgr_discovery_last_answer_age_seconds", "Seconds since the source last answered.",
             labels=labels)  # fmt: skip
    answers = _C("ipvsmgr_discovery_answers", "Good answers from the source.", labels=labels)
    failures = _C(
        "ipvsmgr_discovery_failures", "Failed asks (timeouts, NXDOMAIN, empty answers).", labels=labels
    )
    changes = _C("ipvsmgr_discovery_changes", "New lists taken from the source.", labels=labels)
    for d in sources:
        lv = [d["virtual_server"], d["source"]]
        stale.add_metric(lv, 1.0 if d["stale"] else 0.0)
        reals.add_metric(lv, d["reals"])
        held.add_metric(lv, d["removals_held"])
        if d["last_answer_s_ago"] is not None:
            age.add_metric(lv, d["last_answer_s_ago"])
        answers.add_metric(lv, d["answers"])
        failures.add_metric(lv, d["failures"])
        changes.add_metric(lv, d["changes"])
    yield from (stale, reals, held, age, answers, failures, changes)
