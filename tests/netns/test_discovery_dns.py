"""DNS discovery against a real server (dnsmasq on loopback) whose records and TTLs the tests
change: A, AAAA and SRV answers, the TTL honoured, TCP after a truncated answer, failures that
keep the last good list, and the churn limit, through the discovery part as the daemon runs it
(its effect on IPVS is in tests/kernel/test_discovery.py)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import pytest

from ipvsmgr.config import load_text
from ipvsmgr.ipvs.model import ServiceKey
from ipvsmgr.parts.base import Hub
from ipvsmgr.parts.discovery import DiscoveryPart
from ipvsmgr.reconcile.overrides import Overrides
from ipvsmgr.sdnotify import Notifier
from ipvsmgr.sources import SourceError
from ipvsmgr.sources.dns import DnsSource, DnsSpec
from ipvsmgr.sources.gate import Endpoint
from tests.netns.dnsmasq import ZONE, Dnsmasq, dnsmasq


def spec(d: Dnsmasq, name: str, rtype: str = "A", **kw: object) -> DnsSpec:
    return DnsSpec(f"{name}.{ZONE}.", rtype, nameservers=(("127.0.0.1", d.port),), **kw)  # type: ignore[arg-type]


def fetch(d: Dnsmasq, name: str, rtype: str = "A", family: int = socket.AF_INET, **kw: object):  # type: ignore[no-untyped-def]
    return asyncio.run(DnsSource(spec(d, name, rtype, **kw), family).fetch())


def test_a_aaaa_and_srv_answers_with_their_ttl(tmp_path: Path) -> None:
    with dnsmasq(tmp_path, ttl=7) as d:
        d.set_hosts({"web": ["198.18.1.2", "198.18.1.1", "2001:db8::1"]})
        found, ttl = fetch(d, "web", port=8080)
        assert sorted(found) == [Endpoint("198.18.1.1", 8080), Endpoint("198.18.1.2", 8080)] and ttl == 7
        found, _ = fetch(d, "web", "AAAA", socket.AF_INET6)
        assert found == [Endpoint("2001:db8::1", None)]
        _, ttl = fetch(d, "web", min_ttl=10.0)
        assert ttl == 10  # asked no sooner than min_ttl
        # SRV: the lowest priority group, with its ports and weights (0 -> 1: it still serves)
        d.set_srv([("_http._tcp", "b1", 8081, 10, 5), ("_http._tcp", "b2", 8082, 10, 0),
                   ("_http._tcp", "web", 9000, 20, 50)])  # fmt: skip
        d.set_hosts({"b1": ["198.18.1.11"], "b2": ["198.18.1.12"], "web": ["198.18.1.1"]})
        found, _ = fetch(d, "_http._tcp", "SRV")
        assert sorted(found) == [Endpoint("198.18.1.11", 8081, 5), Endpoint("198.18.1.12", 8082, 1)]


def test_a_truncated_answer_is_asked_again_over_tcp(tmp_path: Path) -> None:
    many = [f"198.18.{5 + i // 250}.{1 + i % 250}" for i in range(300)]
    with dnsmasq(tmp_path) as d:
        d.set_hosts({"big": many})
        q = dns.message.make_query(f"big.{ZONE}.", "A")  # no EDNS: a 512-byte answer
        reply = dns.query.udp(q, "127.0.0.1", timeout=2, port=d.port)
        assert reply.flags & dns.flags.TC  # the server truncates it
        found, _ = fetch(d, "big")
        assert sorted(e.address for e in found) == sorted(many)


def test_failures_say_why(tmp_path: Path) -> None:
    with dnsmasq(tmp_path) as d:
        d.set_hosts({"web": ["198.18.1.1"]})
        with pytest.raises(SourceError, match="NXDOMAIN"):
            fetch(d, "nosuch")
        with pytest.raises(SourceError, match="no AAAA records"):
            fetch(d, "web", "AAAA", socket.AF_INET6)
        d.pause()
        t = time.monotonic()
        with pytest.raises(SourceError, match="timed out after 0.5s"):
            fetch(d, "web", timeout=0.5)
        assert time.monotonic() - t < 1.5
        d.resume()


CONFIG = """\
virtual_servers:
  - name: web
    address: 198.18.0.10
    port: 80
    discovery:
      dns: {{name: web.{zone}., port: 8080, nameservers: ["127.0.0.1:{port}"], timeout: 0.5s}}
      debounce: 0.2s
      max_removed: 0.5
    reals: []
"""


def test_the_part_follows_the_records_and_keeps_the_last_good_list(tmp_path: Path) -> None:
    """The daemon's discovery part over the real server: a change arrives within TTL + debounce;
    the server gone keeps the list and marks it stale; a shrink is churn-limited; the list taken
    survives a restart of the part (discovered.json)."""
    with dnsmasq(tmp_path) as d:
        d.set_hosts({"web": ["198.18.1.1", "198.18.1.2", "198.18.1.3", "198.18.1.4"]})
        cfg = load_text(CONFIG.format(zone=ZONE, port=d.port), "lb.yaml")
        taken: list[tuple[float, list[str]]] = []

        async def apply(key: ServiceKey, origin: str, eps: tuple[Endpoint, ...]) -> None:
            assert origin == f"dns:web.{ZONE}."
            taken.append((time.monotonic(), sorted(e.address for e in eps)))

        async def scenario() -> tuple[list[float], dict[str, object], dict[str, object]]:
            hub = Hub("lb.yaml", str(tmp_path / "state"), Overrides(), Notifier(None))
            part = DiscoveryPart(hub, apply)
            await part.start(cfg)
            await wait(lambda: len(taken) == 1)
            lags = []
            for n in (5, 6):  # a real registers: taken within TTL (1 s) + debounce (0.2 s) + an ask
                t = time.monotonic()
                d.set_hosts({"web": [f"198.18.1.{i}" for i in range(1, n + 1)]})
                await wait(lambda n=n: taken[-1][1][-1] == f"198.18.1.{n}")
                lags.append(taken[-1][0] - t)
            d.pause()  # the server stops answering: the list stays, stale
            await wait(lambda: part.status()[0]["stale"], 5)
            stale = part.status()[0]
            d.resume()
            d.set_hosts({"web": ["198.18.1.1"]})  # 6 -> 1: half may leave per minute
            await wait(lambda: not part.status()[0]["stale"] and part.status()[0]["removals_held"] > 0, 5)
            held = part.status()[0]
            await part.stop()
            return lags, stale, held

        lags, stale, held = asyncio.run(scenario())
        assert max(lags) < 2.0, lags
        assert stale["reals"] == 6 and "timed out" in str(stale["error"]), stale
        assert taken[-1][1] == ["198.18.1.1", "198.18.1.5", "198.18.1.6"], taken[-1]  # 3 of 6 left
        assert held["reals"] == 3 and held["removals_held"] == 2, held

        # a restart of the part starts from the list taken, stale until the source answers
        async def restart() -> list[dict[str, object]]:
            hub = Hub("lb.yaml", str(tmp_path / "state"), Overrides(), Notifier(None))
            part = DiscoveryPart(hub, apply)
            assert {k: sorted(e.address for e in eps) for k, (_, eps) in part.load().items()} != {}
            await part.start(cfg)
            first = part.status()
            await part.stop()
            return first

        first = restart_status = asyncio.run(restart())
        assert first[0]["reals"] == 3 and first[0]["stale"], restart_status


async def wait(what, limit: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    t = time.monotonic()
    while not what():
        assert time.monotonic() - t < limit, "not within the limit"
        await asyncio.sleep(0.02)
