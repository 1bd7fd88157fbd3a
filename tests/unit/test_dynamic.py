"""Reals added at run time (ipvsmgr/dynamic.py, the real_* commands, their state file):
built as the file would build them, the file winning over them, and kept on disk."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ipvsmgr import commands, dynamic
from ipvsmgr.config import Config, load_text
from ipvsmgr.control import CommandError, Request, RequestError, parse_request
from ipvsmgr.ipvs.model import DestKey
from ipvsmgr.reconcile.desired import service_key
from ipvsmgr.reconcile.overrides import Overrides, OverrideStore

FILE = """\
virtual_servers:
  - name: web
    address: 198.18.0.10
    port: 80
    weight: 4
    health_check: {type: http, http: {path: /health}}
    reals:
      - {address: 198.18.1.1, port: 8080, weight: 5}
  - name: dsr
    address: 198.18.0.11
    port: 443
    forwarding: dr
    reals:
      - {address: 198.18.1.2}
  - name: tun6
    address: 2001:db8::10
    port: 80
    forwarding: tunnel
    tunnel: {type: gue, port: 6080}
    reals:
      - {address: 198.18.1.3}
"""


def cfg(text: str = FILE) -> Config:
    return load_text(text, "lb.yaml")


def vs_of(c: Config, name: str) -> Any:
    return next(v for v in c.virtual_servers if v.name == name)


def added(
    c: Config, name: str, address: str, port: int | None, weight: int | None = None
) -> dynamic.DynamicReal:
    vs = vs_of(c, name)
    a, p = dynamic.endpoint(vs, address, port)
    return dynamic.DynamicReal(service_key(vs), a, p, weight)


def test_a_dynamic_real_is_what_the_file_would_build_from_its_address() -> None:
    c = cfg()
    m = dynamic.merge(c, [added(c, "web", "198.18.1.9", 8081), added(c, "tun6", "198.18.1.8", None, 2)])
    web = vs_of(m.config, "web")
    new = web.reals[-1]
    got = (new.address, new.port, new.weight, new.forwarding, new.origin)
    assert got == ("198.18.1.9", 8081, 4, "nat", "runtime")
    assert new.health is web.reals[0].health  # the service's default check, shared
    tun = vs_of(m.config, "tun6").reals[-1]
    assert tun.forwarding == "tunnel" and tun.tunnel is not None and tun.tunnel.type == "gue"
    assert (tun.port, tun.weight, tun.family) == (80, 2, socket.AF_INET)  # tunnels cross families
    assert vs_of(m.config, "dsr") is vs_of(c, "dsr")  # untouched services are the file's objects
    assert not (m.shadowed or m.orphaned or m.refused)


def test_what_the_file_would_refuse_is_refused() -> None:
    c = cfg()
    with pytest.raises(dynamic.Refused, match="keeps the destination port"):
        added(c, "dsr", "198.18.1.9", 8443)
    assert added(c, "dsr", "198.18.1.9", None).port == 443
    with pytest.raises(dynamic.Refused, match="only tunnel forwarding"):
        web = vs_of(c, "web")
        dynamic.build(web, dynamic.DynamicReal(service_key(web), "2001:db8::5", 80, None))
    for bad in ("0.0.0.0", "224.0.0.1", "web1", ""):
        with pytest.raises(dynamic.Refused):
            added(c, "web", bad, 80)
    with pytest.raises(dynamic.Refused, match="out of range"):
        dynamic.check_weight(65536)


def test_the_file_wins_and_what_left_is_reported() -> None:
    c = cfg()
    web = service_key(vs_of(c, "web"))
    same = dynamic.DynamicReal(web, "198.18.1.1", 8080, 9)  # the file lists it
    gone = replace(same, service=replace(web, port=81))  # no such service
    ok = dynamic.DynamicReal(web, "198.18.1.7", 8080, None)
    dup = replace(ok, weight=3)  # a second entry for one real: the first counts
    m = dynamic.merge(c, [same, gone, ok, dup])
    assert m.shadowed == [same] and m.orphaned == [gone]
    reals = vs_of(m.config, "web").reals
    assert [(r.address, r.weight) for r in reals] == [("198.18.1.1", 5), ("198.18.1.7", 4)]


def test_a_weight_set_at_run_time_lasts_until_the_file_changes_that_weight() -> None:
    c = cfg()
    rid = (service_key(vs_of(c, "web")), DestKey(socket.AF_INET, "198.18.1.1", 8080))
    w = dynamic.WeightSet(rid, 9, 5)
    m = dynamic.merge(c, [], [w])
    assert vs_of(m.config, "web").reals[0].weight == 9 and not m.stale_weights
    changed = cfg(FILE.replace("port: 8080, weight: 5", "port: 8080, weight: 6"))
    m = dynamic.merge(changed, [], [w])
    assert vs_of(m.config, "web").reals[0].weight == 6 and m.stale_weights == [w]


def test_the_state_file_keeps_them_and_refuses_bad_entries(tmp_path: Path) -> None:
    c = cfg()
    rid = (service_key(vs_of(c, "web")), DestKey(socket.AF_INET, "198.18.1.1", 8080))
    o = Overrides(
        added=(added(c, "web", "198.18.1.9", 8081), added(c, "dsr", "2001:db8::9", None, 0)),
        weights=(dynamic.WeightSet(rid, 0, 5),),
    )
    store = OverrideStore(str(tmp_path))
    store.save(o)
    assert store.load() == o
    raw = json.loads(Path(store.path).read_text())
    for entry in ({"addr": "web1"}, {"port": "80"}, {"weight": True}, {"weight": 70000}):
        bad = dict(raw, reals_added=[{**raw["reals_added"][0], **entry}])
        Path(store.path).write_text(json.dumps(bad))
        assert store.load() == Overrides()  # one logged line, the file set aside, a clean start
        assert Path(store.path + ".bad").exists()


def test_the_requests_parse() -> None:
    r = parse_request(b'{"command": "real_add", "args": {"virtual_server": "web", "real": "198.18.1.9"}}')
    assert r == Request("real_add", {"virtual_server": "web", "real": "198.18.1.9"})
    with pytest.raises(RequestError, match="needs 'weight'"):
        parse_request(b'{"command": "real_weight", "args": {"virtual_server": "web", "real": "198.18.1.9"}}')


class FakeDaemon:
    """What the real_* commands see of a daemon, with the merge done as the daemon does it."""

    def __init__(self, text: str = FILE) -> None:
        self.file_config = self.config = cfg(text)
        self.config_path = "lb.yaml"
        self.o = Overrides()
        self.applied = 0
        self.counters: Counter[str] = Counter()

    @property
    def overrides(self) -> Overrides:
        return self.o

    def set_overrides(self, new: Overrides) -> None:
        self.o = new

    async def set_dynamic(self, new: Overrides) -> None:
        self.o = new
        self.config = dynamic.merge(self.file_config, new.added, new.weights).config
        self.applied += 1


def command(d: FakeDaemon, name: str, **args: str) -> Any:
    async def go() -> Any:
        return await commands._run(d, Request(name, args))  # type: ignore[arg-type]

    return asyncio.run(go())


def test_the_commands_add_weigh_and_remove() -> None:
    d = FakeDaemon()
    r = command(d, "real_add", virtual_server="web", real="198.18.1.9:8081", weight="2")
    assert r == {"virtual_server": "web", "real": "198.18.1.9:8081", "weight": 2, "added": True,
                 "changed": True, "checked": True}  # fmt: skip
    again = command(d, "real_add", virtual_server="web", real="198.18.1.9:8081", weight="2")
    assert again["changed"] is False
    assert d.applied == 1
    assert command(d, "real_add", virtual_server="web", real="198.18.1.10")["real"] == "198.18.1.10:80"
    command(d, "real_weight", virtual_server="web", real="198.18.1.9", weight="7")
    command(d, "real_weight", virtual_server="web", real="198.18.1.1", weight="0")
    weights = {r.address: (r.weight, r.origin) for r in vs_of(d.config, "web").reals}
    assert weights == {"198.18.1.1": (0, ""), "198.18.1.9": (7, "runtime"), "198.18.1.10": (4, "runtime")}
    command(d, "real_weight", virtual_server="web", real="198.18.1.1", weight="5")  # back to the file's
    assert d.o.weights == ()
    command(d, "real_remove", virtual_server="web", real="198.18.1.9")
    assert [r.address for r in vs_of(d.config, "web").reals] == ["198.18.1.1", "198.18.1.10"]


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("real_add", {"virtual_server": "web", "real": "198.18.1.1:8080"}, "configuration file (lb.yaml"),
        ("real_remove", {"virtual_server": "web", "real": "198.18.1.1"}, "not `real add`"),
        ("real_add", {"virtual_server": "nope", "real": "198.18.1.9"}, "virtual servers: dsr, tun6, web"),
        ("real_add", {"virtual_server": "web", "real": "198.18.1.9", "weight": "-1"}, "not a whole number"),
        (
            "real_add",
            {"virtual_server": "web", "real": "198.18.1.9", "weight": "\u0661"},
            "not a whole number",
        ),
        ("real_add", {"virtual_server": "web", "real": "198.18.1.9:99999"}, "port out of range"),
        ("real_weight", {"virtual_server": "web", "real": "198.18.1.9", "weight": "1"}, "has no real"),
        ("real_add", {"virtual_server": "dsr", "real": "198.18.1.9:8443"}, "keeps the destination port"),
    ],
)
def test_refused_commands_say_why_and_change_nothing(name: str, args: dict[str, str], message: str) -> None:
    d = FakeDaemon()
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        command(d, name, **args)
    assert d.applied == 0 and d.o == Overrides()


DISCOVERY = """\
virtual_servers:
  - name: web
    address: {vip}
    port: 80
    quorum: {{min_up: 3}}
    discovery:
      dns: {dns}
    reals: []
"""


@pytest.mark.parametrize(
    ("vip", "dns", "problem"),
    [
        ("198.18.0.10", "{name: web.example., type: AAAA}", "lb.yaml:7:39: AAAA records give IPv6 reals"),
        ("2001:db8::10", "{name: web.example., type: A}", "lb.yaml:7:39: A records give IPv4 reals"),
        (
            "198.18.0.10",
            "{name: web.example., nameservers: [web1]}",
            "lb.yaml:7:47: expected ADDRESS, ADDRESS:PORT",
        ),
        (
            "198.18.0.10",
            "{name: web.example., nameservers: ['198.18.0.53:99999']}",
            "lb.yaml:7:47: '198.18.0.53:99999'",
        ),
        (
            "198.18.0.10",
            "{name: web.example., nameservers: ['198.18.0.53:53', '198.18.0.54:5353']}",
            "lb.yaml:7:46: the name servers must share one port",
        ),  # fmt: skip
        (
            "198.18.0.10",
            "{name: web.example., min_ttl: 10m}",
            "lb.yaml:7:42: min_ttl 600s is above max_ttl 300s",
        ),
        ("198.18.0.10", "{type: A}", "lb.yaml:7:12: 'name' is required here"),
    ],
)
def test_discovery_mistakes_are_refused_at_their_place(vip: str, dns: str, problem: str) -> None:
    from ipvsmgr.config import ConfigError

    with pytest.raises(ConfigError) as e:
        cfg(DISCOVERY.format(vip=vip, dns=dns))
    assert any(str(p).startswith(problem) for p in e.value.problems), [str(p) for p in e.value.problems]


def test_discovery_reads_with_its_defaults_and_a_quorum_is_not_judged_on_the_empty_list() -> None:
    c = cfg(
        DISCOVERY.format(vip="2001:db8::10", dns="{name: web.example., nameservers: ['[2001:db8::53]:5353']}")
    )
    d = c.virtual_servers[0].discovery
    assert d is not None and (d.dns.type, d.dns.nameservers, d.debounce, d.max_removed) == (
        "AAAA", (("2001:db8::53", 5353),), 1.0, 0.5,
    )  # fmt: skip
    assert d.name == "dns:web.example."


def test_etcd_discovery_reads_and_one_source_only() -> None:
    from ipvsmgr.config import ConfigError

    c = cfg(DISCOVERY.format(vip="198.18.0.10", dns="{name: x.}").replace(
        "      dns: {name: x.}\n",
        "      etcd: {endpoints: ['http://198.18.0.5:2379', '[2001:db8::5]:2379/'], prefix: /lb/web/}\n",
    ))  # fmt: skip
    d = c.virtual_servers[0].discovery
    assert d is not None and d.etcd is not None and d.dns is None
    assert d.etcd.endpoints == (("198.18.0.5", 2379), ("2001:db8::5", 2379)) and d.name == "etcd:/lb/web/"
    both = DISCOVERY.format(vip="198.18.0.10", dns="{name: x.}") .replace(
        "      dns: {name: x.}\n", "      dns: {name: x.}\n      etcd: {endpoints: ['h:1'], prefix: /p/}\n"
    )  # fmt: skip
    with pytest.raises(ConfigError, match="lb.yaml:7:7: discovery needs one source"):
        cfg(both)
    with pytest.raises(ConfigError, match=r"lb.yaml:7:26: expected HOST:PORT or http://HOST:PORT"):
        bad = "      etcd: {endpoints: ['https://h:1'], prefix: /p/}\n"
        cfg(DISCOVERY.format(vip="198.18.0.10", dns="{name: x.}").replace("      dns: {name: x.}\n", bad))
