"""The bgp: section, the route decisions and ExaBGP's configuration and messages (no processes)."""

from __future__ import annotations

import json

import pytest

from ipvsmgr.bgp import exabgp
from ipvsmgr.bgp.routes import Health, commands, desired
from ipvsmgr.config import ConfigError, load_text
from ipvsmgr.config.model import BgpConfig

F = "lb.yaml"

BASE = """\
virtual_servers:
  - {name: web, address: 198.18.100.1, port: 80, scheduler: mh, forwarding: dr,
     reals: [{address: 198.18.1.1}]}
  - {name: tls, address: 198.18.100.1, port: 443, scheduler: mh, forwarding: dr,
     reals: [{address: 198.18.1.1}]}
  - {name: dns, address: 198.18.100.2, port: 53, protocol: udp, reals: [{address: 198.18.1.2}],
     quorum: {min_up: 1}}
  - {name: v6, address: "2001:db8::100", port: 80, reals: [{address: "2001:db8::1:1"}]}
vrrp:
  instances:
    - {name: outside, interface: eth0, vrid: 51, priority: 150, virtual_addresses: [198.18.100.9]}
"""


def bgp(text: str) -> BgpConfig:
    cfg = load_text(BASE + text, F).bgp
    assert cfg is not None
    return cfg


def problems(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(ConfigError) as e:
        load_text(BASE + text, F)
    return [(p.line, p.col, p.message) for p in e.value.problems]


FULL = """\
bgp:
  local_as: 65001
  router_id: 198.18.0.2
  withdraw_grace: 2s
  exabgp: [/usr/sbin/exabgp]
  peers:
    - {address: 198.18.0.1, as: 65000, local_address: 198.18.0.2, password: "s3cret\\"x", multihop: 3}
    - {address: "2001:db8::ff", as: 65000, local_address: "2001:db8::2", hold_time: 30s}
  announce:
    - prefix: 198.18.100.1
      med: 10
      local_preference: 200
      communities: ["65000:100", "65000:200"]
      large_communities: ["65000:1:2"]
    - {prefix: 198.18.100.9/32, when: {vrrp-master: outside}}
    - {prefix: 198.18.101.0/24, when: always, next_hop: 198.18.0.3}
    - {prefix: "2001:db8::100"}
"""


def test_full_section() -> None:
    c = bgp(FULL)
    assert (c.local_as, c.router_id, c.withdraw_grace, c.exabgp) == (
        65001,
        "198.18.0.2",
        2.0,
        ("/usr/sbin/exabgp",),
    )
    p4, p6 = c.peers
    assert (p4.address, p4.asn, p4.hold_time, p4.password, p4.multihop, p4.family) == (
        "198.18.0.1", 65000, 9, 's3cret"x', 3, 2,
    )  # fmt: skip
    assert (p6.hold_time, p6.family) == (30, 10)
    a, v, s, six = c.announcements
    assert a.prefix == "198.18.100.1/32" and a.when == "healthy"
    assert a.virtual_servers == ("web", "tls")  # found by address
    assert (a.med, a.local_preference, a.communities, a.large_communities) == (
        10, 200, ("65000:100", "65000:200"), ("65000:1:2",),
    )  # fmt: skip
    assert (v.when, v.vrrp_instance) == ("vrrp-master", "outside")
    assert (s.when, s.next_hop, s.prefix) == ("always", "198.18.0.3", "198.18.101.0/24")
    assert six.prefix == "2001:db8::100/128" and six.virtual_servers == ("v6",)


def test_no_section_is_none() -> None:
    assert load_text(BASE, F).bgp is None


HEAD = """\
bgp:
  local_as: 65001
  router_id: 198.18.0.2
  peers:
    - {address: 198.18.0.1, as: 65000, local_address: 198.18.0.2}
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            HEAD + "  hold_time: 2s\n",
            (17, 14, "a hold time is 0 or 3s to 65535s in whole seconds (RFC 4271), not '2s'"),
        ),
        (
            HEAD + "    - {address: 198.18.0.1, as: 65002, local_address: 198.18.0.2}\n",
            (17, 17, "peer 198.18.0.1 is already listed on line 16"),
        ),
        (
            HEAD + '    - {address: "2001:db8::1", as: 65002, local_address: 198.18.0.2}\n',
            (17, 58, "local_address 198.18.0.2 is IPv4 but the peer 2001:db8::1 is IPv6"),
        ),
        (
            HEAD + "  announce:\n    - prefix: 198.18.100.1/24\n",
            (18, 15, "198.18.100.1/24 has host bits set: the prefix is 198.18.100.0/24"),
        ),
        (
            HEAD + "  announce:\n    - prefix: 198.18.100.7\n",
            (
                18,
                15,
                "no virtual server has an address in 198.18.100.7/32: name the ones "
                "whose health decides with `virtual_servers`, or use when: always",
            ),
        ),
        (
            HEAD + "  announce:\n    - {prefix: 198.18.100.7, virtual_servers: [web, nope]}\n",
            (18, 53, "no virtual server named 'nope' (names: dns, tls, v6, web)"),
        ),
        (
            HEAD + "  announce:\n    - {prefix: 198.18.100.7, when: {vrrp-master: inside}}\n",
            (18, 50, "no VRRP instance named 'inside' (instances: outside)"),
        ),
        (
            HEAD + "  announce:\n    - {prefix: 198.18.100.7, when: always, virtual_servers: [web]}\n",
            (18, 61, "virtual_servers only applies to when: healthy, not always"),
        ),
        (
            HEAD + '  announce:\n    - {prefix: "2001:db8::100"}\n',
            (
                18,
                16,
                "no IPv6 peer to announce 2001:db8::100/128 to (a prefix goes to the "
                "peers of its own family)",
            ),
        ),
        (
            HEAD + "  announce:\n    - {prefix: 198.18.100.1, next_hop: '2001:db8::1'}\n",
            (18, 40, "next hop 2001:db8::1 is not of the prefix's family"),
        ),
        (
            HEAD + "  announce:\n    - {prefix: 198.18.100.1, communities: ['65000:65536']}\n",
            (18, 44, "65000:65536: each part of a community is at most 65535"),
        ),
        (
            HEAD + "  announce:\n    - {prefix: 198.18.100.1}\n    - {prefix: 198.18.100.1/32}\n",
            (19, 16, "198.18.100.1/32 is already announced on line 18"),
        ),
        (
            HEAD + "  announce:\n    - {prefix: 198.18.100.1, when: sometimes}\n",
            (18, 36, "expected healthy, always or {vrrp-master: INSTANCE} (got string 'sometimes')"),
        ),
        (
            HEAD.replace("router_id: 198.18.0.2", "router_id: '2001:db8::1'"),
            (14, 14, "expected an IPv4 address (the BGP router id) (got string '2001:db8::1')"),
        ),
        (
            HEAD.replace("as: 65000", "as: 0"),
            (16, 33, "expected an AS number from 1 to 4294967295 (got int 0)"),
        ),
    ],
)
def test_problems_point_at_the_node(text: str, expected: tuple[int, int, str]) -> None:
    assert expected in problems(text)


def test_every_problem_at_once() -> None:
    text = HEAD + "  hold_time: 1s\n  announce:\n    - prefix: 198.18.100.1/24\n    - prefix: 198.18.100.7\n"
    assert len(problems(text)) == 3


# ------------------------------------------------------------ decisions


def _decide(
    c: BgpConfig, health: dict[str, Health], vrrp: dict[str, str] | None = None, drained: bool = False
):  # type: ignore[no-untyped-def]
    return desired(c, health, vrrp or {}, drained)


UP = Health(False, True, 1)
DOWN = Health(False, True, 0)  # no quorum rule: no real up means unhealthy


def test_healthy_needs_every_virtual_server() -> None:
    c = bgp(FULL)
    routes, why = _decide(c, {"web": UP, "tls": UP, "v6": UP}, {"outside": "master"})
    assert set(routes) == {"198.18.100.1/32", "198.18.100.9/32", "198.18.101.0/24", "2001:db8::100/128"}
    routes, why = _decide(c, {"web": UP, "tls": DOWN, "v6": UP}, {"outside": "backup"})
    assert set(routes) == {"198.18.101.0/24", "2001:db8::100/128"}
    assert why["198.18.100.1/32"].reason == "no quorum: tls"
    assert why["198.18.100.9/32"].reason == "VRRP outside is backup"
    routes, why = _decide(c, {}, {})  # nothing known yet: only `always`
    assert set(routes) == {"198.18.101.0/24"}


def test_quorum_rule_decides_when_present() -> None:
    c = bgp(HEAD + "  announce:\n    - {prefix: 198.18.100.2}\n")
    assert _decide(c, {"dns": Health(True, False, 3)})[0] == {}
    assert set(_decide(c, {"dns": Health(True, True, 1)})[0]) == {"198.18.100.2/32"}


def test_drain_node_withdraws_everything() -> None:
    c = bgp(FULL)
    routes, why = _decide(c, {"web": UP, "tls": UP, "v6": UP}, {"outside": "master"}, drained=True)
    assert routes == {}
    assert {d.reason for d in why.values()} == {"node drained (ipvsmgr drain-node)"}


def test_commands_go_to_the_peers_of_the_family_withdrawals_first() -> None:
    c = bgp(FULL)
    all_up, _ = _decide(c, {"web": UP, "tls": UP, "v6": UP}, {"outside": "master"})
    first = commands(c, {}, all_up)
    assert first == [
        "neighbor 198.18.0.1 announce route 198.18.100.1/32 next-hop self med 10 local-preference 200 "
        "community [65000:100 65000:200] large-community [65000:1:2]",
        "neighbor 198.18.0.1 announce route 198.18.100.9/32 next-hop self",
        "neighbor 198.18.0.1 announce route 198.18.101.0/24 next-hop 198.18.0.3",
        "neighbor 2001:db8::ff announce route 2001:db8::100/128 next-hop self",
    ]
    some, _ = _decide(c, {"web": UP, "tls": DOWN, "v6": UP}, {"outside": "master"})
    assert commands(c, all_up, some) == [
        "neighbor 198.18.0.1 withdraw route 198.18.100.1/32 next-hop self med 10 local-preference 200 "
        "community [65000:100 65000:200] large-community [65000:1:2]",
    ]
    assert commands(c, some, some) == []


# ------------------------------------------------------------ ExaBGP


def test_configuration_text() -> None:
    text = exabgp.configuration(bgp(FULL), "/run/x/api.sh")
    assert "process ipvsmgr {\n    run /run/x/api.sh;\n    encoder json;\n}" in text
    assert (
        "neighbor 198.18.0.1 {\n    router-id 198.18.0.2;\n    local-address 198.18.0.2;\n"
        "    local-as 65001;\n    peer-as 65000;\n    hold-time 9;\n"
        '    md5-password "s3cret\\"x";\n    outgoing-ttl 3;\n'
        "    family { ipv4 unicast; }\n    api { processes [ ipvsmgr ]; neighbor-changes; }\n}"
    ) in text
    assert (
        "neighbor 2001:db8::ff {" in text and "hold-time 30;" in text and "family { ipv6 unicast; }" in text
    )


def test_api_script_quotes_paths() -> None:
    s = exabgp.api_script("/run/a b/cmd.1", "/run/a b/evt.1", "/run/a b/api.pid")
    assert s.startswith("#!/bin/sh\n")
    assert "exec cat 0<>'/run/a b/cmd.1' 3<&-" in s and "1<>'/run/a b/evt.1' &" in s


STATE = {
    "exabgp": "4.0.1", "time": 1.0, "type": "state",
    "neighbor": {"address": {"local": "198.18.0.2", "peer": "198.18.0.1"}, "asn": {}, "state": "down",
                 "reason": "peer reset"},
}  # fmt: skip


def test_message_reader() -> None:
    r = exabgp.MessageReader()
    line = json.dumps(STATE).encode()
    assert r.feed(b"done\nerr") == [exabgp.Ack(True)]  # a partial line waits
    assert r.feed(b"or\n" + line[:10]) == [exabgp.Ack(False)]
    assert r.feed(line[10:] + b"\n\n") == [exabgp.NeighborState("198.18.0.1", "down", "peer reset")]
    shutdown = json.dumps({"type": "notification", "notification": "shutdown"}).encode()
    assert r.feed(shutdown + b"\nshutdown\n") == [exabgp.Shutdown(), exabgp.Shutdown()]
    assert r.feed(json.dumps({"type": "update"}).encode() + b"\n") == [exabgp.Ignored("update")]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"{nope\n", "not JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'{"type": "state", "neighbor": {"state": "up"}}\n', "a state message without"),
        (b'{"type": "state", "neighbor": 3}\n', "a state message without"),
    ],
)
def test_malformed_messages_are_reported(raw: bytes, why: str) -> None:
    (m,) = exabgp.MessageReader().feed(raw)
    assert isinstance(m, exabgp.Malformed) and m.why.startswith(why)


def test_endless_line_is_dropped() -> None:
    r = exabgp.MessageReader()
    out = r.feed(b"x" * (exabgp.MAX_LINE + 10))
    assert len(out) == 1 and isinstance(out[0], exabgp.Malformed)
    assert r.feed(b"done\n") == [exabgp.Ack(True)]


def test_host_addresses_held_locally() -> None:
    from ipvsmgr.bgp.vips import host_addresses

    c = bgp(FULL)
    # host routes only, and not the VRRP-decided one (VRRP holds that address itself)
    assert host_addresses(c) == {"198.18.100.1", "2001:db8::100"}
    assert c.vip_interface == "lo"


def test_a_starting_node_waits_for_every_first_verdict() -> None:
    c = bgp(FULL)
    starting = Health(False, True, 1, pending=2)  # one real up, two not checked yet
    routes, why = _decide(c, {"web": UP, "tls": starting, "v6": UP}, {"outside": "master"})
    assert "198.18.100.1/32" not in routes
    assert why["198.18.100.1/32"].reason == "waiting for the first health verdicts: tls"


def test_watermarks_withdraw_below_low_and_announce_again_only_at_high() -> None:
    """Seesaw's watermarks: a hysteresis on the share of a service's reals that are up."""
    c = bgp(HEAD + "  announce:\n    - {prefix: 198.18.100.2, watermarks: {low: 0.5, high: 0.8}}\n")
    before = None
    seen = []
    for up in (10, 8, 6, 5, 4, 5, 7, 8, 5, 4):  # of 10 reals
        routes, before = desired(c, {"dns": Health(False, True, up, 0, 10)}, {}, False, before)
        seen.append((up, bool(routes)))
    assert seen == [
        (10, True), (8, True), (6, True), (5, True),  # down to 50 %: still announced
        (4, False), (5, False), (7, False),  # below 50 %: withdrawn, and not back before 80 %
        (8, True), (5, True), (4, False),
    ]  # fmt: skip
    assert before["198.18.100.2/32"].reason == "below the low watermark 50%: dns 40%"
    # a starting node (no decision before) announces only at the high watermark
    assert desired(c, {"dns": Health(False, True, 7, 0, 10)}, {}, False)[0] == {}


@pytest.mark.parametrize(
    ("announce", "expected"),
    [
        ("{prefix: 198.18.100.2, watermarks: {low: 0.9, high: 0.5}}", (18, 48, "low 0.9 is above high 0.5")),
        (
            "{prefix: 198.18.101.0/24, when: always, watermarks: {low: 0.1, high: 0.5}}",
            (18, 59, "watermarks only apply to when: healthy, not always"),
        ),  # fmt: skip
    ],
)
def test_watermark_mistakes(announce: str, expected: tuple[int, int, str]) -> None:
    assert expected in problems(HEAD + f"  announce:\n    - {announce}\n")
