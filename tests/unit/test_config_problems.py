"""Issue 16: every problem in one run, no follow-on problems, did-you-mean, precise positions,
the rules operators trip on, and the speed of a large file with a mistake in it."""

from __future__ import annotations

import copy
import functools
import json
import operator
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ipvsmgr.config import Config, ConfigError, Problem, load, load_text
from ipvsmgr.config.yamlsource import parse
from tests.unit.test_config_worker import big

F = "lb.yaml"
ROOT = Path(__file__).resolve().parents[2]


def problems(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as e:
        load_text(text, F)
    return e.value.problems


def at(text: str, needle: str, nth: int = 1) -> tuple[int, int]:
    idx = -1
    for _ in range(nth):
        idx = text.index(needle, idx + 1)
    return text.count("\n", 0, idx) + 1, idx - (text.rfind("\n", 0, idx) + 1) + 1


def where(found: list[Problem]) -> list[tuple[int, int]]:
    return [(p.line, p.col) for p in found]


def show(found: list[Problem]) -> str:
    return "\n".join(map(str, found))


# ---------------------------------------------------------------- 1. every problem in one run

VRRP_TWO_MISTAKES = """\
vrrp:
  instances:
    - name: outside
      interface: eth0
      vrid: 51
      priority: 0
      advert_interval: 5ms
      virtual_addresses: [198.18.0.100]
"""


def test_a_schema_error_in_an_instance_does_not_hide_the_next_mistake() -> None:
    got = problems(VRRP_TWO_MISTAKES)
    assert where(got) == [at(VRRP_TWO_MISTAKES, "0\n", 2), at(VRRP_TWO_MISTAKES, "5ms")], show(got)
    assert "below the minimum of 1" in got[0].message
    assert "advert_interval must be 10ms-40.95s" in got[1].message


def test_a_schema_error_in_a_virtual_server_does_not_hide_the_next_mistake() -> None:
    text = "virtual_servers:\n  - {address: 198.18.0.1, port: 80, scheduler: foo, one_packet: true}\n"
    got = problems(text)
    assert where(got) == [at(text, "foo"), at(text, "true")], show(got)
    assert "one_packet only applies to udp" in got[1].message


def test_a_schema_error_in_bgp_does_not_hide_an_announcement_mistake() -> None:
    text = """\
virtual_servers:
  - {name: web, address: 198.18.100.1, port: 80}
bgp:
  local_as: 65001
  router_id: 198.18.0.256
  peers: [{address: 198.18.0.1, as: 65000, local_address: 198.18.0.2}]
  announce:
    - prefix: 198.18.100.1/24
"""
    got = problems(text)
    assert where(got) == [at(text, "198.18.0.256"), at(text, "198.18.100.1/24")], show(got)
    assert "has host bits set" in got[1].message


def test_a_bad_real_does_not_hide_the_next_mistake_in_it() -> None:
    text = """\
virtual_servers:
  - address: 198.18.0.1
    port: 80
    reals:
      - {address: 198.18.1.1, weight: -1, lower_threshold: 5}
"""
    got = problems(text)
    assert where(got) == [at(text, "-1"), at(text, "5}")], show(got)
    assert "lower_threshold needs an upper_threshold" in got[1].message


# ---------------------------------------------------------------- 2. no follow-on problems

MISSPELT_SCHEDULER = """\
virtual_servers:
  - name: web
    address: 198.18.100.1
    port: 80
    scheduler: mhh
    scheduler_flags: [mh-port, mh-fallback]
    forwarding: dr
    health_check: {type: tcp}
    reals:
      - address: 198.18.2.11
vrrp:
  instances:
    - name: outside
      interface: eth0
      vrid: 51
      virtual_addresses: [198.18.100.1]
      track:
        virtual_servers: [{name: web}]
bgp:
  local_as: 65001
  router_id: 198.18.0.2
  peers: [{address: 198.18.0.1, as: 65000, local_address: 198.18.0.2}]
  announce:
    - prefix: 198.18.100.1
    - prefix: 198.18.100.0/31
      virtual_servers: [web]
xdp:
  interfaces: [eth0]
ipvs:
  connection_sync: {interface: eth1}
"""


def test_a_misspelt_scheduler_gives_one_problem() -> None:
    got = problems(MISSPELT_SCHEDULER)
    assert len(got) == 1, show(got)
    assert where(got) == [at(MISSPELT_SCHEDULER, "mhh")]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("    forwarding: dr\n", "    forwarding: dsr\n"),  # the reals' forwarding is unknown, not nat
        ("      - address: 198.18.2.11\n", "      - address: 198.18.2.1111\n"),  # the only real
        ("    port: 80\n", "    port: 80000\n"),  # the virtual server cannot be built at all
        ("    health_check: {type: tcp}\n", "    health_check: {type: tcpp}\n"),
        ("    address: 198.18.100.1\n", "    address: 198.18.100.1/32\n"),
        ("      vrid: 51\n", "      vrid: 0\n"),  # the instance cannot be built: still known
        ("  router_id: 198.18.0.2\n", "  router_id: me\n"),
    ],
    ids=["forwarding", "real-address", "port", "check-type", "vs-address", "vrid", "router-id"],
)
def test_one_mistake_gives_one_problem(old: str, new: str) -> None:
    text = MISSPELT_SCHEDULER.replace("scheduler: mhh", "scheduler: mh").replace(old, new)
    assert new in text
    got = problems(text)
    assert len(got) == 1, show(got)
    assert where(got)[0][0] == at(text, new)[0]


SYNC_GROUP = """\
virtual_servers:
  - {name: web, address: 198.18.0.100, port: 80, reals: [{address: 198.18.1.11}]}
vrrp:
  instances:
    - name: outside
      interface: eth0
      vrid: 51
      virtual_addresses: [198.18.0.100]
      track:
        TRACK
    - name: inside
      interface: eth1
      vrid: 52
      virtual_addresses: [198.18.1.1]
  sync_groups:
    - {name: gateway, instances: [outside, inside]}
bgp:
  local_as: 65001
  router_id: 198.18.0.2
  peers: [{address: 198.18.0.1, as: 65000, local_address: 198.18.0.2}]
  announce:
    - {prefix: 198.18.0.100, when: {vrrp-master: outside}}
ipvs:
  connection_sync: {interface: eth1, follow: outside}
"""


@pytest.mark.parametrize(
    "track",
    [
        "virtual_servers: [{name: wbe}]",  # a semantic mistake
        "interfaces: [{name: eth1, wieght: -10}]",  # a schema mistake
        "scripts: [{argv: [], weight: -10}]",
        "files: [{path: /run/w, weight: 300}]",
    ],
    ids=["vs-name", "key", "argv", "weight"],
)
def test_a_misspelt_tracking_target_leaves_the_instance_known(track: str) -> None:
    text = SYNC_GROUP.replace("TRACK", track)
    got = problems(text)
    assert len(got) == 1, show(got)
    assert where(got)[0][0] == at(text, track)[0]


def test_a_refused_instance_is_still_known_by_name() -> None:
    text = SYNC_GROUP.replace("TRACK", "interfaces: [{name: eth1}]").replace("vrid: 52", "vrid: 256")
    got = problems(text)
    assert len(got) == 1, show(got)
    assert where(got) == [at(text, "256")]


def test_a_refused_peer_still_counts_for_its_family() -> None:
    text = """\
bgp:
  local_as: 65001
  router_id: 198.18.0.2
  peers: [{address: 198.18.0.1, as: 0, local_address: 198.18.0.2}]
  announce:
    - {prefix: 198.18.100.1, when: always}
"""
    got = problems(text)
    assert where(got) == [at(text, "0,")], show(got)


def test_a_duplicate_instance_is_still_known_by_name() -> None:
    text = """\
vrrp:
  instances:
    - {name: a, interface: eth0, vrid: 7, virtual_addresses: [198.18.0.1]}
    - {name: b, interface: eth0, vrid: 7, virtual_addresses: [198.18.0.2]}
  sync_groups:
    - {name: g, instances: [a, b]}
"""
    got = problems(text)
    assert len(got) == 1, show(got)
    assert "VRID 7 is already used for IPv4 on eth0 (line 3)" in got[0].message


def _leaves(x: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(x, dict):
        for k, v in x.items():
            yield path + (k,)
            yield from _leaves(v, path + (k,))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _leaves(v, path + (i,))


def _examples() -> list[tuple[str, Any]]:
    paths = sorted((ROOT / "etc" / "examples").glob("*.yaml"))
    return [(p.name, yaml.safe_load(p.read_text())) for p in paths]


@pytest.mark.parametrize(("name", "data"), _examples(), ids=lambda v: v if isinstance(v, str) else "")
def test_one_bad_value_anywhere_gives_one_problem(name: str, data: Any) -> None:
    """Every value of every example, made one the schema refuses: exactly one problem, on its line."""
    for path in _leaves(data):
        for bad in ({"zz": [1]}, "\u2603"):
            d = copy.deepcopy(data)
            parent = functools.reduce(operator.getitem, path[:-1], d)
            if isinstance(parent[path[-1]], (dict, list)):
                continue
            parent[path[-1]] = bad
            try:
                load_text(json.dumps(d, indent=1), F)
            except ConfigError as e:
                assert len(e.problems) == 1, (path, show(e.problems))


@pytest.mark.parametrize(("name", "data"), _examples(), ids=lambda v: v if isinstance(v, str) else "")
def test_a_misspelt_key_anywhere_gives_one_problem(name: str, data: Any) -> None:
    """Every key of every example, misspelt: one problem, the unknown key with its suggestion."""
    for path in _leaves(data):
        d = copy.deepcopy(data)
        parent = functools.reduce(operator.getitem, path[:-1], d)
        if not isinstance(parent, dict):
            continue
        parent[f"{path[-1]}x"] = parent.pop(path[-1])
        with pytest.raises(ConfigError) as e:
            load_text(json.dumps(d, indent=1), F)
        (p,) = e.value.problems
        assert p.message.endswith(f"did you mean {path[-1]!r}?"), (path, show(e.value.problems))


# ---------------------------------------------------------------- 3. did you mean

VS_ENUM = "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    {field}: {value}\n"
REAL_ENUM = (
    "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    reals:\n"
    "      - address: 198.18.1.1\n        forwarding: tunnel\n        {field}: {value}\n"
)


@pytest.mark.parametrize(
    ("template", "field", "value", "suggestion"),
    [
        (VS_ENUM, "scheduler", "mhh", "mh"),
        (VS_ENUM, "scheduler", "WLC", "wlc"),
        (VS_ENUM, "scheduler", "maglev", "mh"),
        (VS_ENUM, "forwarding", "masq", "nat"),
        (VS_ENUM, "forwarding", "MASQ", "nat"),
        (VS_ENUM, "forwarding", "NAT", "nat"),
        (VS_ENUM, "forwarding", "masquerade", "nat"),
        (VS_ENUM, "forwarding", "gate", "dr"),
        (VS_ENUM, "forwarding", "droute", "dr"),
        (VS_ENUM, "forwarding", "direct", "dr"),
        (VS_ENUM, "forwarding", "DR", "dr"),
        (VS_ENUM, "forwarding", "dsr", "dr"),
        (VS_ENUM, "forwarding", "tun", "tunnel"),
        (VS_ENUM, "forwarding", "TUN", "tunnel"),
        (VS_ENUM, "forwarding", "ipip", "tunnel"),
        (VS_ENUM, "forwarding", "tunel", "tunnel"),
        (VS_ENUM, "protocol", "TCP", "tcp"),
        (VS_ENUM, "protocol", "UDP", "udp"),
        (VS_ENUM, "protocol", "sctpp", "sctp"),
        (VS_ENUM, "health_check", "{type: HTTP_GET}", "http"),
        (VS_ENUM, "health_check", "{type: SSL_GET}", "https"),
        (VS_ENUM, "health_check", "{type: TCP_CHECK}", "tcp"),
        (VS_ENUM, "health_check", "{type: MISC_CHECK}", "script"),
        (VS_ENUM, "health_check", "{type: ping}", "icmp"),
        (VS_ENUM, "health_check", "{type: htpp}", "http"),
        (REAL_ENUM, "tunnel", "{type: IPIP}", "ipip"),
        (REAL_ENUM, "tunnel", "{type: guee}", "gue"),
    ],  # fmt: skip
)
def test_enum_values_did_you_mean(template: str, field: str, value: str, suggestion: str) -> None:
    text = template.format(field=field, value=value)
    got = problems(text)
    assert len(got) == 1, show(got)
    assert got[0].message.endswith(f"; did you mean {suggestion!r}?"), show(got)
    assert "expected one of" in got[0].message and "\n" not in got[0].message


def test_no_suggestion_when_nothing_is_close() -> None:
    text = VS_ENUM.format(field="scheduler", value="zzzzzz")
    (p,) = problems(text)
    assert "did you mean" not in p.message


def test_keepalived_key_names_get_a_suggestion() -> None:
    text = "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    lb_algo: rr\n"
    (p,) = problems(text)
    assert p.message.endswith("did you mean 'scheduler'?"), str(p)


# ---------------------------------------------------------------- 4. precise positions


def test_a_byte_that_is_not_utf8_is_reported_at_its_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "lb.yaml"
    path.write_bytes(b"virtual_servers:\n  - name: w\xe9b\n    address: 198.18.0.1\n")
    with pytest.raises(ConfigError) as e:
        load(str(path))
    (p,) = e.value.problems
    assert (p.line, p.col) == (2, 12), str(p)
    assert "0xe9" in p.message and "UTF-8" in p.message
    assert "position" not in p.message


def test_a_non_utf8_byte_after_multibyte_characters_counts_characters(tmp_path: Path) -> None:
    path = tmp_path / "lb.yaml"
    path.write_bytes("# héhé\nvirtual_servers: []  # é".encode() + b"\xff\n")
    with pytest.raises(ConfigError) as e:
        load(str(path))
    (p,) = e.value.problems
    assert (p.line, p.col) == (2, 25), str(p)


@pytest.mark.parametrize(
    ("text", "opening"),
    [
        (
            "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n"
            "    scheduler_flags: [mh-port, mh-fallback\n    reals:\n      - address: 198.18.1.1\n",
            "[",
        ),
        (
            "virtual_servers:\n  - {address: 198.18.0.1, port: 80,\n     reals: []\n"
            "  - address: 198.18.0.2\n",
            "{",
        ),
        ("ipvs: {timeouts: {tcp: 1m}\n", "{"),
        ("vrrp:\n  instances:\n    - virtual_addresses: [198.18.0.1\n", "["),
    ],  # fmt: skip
    ids=["flow-sequence", "flow-mapping", "end-of-file", "end-of-file-sequence"],
)
def test_an_unclosed_bracket_is_reported_at_its_opening(text: str, opening: str) -> None:
    (p,) = problems(text)
    assert (p.line, p.col) == at(text, opening), str(p)
    assert f"'{opening}'" in p.message and "never closed" in p.message, str(p)


def _node_positions(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any, Any]]:
    """(path, value mark, key mark) of every node, from PyYAML's own composer."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            yield path + (k.value,), v.start_mark, k.start_mark
            yield from _node_positions(v, path + (k.value,))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            yield path + (i,), v.start_mark, None
            yield from _node_positions(v, path + (i,))


@pytest.mark.parametrize("path", sorted((ROOT / "etc" / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_positions_found_for_some_paths_are_where_pyyaml_has_them(path: Path) -> None:
    # problems look their positions up all at once, in a pass that records only those
    text = path.read_text()
    expected = list(_node_positions(yaml.compose(text, Loader=yaml.SafeLoader)))
    for step in (1, 7):  # every path asked at once, and a few at a time
        doc = parse(text, F)
        for i in range(0, len(expected), step):
            doc.prefetch([p for p, _, _ in expected[i : i + step]])
        for p, value, key in expected:
            assert doc.locate(p) == (value.line + 1, value.column + 1), p
            if key is not None:
                assert doc.locate(p, key=True) == (key.line + 1, key.column + 1), p


def test_a_fwmark_service_points_at_the_offending_key() -> None:
    text = "virtual_servers:\n  - name: web\n    fwmark: 7\n    port: 80\n    protocol: tcp\n"
    got = problems(text)
    assert where(got) == [at(text, "port"), at(text, "protocol")], show(got)
    assert all("a fwmark service has no address, port or protocol" in p.message for p in got)


def test_family_without_fwmark_points_at_family() -> None:
    text = "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    family: ipv4\n"
    (p,) = problems(text)
    assert (p.line, p.col) == at(text, "family"), str(p)


def inst(name: str, interface: str, vrid: int, vip: str) -> str:
    return f"    - {{name: {name}, interface: {interface}, vrid: {vrid}, virtual_addresses: [{vip}]}}\n"


TWO = "vrrp:\n  instances:\n" + inst("a", "eth0", 7, "198.18.0.1") + inst("b", "eth0", 8, "198.18.0.2")


@pytest.mark.parametrize(
    ("text", "needle", "nth", "fragment"),
    [
        (
            "virtual_servers:\n  - {address: 198.18.0.1, port: 80}\n  - {address: 198.18.0.1, port: 80}\n",
            "{address",
            2,
            "(first on line 2)",
        ),
        (
            "virtual_servers:\n  - {name: a, address: 198.18.0.1, port: 80}\n"
            "  - {name: a, address: 198.18.0.2, port: 80}\n",
            "a,",
            2,
            "line 2",
        ),
        (
            "vrrp:\n  instances:\n" + inst("a", "eth0", 7, "198.18.0.1") + inst("b", "eth0", 7, "198.18.0.2"),
            "7,",
            2,
            "line 3",
        ),
        (
            "vrrp:\n  instances:\n" + inst("a", "eth0", 7, "198.18.0.1") + inst("b", "eth1", 8, "198.18.0.1"),
            "198.18.0.1",
            2,
            "line 3",
        ),
        (
            TWO + "  sync_groups:\n    - {name: g, instances: [a, b]}\n    - {name: h, instances: [b, a]}\n",
            "[b",
            1,
            "line 6",
        ),
        (
            TWO + "  sync_groups:\n    - {name: g, instances: [a, b]}\n    - {name: g, instances: [a, b]}\n",
            "g,",
            2,
            "line 6",
        ),
        ("virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    port: 81\n", "port: 81", 1, "line 3"),
        (
            "vrrp:\n  instances:\n    - {name: a, interface: eth0, vrid: 7,\n"
            "       virtual_addresses: [198.18.0.1, 198.18.0.2, 198.18.0.1]}\n",
            "198.18.0.1]",
            1,
            "line 4",
        ),
    ],  # fmt: skip
    ids=["vs", "vs-name", "vrid", "vip", "sync-member", "sync-name", "yaml-key", "list-item"],
)
def test_a_duplicate_names_the_first_definitions_line(
    text: str, needle: str, nth: int, fragment: str
) -> None:
    got = problems(text)
    line, col = at(text, needle, nth)
    col += needle.startswith("[")
    assert any((p.line, p.col) == (line, col) and fragment in p.message for p in got), show(got)


# ---------------------------------------------------------------- 5. rules operators trip on

QUORUM = """\
virtual_servers:
  - address: 198.18.0.1
    port: 80
    quorum: {quorum}
    reals:
      - {{address: 198.18.1.1, weight: 2}}
      - {{address: 198.18.1.2, weight: 3}}
"""


@pytest.mark.parametrize(
    ("quorum", "needle", "fragment"),
    [
        ("{min_up: 3}", "3}", "min_up 3 needs 3 reals up, and there are 2"),
        ("{min_weight: 6}", "6}", "min_weight 6 is more than the weight of all the reals together (5)"),
        ("{min_up: 2, hysteresis: 1}", "1}", "once lost the quorum never comes back"),
        ("{min_weight: 5, hysteresis: 1}", "1}", "once lost the quorum never comes back"),
    ],
)
def test_a_quorum_no_set_of_reals_can_reach(quorum: str, needle: str, fragment: str) -> None:
    text = QUORUM.format(quorum=quorum)
    (p,) = problems(text)
    assert (p.line, p.col) == at(text, needle), str(p)
    assert fragment in p.message, str(p)


@pytest.mark.parametrize("quorum", ["{min_up: 2}", "{min_weight: 5}", "{min_up: 1, hysteresis: 1}"])
def test_a_reachable_quorum_is_fine(quorum: str) -> None:
    load_text(QUORUM.format(quorum=quorum), F)


def test_script_checks_may_raise_the_weight() -> None:
    # a script check's exit status 2-255 sets the weight to status - 2 while up
    text = QUORUM.format(quorum="{min_weight: 200}").replace(
        "    reals:", "    health_check: {type: script, script: {argv: [/bin/w]}}\n    reals:"
    )
    load_text(text, F)


UNICAST = """\
vrrp:
  instances:
    - name: inside
      interface: eth1
      vrid: 52
      virtual_addresses: [198.18.1.1/24]
      source_address: 198.18.1.2
      unicast_peers: [{peer}]
    - name: outside
      interface: eth0
      vrid: 51
      virtual_addresses: [198.18.0.100/24]
"""


@pytest.mark.parametrize(
    ("peer", "fragment"),
    [
        ("198.18.1.2", "is this node's source_address"),
        ("198.18.1.1", "is a virtual address of instance 'inside'"),
        ("198.18.0.100", "is a virtual address of instance 'outside'"),
    ],
)
def test_a_unicast_peer_that_is_this_nodes_own_address(peer: str, fragment: str) -> None:
    text = UNICAST.format(peer=peer)
    (p,) = problems(text)
    line, col = at(text, f"[{peer}]")
    assert (p.line, p.col) == (line, col + 1), str(p)
    assert fragment in p.message, str(p)


def test_another_unicast_peer_is_fine() -> None:
    load_text(UNICAST.format(peer="198.18.1.3"), F)


VIPS = """\
virtual_servers:
  - {name: web, address: 198.18.0.100, port: 80}
  - {name: api, address: 198.18.0.101, port: 80}
  - {name: marked, fwmark: 3}
vrrp:
  instances:
    - {name: outside, interface: eth0, vrid: 51, virtual_addresses: [198.18.0.100/24]}
"""


def test_a_vip_on_no_vrrp_instance_is_a_warning() -> None:
    cfg = load_text(VIPS, F)
    (w,) = cfg.warnings
    assert (w.line, w.col) == at(VIPS, "198.18.0.101"), str(w)
    assert "198.18.0.101" in w.message and "VRRP" in w.message
    assert str(w).startswith(f"{F}:3:") and ": warning: " in str(w)


def test_warnings_come_with_problems_too() -> None:
    with pytest.raises(ConfigError) as e:
        load_text(VIPS + "    - {name: x, interface: eth0, vrid: 300, virtual_addresses: [198.18.0.9]}\n", F)
    assert len(e.value.problems) == 1
    assert [w.line for w in e.value.warnings] == [3]


def test_no_warning_without_vrrp_or_when_bgp_announces_the_vip() -> None:
    assert load_text(VIPS.split("vrrp:")[0], F).warnings == ()
    bgp = (
        "bgp:\n  local_as: 65001\n  router_id: 198.18.0.2\n"
        "  peers: [{address: 198.18.0.1, as: 65000, local_address: 198.18.0.2}]\n"
        "  announce: [{prefix: 198.18.0.101}]\n"
    )
    assert load_text(VIPS + bgp, F).warnings == ()


def test_the_same_vrid_twice_on_one_interface_and_family() -> None:
    text = """\
vrrp:
  instances:
    - {name: a, interface: eth0, vrid: 7, virtual_addresses: [198.18.0.1]}
    - {name: b, interface: eth0, vrid: 7, virtual_addresses: [198.18.0.2]}
    - {name: c, interface: eth1, vrid: 7, virtual_addresses: [198.18.0.3]}
    - {name: d, interface: eth0, vrid: 7, virtual_addresses: ["2001:db8::1"]}
"""
    (p,) = problems(text)
    assert (p.line, p.col) == at(text, "7,", 2)
    assert p.message == "VRID 7 is already used for IPv4 on eth0 (line 3)"


def test_the_same_vip_in_two_instances() -> None:
    text = """\
vrrp:
  instances:
    - {name: a, interface: eth0, vrid: 7, virtual_addresses: [198.18.0.1/24]}
    - {name: b, interface: eth1, vrid: 8, virtual_addresses: [198.18.0.2, 198.18.0.1/32]}
"""
    (p,) = problems(text)
    assert (p.line, p.col) == at(text, "198.18.0.1/32"), str(p)
    assert "198.18.0.1 is already a virtual address of instance 'a' (line 3)" in p.message


# ---------------------------------------------------------------- 6. a large file with a mistake

N = 10_000


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def test_a_large_file_with_one_mistake_costs_about_what_a_valid_one_does() -> None:
    good = big(N)
    last = good.rindex("port: 8005}")  # the last virtual server: positions are looked up to the end
    bad = good[:last] + "port: 80050}" + good[last + len("port: 8005}") :]
    t0 = _cpu()
    load_text(good, F)
    valid = _cpu() - t0
    t0 = _cpu()
    with pytest.raises(ConfigError) as e:
        load_text(bad, F)
    mistake = _cpu() - t0
    assert len(e.value.problems) == 1
    assert mistake < 1.5 * valid + 0.3, (valid, mistake)


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/status")
def test_a_large_file_with_one_mistake_stays_small(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(
        big(N).replace("vs5000, address: 198.18.19.136, port: 80", "vs5000, address: x, port: 80")
    )
    # VmHWM: the peak since exec (ru_maxrss would start at the forking test process's own size)
    code = (
        "import sys\n"
        "from ipvsmgr.config import ConfigError, load\n"
        "try:\n    load(sys.argv[1])\nexcept ConfigError as e:\n    print(len(e.problems))\n"
        "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    count, kb = out.stdout.split()
    assert count == "1"
    assert int(kb) < 150 * 1024, (kb, time.monotonic() - t0)


def test_config_warnings_default_to_none() -> None:
    assert Config(source=F, virtual_servers=()).warnings == ()
