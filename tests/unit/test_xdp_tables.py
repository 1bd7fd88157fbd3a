"""The guard's map contents from the configuration, and the diff that writes them."""

from __future__ import annotations

import socket

from bpf_offload import layout
from bpf_offload.tables import MapChange, Service, Tables, desired_maps, diff, vip_entries

TCP, UDP = socket.IPPROTO_TCP, socket.IPPROTO_UDP


def test_addresses_are_mapped_into_one_16_byte_space() -> None:
    assert layout.addr16("198.18.1.10") == bytes(10) + b"\xff\xff" + bytes([198, 18, 1, 10])
    assert layout.addr_text(layout.addr16("198.18.1.10")) == "198.18.1.10"
    assert layout.addr_text(layout.addr16("2001:db8::1")) == "2001:db8::1"
    # an IPv4 /24 is a /120 of the mapped space; the text round-trips
    key = layout.lpm_key("198.18.7.0/24")
    assert layout.LPM_KEY.unpack(key)[0] == 120
    assert layout.lpm_prefix(key) == "198.18.7.0/24"
    assert layout.lpm_prefix(layout.lpm_key("2001:db8::/32")) == "2001:db8::/32"


def test_service_key_has_the_port_in_network_order() -> None:
    key = layout.svc_key("198.18.1.10", 80, TCP)
    assert key[16:18] == b"\x00\x50" and key[18] == TCP and len(key) == 20


def test_vip_slots_are_stable_across_reloads() -> None:
    s = [Service("198.18.1.10", 80, TCP), Service("198.18.1.10", 53, UDP), Service("198.18.1.11", 80, TCP)]
    first = vip_entries(s, {})
    slots = {layout.addr_text(k): layout.VIP.unpack(v) for k, v in first.items()}
    assert slots == {"198.18.1.10": (0, 3), "198.18.1.11": (1, 1)}
    # .10 leaves, .12 arrives: .11 keeps slot 1, .12 takes the free slot 0
    again = vip_entries([Service("198.18.1.11", 80, TCP), Service("198.18.1.12", 80, TCP)], first)
    slots = {layout.addr_text(k): layout.VIP.unpack(v)[0] for k, v in again.items()}
    assert slots == {"198.18.1.11": 1, "198.18.1.12": 0}


def test_diff_orders_writes_for_a_program_reading_concurrently() -> None:
    old = Tables(services=frozenset({Service("198.18.1.10", 80, TCP)}))
    new = Tables(
        services=frozenset({Service("198.18.1.11", 80, TCP)}),
        allow=frozenset({"198.18.5.0/24"}),
        block={"198.18.6.0/24": "tarpit"},
    )
    current = desired_maps(old, {})
    changes = diff(desired_maps(new, current["vips"]), current)
    kinds = [(c.map, c.value is None) for c in changes]
    # the old VIP goes first, new entries before the new VIP and its filter bit, the config last
    assert kinds[0] == ("vips", True)
    assert kinds[-1] == ("config", False)
    assert (
        kinds.index(("services", False)) < kinds.index(("vips", False)) < kinds.index(("vip_filter", False))
    )
    assert kinds.index(("services", True)) > kinds.index(("vips", False))
    cfg = layout.CONFIG.unpack(changes[-1].value or b"")
    assert cfg[-2] == 2  # source_entries: both lists live in one trie
    actions = {
        layout.lpm_prefix(c.key): layout.U32.unpack(c.value or b"")[0] for c in changes if c.map == "sources"
    }
    assert actions == {
        "198.18.5.0/24": layout.LIST_ACTIONS["allow"],
        "198.18.6.0/24": layout.LIST_ACTIONS["tarpit"],
    }
    # a service's value is its VIP's state slot
    vip = layout.VIP.unpack(next(c for c in changes if c.map == "vips" and c.value).value or b"")
    svc = next(c for c in changes if c.map == "services" and c.value)
    assert layout.U32.unpack(svc.value or b"")[0] == vip[0]


def test_vip_filter_has_exactly_the_vips_bits() -> None:
    vips = [layout.addr16(a) for a in ("198.18.1.10", "198.18.1.11", "2001:db8:1::10")]
    bits = layout.vip_filter(vips)
    assert len(bits) == layout.FILTER_BITS // 8
    set_bits = {i for i in range(layout.FILTER_BITS) if bits[i >> 3] >> (i & 7) & 1}
    assert set_bits == {layout.filter_bit(v) for v in vips}
    # neighbouring addresses spread: a /24 of host traffic rarely collides with a VIP
    others = {layout.filter_bit(layout.addr16(f"198.18.1.{i}")) for i in range(256) if i not in (10, 11)}
    assert len(others & set_bits) <= 1


def test_diff_of_equal_state_is_empty_and_config_is_never_deleted() -> None:
    t = Tables(services=frozenset({Service("2001:db8::10", 443, TCP)}))
    current = desired_maps(t, {})
    assert diff(desired_maps(t, current["vips"]), current) == []
    gone = diff({}, current)
    assert all(c.value is None for c in gone) and not any(c.map == "config" for c in gone)
    assert MapChange("vips", layout.addr16("2001:db8::10"), None) in gone


def test_settings_pack_to_nanoseconds_and_flags() -> None:
    s = layout.GuardSettings(src_syn_rate=10, src_syn_burst=20, attack_syn_rate=5, attack_hold=2.5,
                             verified_ttl=60, challenge="off", verified_syn_rate=7, verified_syn_burst=9,
                             sample_every=8)  # fmt: skip
    assert layout.CONFIG.unpack(s.pack(3)) == (10, 20, 5, 2_500_000_000, 60_000_000_000, 7, 9, 0, 8, 3, 0)
    assert layout.CONFIG.size == 72 and layout.SAMPLE.size == 56  # guard.h's sizes
    assert layout.GuardSettings(challenge="retransmit").flags == layout.F_CHALLENGE
    assert layout.GuardSettings(challenge="rst-cookie").flags == layout.F_CHALLENGE | layout.F_RST_COOKIE


def test_reasons_match_the_program_enum() -> None:
    # guard.h's enum guard_reason, parsed from the header the program is built from
    import pathlib
    import re

    header = (pathlib.Path(__file__).parents[2] / "bpf_offload" / "guard.h").read_text()
    body = header[header.index("enum guard_reason {") : header.index("R_MAX")]
    names = re.findall(r"R_(PASS|DROP|TX)_([A-Z_]+)", body)
    assert len(names) == len(layout.REASONS)
    verdicts = [{"PASS": "pass", "DROP": "drop", "TX": "tx"}[v] for v, _ in names]
    assert verdicts == [v for _, v in layout.REASONS]
