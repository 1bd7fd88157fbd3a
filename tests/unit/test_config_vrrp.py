"""The vrrp: section: defaults, every rule, and where each problem points."""

from __future__ import annotations

import ipaddress

import pytest

from ipvsmgr.config import ConfigError, load_text
from vrrp.instance import Garp, TrackFile, TrackInterface, TrackScript, TrackVirtualServer
from vrrp.machine import Params

F = "lb.yaml"


def problems(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(ConfigError) as e:
        load_text(text, F)
    return [(p.line, p.col, p.message) for p in e.value.problems]


FULL = """\
virtual_servers:
  - {name: web, address: 198.18.0.100, port: 80, reals: [{address: 198.18.1.1}]}
vrrp:
  instances:
    - name: outside
      interface: eth0
      vrid: 51
      priority: 150
      advert_interval: 100ms
      preempt_delay: 5s
      virtual_addresses: [198.18.0.100/24, 198.18.0.101]
      garp: {count: 3, interval: 10ms, refresh: 60s}
      track:
        interfaces: [{name: eth1}, {name: eth2, weight: -20}]
        virtual_servers: [{name: web, weight: -60}]
        files: [{path: /run/lb/weight}]
        scripts: [{argv: [/usr/local/bin/ok, -q], interval: 1s, weight: -30, fall: 2}]
      notify: [/usr/local/bin/vrrp-notify, --quiet]
    - name: inside
      interface: eth1
      vrid: 51
      version: 2
      advert_interval: 2s
      preempt: false
      virtual_addresses: [198.18.5.1/24]
      unicast_peers: [198.18.5.3]
      source_address: 198.18.5.2
    - name: v6
      interface: eth0
      vrid: 51
      virtual_addresses: ["2001:db8::100/64"]
  sync_groups:
    - {name: gw, instances: [outside, inside]}
"""


def test_full_section() -> None:
    cfg = load_text(FULL, F).vrrp
    out, inside, v6 = cfg.instances
    assert out.params == Params(
        vrid=51, priority=150, interval_cs=10, version=3, preempt=True, preempt_delay=5.0
    )
    assert out.vips == (ipaddress.ip_interface("198.18.0.100/24"), ipaddress.ip_interface("198.18.0.101/32"))
    assert out.garp == Garp(3, 0.01, 60.0)
    assert out.track_interfaces == (TrackInterface("eth1", 0), TrackInterface("eth2", -20))
    assert out.track_virtual_servers == (TrackVirtualServer("web", -60),)
    assert out.track_files == (TrackFile("/run/lb/weight", 1),)
    assert out.track_scripts == (TrackScript(("/usr/local/bin/ok", "-q"), 1.0, 2.0, -30, 1, 2, None),)
    assert out.notify == ("/usr/local/bin/vrrp-notify", "--quiet")
    assert out.family == 4 and out.unicast_peers == () and out.source is None
    assert inside.params == Params(vrid=51, priority=100, interval_cs=200, version=2, preempt=False)
    assert inside.unicast_peers == (ipaddress.ip_address("198.18.5.3"),)
    assert inside.source == ipaddress.ip_address("198.18.5.2")
    assert v6.family == 6 and v6.params.interval_cs == 100  # the same VRID: another family
    assert cfg.sync_groups == (("gw", ("outside", "inside")),)


def test_empty_and_absent_sections() -> None:
    assert load_text("vrrp:\n", F).vrrp.instances == ()
    assert load_text("virtual_servers: []\n", F).vrrp.instances == ()


def inst(body: str) -> str:
    return "vrrp:\n  instances:\n    - name: a\n      interface: eth0\n      vrid: 1\n" + body


def test_rules_each_point_at_the_node() -> None:
    text = inst(
        "      version: 2\n"  # line 6
        "      advert_interval: 1500ms\n"  # 7
        '      virtual_addresses: [198.18.0.1, "2001:db8::1"]\n'  # 8
        '      unicast_peers: ["2001:db8::2"]\n'  # 9
    )
    got = problems(text)
    assert (6, 16, "VRRP version 2 is IPv4 only: use version 3 for IPv6") not in got  # first VIP is IPv4
    assert (7, 24, "VRRPv2 advert_interval must be whole seconds, 1s-255s (got 1.5s)") in got
    assert (8, 39, "2001:db8::1 is IPv6 but the first VIP is IPv4: one family per instance") in got
    assert (9, 23, "peer 2001:db8::2 is IPv6 but the VIPs are IPv4") in got
    assert len(got) == 3


def test_v3_interval_steps_and_range() -> None:
    assert problems(inst("      advert_interval: 15ms\n      virtual_addresses: [198.18.0.1]\n")) == [
        (6, 24, "VRRPv3 advert_interval must be 10ms-40.95s in steps of 10ms (got 0.015s)")
    ]
    assert problems(inst("      advert_interval: 41s\n      virtual_addresses: [198.18.0.1]\n"))[0][
        2
    ].endswith("(got 41s)")


def test_v2_is_ipv4_only() -> None:
    got = problems(inst('      version: 2\n      virtual_addresses: ["2001:db8::1"]\n'))
    assert got == [(6, 16, "VRRP version 2 is IPv4 only: use version 3 for IPv6")]


def test_duplicates_and_references() -> None:
    text = """\
virtual_servers:
  - {name: web, address: 198.18.0.100, port: 80, reals: [{address: 198.18.1.1}]}
vrrp:
  instances:
    - {name: a, interface: eth0, vrid: 7, virtual_addresses: [198.18.0.1]}
    - {name: a, interface: eth1, vrid: 8, virtual_addresses: [198.18.0.2]}
    - {name: b, interface: eth0, vrid: 7, virtual_addresses: [198.18.0.3]}
    - {name: c, interface: eth0, vrid: 9, virtual_addresses: [198.18.0.4],
       track: {virtual_servers: [{name: x}]}}
    - {name: d, interface: eth0, vrid: 10, virtual_addresses: [198.18.0.5]}
  sync_groups:
    - {name: g1, instances: [a, nope]}
    - {name: g2, instances: [a, d]}
    - {name: g3, instances: [d, a]}
"""
    got = problems(text)
    assert got == [
        (6, 14, "instance name 'a' is already used on line 5"),
        (7, 40, "VRID 7 is already used for IPv4 on eth0 (line 5)"),
        (9, 41, "no virtual server named 'x' (virtual servers: web)"),
        (12, 33, "no VRRP instance named 'nope' (instances: a, b, c, d)"),
        # g1 was refused, so a joined g2; g3 then repeats both of g2's members
        (14, 30, "instance 'd' is already in sync group 'g2' (line 13)"),
        (14, 33, "instance 'a' is already in sync group 'g2' (line 13)"),
    ]


def test_schema_errors() -> None:
    got = problems(inst("      priority: 0\n      virtual_addresses: [198.18.0.1/33]\n      colour: red\n"))
    assert [(line, col) for line, col, _ in got] == [(6, 17), (7, 27), (8, 7)]
    assert "prefix length" in got[1][2]
    assert "colour" in got[2][2]
    missing = problems("vrrp:\n  instances:\n    - {name: a, interface: eth0}\n")
    assert missing == [(3, 7, "'virtual_addresses' is required here"), (3, 7, "'vrid' is required here")]


def test_authentication_is_none_or_a_v2_password() -> None:
    got = problems(
        inst("      version: 2\n      authentication: pass\n      virtual_addresses: [198.18.0.1]\n")
    )
    assert len(got) == 1 and got[0][:2] == (7, 23)
    assert got[0][2].startswith("none, or {type: pass, password: 1-8 characters}")
    ok = load_text(inst("      authentication: none\n      virtual_addresses: [198.18.0.1]\n"), F)
    assert ok.vrrp.instances[0].params.version == 3 and ok.vrrp.instances[0].password is None
    pw = "      authentication: {type: pass, password: k@l}\n      virtual_addresses: [198.18.0.1]\n"
    ok = load_text(inst("      version: 2\n" + pw), F)
    assert ok.vrrp.instances[0].password == b"k@l" and ok.vrrp.instances[0].auth_data == b"k@l\0\0\0\0\0"
    got = problems(inst(pw))  # version 3 by default
    assert got == [(6, 23, "authentication is VRRPv2's (RFC 5798 removed it): set version: 2")]
    got = problems(inst("      version: 2\n" + pw.replace("k@l", "123456789")))
    assert len(got) == 1 and got[0][:2] == (7, 23) and "1-8 characters" in got[0][2]


def test_accept_false_is_refused_rather_than_ignored() -> None:
    got = problems(inst("      accept: false\n      virtual_addresses: [198.18.0.1]\n"))
    assert len(got) == 1 and got[0][:2] == (6, 15) and got[0][2].startswith("accept: false is not supported")


def test_virtual_mac_names_and_address() -> None:
    text = """\
vrrp:
  instances:
    - {name: a, interface: eth0, vrid: 7, virtual_addresses: [198.18.0.1], virtual_mac: true}
    - {name: b, interface: eth0, vrid: 7, virtual_addresses: ["2001:db8::1"], virtual_mac: true}
    - {name: c, interface: eth1, vrid: 200, virtual_addresses: [198.18.1.1], virtual_mac: true,
       virtual_mac_interface: vr-c}
    - {name: d, interface: eth1, vrid: 8, virtual_addresses: [198.18.1.2]}
"""
    a, b, c, d = load_text(text, F).vrrp.instances
    assert (a.virtual_mac, b.virtual_mac, c.virtual_mac, d.virtual_mac) == (
        "vrrp4.7",
        "vrrp6.7",
        "vr-c",
        None,
    )
    assert a.virtual_mac_address.hex(":") == "00:00:5e:00:01:07"
    assert b.virtual_mac_address.hex(":") == "00:00:5e:00:02:07"
    assert c.virtual_mac_address.hex(":") == "00:00:5e:00:01:c8"


def test_virtual_mac_rules() -> None:
    text = """\
vrrp:
  instances:
    - {name: a, interface: eth0, vrid: 7, virtual_addresses: [198.18.0.1], virtual_mac: true}
    - {name: b, interface: eth1, vrid: 7, virtual_addresses: [198.18.1.1], virtual_mac: true}
    - {name: c, interface: eth1, vrid: 8, virtual_addresses: [198.18.1.2], virtual_mac: true,
       unicast_peers: [198.18.1.3]}
    - {name: d, interface: eth1, vrid: 9, virtual_addresses: [198.18.1.4], virtual_mac_interface: x}
    - {name: e, interface: eth1, vrid: 10, virtual_addresses: [198.18.1.5], virtual_mac: true,
       virtual_mac_interface: eth0}
"""
    assert problems(text) == [
        (4, 89, "the virtual MAC interface vrrp4.7 is already used on line 3: "
         "set virtual_mac_interface to another name"),
        (5, 89, "virtual_mac needs a shared layer-2 segment and the multicast group: not with unicast_peers"),
        (7, 99, "virtual_mac_interface is set but virtual_mac is not true"),
        (9, 31, "the virtual MAC interface eth0 is the name of an instance's interface"),
    ]  # fmt: skip
    bad = inst(
        '      virtual_addresses: [198.18.0.1]\n      virtual_mac: true\n      virtual_mac_interface: "a b"\n'
    )
    assert problems(bad) == [
        (
            8,
            30,
            "virtual_mac_interface must be an interface name: 1-15 characters without spaces, '/' or ':' "
            "(got string 'a b')",
        )
    ]


def test_a_vip_may_carry_a_label_and_a_scope_and_a_labelled_repeat_is_advertised_twice() -> None:
    text = inst(
        "      version: 2\n"
        "      virtual_addresses:\n"
        "        - {address: 198.18.0.1/24, label: 'eth0:vip'}\n"
        "        - 198.18.0.1/24\n"
        "        - {address: 198.18.0.2, scope: host}\n"
        "        - 198.18.0.3\n"
        "        - {address: 198.18.0.3, label: 'eth0:x'}\n"  # keepalived's sample does this
    )
    (a,) = load_text(text, F).vrrp.instances
    one, two, three = (ipaddress.ip_interface(x) for x in ("198.18.0.1/24", "198.18.0.2/32", "198.18.0.3/32"))
    assert a.vips == (one, one, two, three, three)  # the advert: five addresses, as keepalived sends
    assert a.unique_vips == (one, two, three)  # the node: each added once
    assert a.vip_options_of(one).label == "eth0:vip" and a.vip_options_of(one).scope == 0
    assert a.vip_options_of(two).label is None and a.vip_options_of(two).scope == 254
    # the first entry is the one added (keepalived's second add finds the address there)
    assert a.vip_options_of(three).label is None


def test_vip_entry_rules() -> None:
    text = inst(
        "      virtual_addresses:\n"  # line 6
        "        - {address: '2001:db8::1', label: 'eth0:v'}\n"  # 7: a label is IPv4 only
        "        - {address: '2001:db8::2', scope: galactic}\n"  # 8
        "        - '2001:db8::3'\n"  # 9
        "        - '2001:db8::3'\n"  # 10: the same entry twice is a slip
    )
    got = problems(text)
    assert any(line == 8 and "or {address, label, scope}" in m for line, _, m in got), got
    assert any(line == 10 for line, _, _ in got), got
    text = inst("      virtual_addresses:\n        - {address: '2001:db8::1', label: 'eth0:v'}\n")
    assert problems(text) == [(7, 43, "labels are IPv4 only (the kernel keeps none for IPv6)")]


def test_sync_group_commands_and_a_script_that_starts_failing() -> None:
    from ipvsmgr.groupnotify import GroupNotify

    text = (
        "vrrp:\n  instances:\n"
        "    - {name: a, interface: eth0, vrid: 1, virtual_addresses: [198.18.0.1],\n"
        "       track: {scripts: [{argv: [/bin/true], weight: -10, start: down}]}}\n"
        "    - {name: b, interface: eth1, vrid: 2, virtual_addresses: [198.18.0.2]}\n"
        "  sync_groups:\n"
        "    - {name: g, instances: [a, b], notify_master: [/bin/m, x], notify_keepalived: [/bin/k]}\n"
    )
    vrrp = load_text(text, F).vrrp
    assert vrrp.group_notify == (
        ("g", GroupNotify(on=(("master", ("/bin/m", "x")),), notify_keepalived=("/bin/k",))),
    )
    assert vrrp.instances[0].track_scripts[0].start_ok is False
