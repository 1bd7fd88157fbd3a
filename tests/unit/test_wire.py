"""ipvsmgr.ipvs.wire against byte strings built by hand from the Linux netlink/IPVS layout.

nlattr: u16 len (header included, padding excluded), u16 type, payload, padding to 4 bytes.
nlmsghdr: u32 len, u16 type, u16 flags, u32 seq, u32 pid; genlmsghdr: u8 cmd, u8 version, u16 0.
Everything is host byte order except ports (and the IPv4 netmask), which are network order.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipvsmgr.ipvs import wire
from ipvsmgr.ipvs.model import Destination, DestKey, Service, ServiceKey, Stats, SyncDaemon, Timeouts

AF4, AF6 = socket.AF_INET, socket.AF_INET6
TCP, UDP, SCTP = 6, 17, 132
NESTED = 0x8000
CMD_ATTR_SERVICE, CMD_ATTR_DEST, CMD_ATTR_DAEMON = 1, 2, 3
FAMILY_ID = 0x1234  # what the kernel would have given the IPVS genl family
NLM_F_MULTI = 0x2
NLMSG_ERROR = 2


def hdr(length: int, atype: int) -> bytes:
    return struct.pack("=HH", length, atype)


def pad(b: bytes) -> bytes:
    return b + bytes(-len(b) % 4)


def attr(atype: int, payload: bytes) -> bytes:
    return pad(hdr(4 + len(payload), atype) + payload)


def nested(atype: int, payload: bytes) -> bytes:
    return attr(atype | NESTED, payload)


def addr16(af: int, text: str) -> bytes:
    raw = socket.inet_pton(af, text)
    return raw + bytes(16 - len(raw))


def nlmsg(mtype: int, flags: int, seq: int, payload: bytes, pid: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), mtype, flags, seq, pid) + payload


# ---------------------------------------------------------------- attribute primitives


def test_attribute_primitives() -> None:
    assert wire.nla(3, b"") == b"\x04\x00\x03\x00"
    assert wire.nla(3, b"a") == struct.pack("=HH", 5, 3) + b"a\0\0\0"
    assert wire.nla(3, b"abcd") == struct.pack("=HH", 8, 3) + b"abcd"
    assert wire.nla_nested(1, b"") == struct.pack("=HH", 4, 0x8001)
    assert wire.nla_u8(13, 2) == struct.pack("=HHB3x", 5, 13, 2)
    assert wire.nla_u16(1, AF6) == struct.pack("=HHH2x", 6, 1, 10)
    assert wire.nla_be16(4, 0x1F90) == struct.pack("=HH", 6, 4) + b"\x1f\x90\0\0"
    assert wire.nla_u32(5, 0xDEADBEEF) == struct.pack("=HHI", 8, 5, 0xDEADBEEF)
    assert wire.nla_str(6, "rr") == struct.pack("=HH", 7, 6) + b"rr\0\0"
    assert wire.nla_str(6, "wlc") == struct.pack("=HH", 8, 6) + b"wlc\0"


@pytest.mark.parametrize(
    ("af", "prefix", "expected"),
    [
        (AF4, 32, b"\xff\xff\xff\xff"),
        (AF4, 24, b"\xff\xff\xff\x00"),
        (AF4, 17, b"\xff\xff\x80\x00"),
        (AF4, 1, b"\x80\x00\x00\x00"),
        (AF6, 128, struct.pack("=I", 128)),
        (AF6, 64, struct.pack("=I", 64)),
    ],
)
def test_netmask_bytes(af: int, prefix: int, expected: bytes) -> None:
    assert wire.netmask_bytes(af, prefix) == expected


def test_addr_bytes_is_the_16_byte_union() -> None:
    assert wire.addr_bytes(AF4, "198.18.0.1") == bytes([198, 18, 0, 1]) + bytes(12)
    assert wire.addr_bytes(AF6, "2001:db8::1") == bytes.fromhex("20010db8000000000000000000000001")


def test_message_header() -> None:
    m = wire.message(FAMILY_ID, 0x5, 77, 4, b"\x04\x00\x01\x00")
    assert (
        m
        == struct.pack("=IHHII", 24, FAMILY_ID, 0x5, 77, 0)
        + struct.pack("=BBH", 4, 1, 0)
        + b"\x04\x00\x01\x00"
    )


# ---------------------------------------------------------------- service encoders


def test_ipv4_tcp_service() -> None:
    svc = Service(ServiceKey(AF4, TCP, "198.18.0.10", 80), "wrr", flags=0, timeout=0, prefix=32)
    body = (
        struct.pack("=HHH2x", 6, 1, AF4)  # AF
        + struct.pack("=HHH2x", 6, 2, TCP)  # PROTOCOL
        + struct.pack("=HH", 20, 3) + bytes([198, 18, 0, 10]) + bytes(12)  # ADDR
        + struct.pack("=HH", 6, 4) + struct.pack("!H", 80) + b"\0\0"  # PORT, big-endian
        + struct.pack("=HH", 8, 6) + b"wrr\0"  # SCHED_NAME
        + struct.pack("=HHII", 12, 7, 0, 0xFFFFFFFF)  # FLAGS: flags, mask
        + struct.pack("=HHI", 8, 8, 0)  # TIMEOUT
        + struct.pack("=HH", 8, 9) + b"\xff\xff\xff\xff"  # NETMASK
    )  # fmt: skip
    expected = struct.pack("=HH", 4 + len(body), 1 | 0x8000) + body
    assert len(body) == 80
    assert wire.service_attr(svc) == expected


def test_persistent_ipv6_udp_service_with_flags_and_pe() -> None:
    flags = 0x1 | 0x4 | 0x8  # persistent, one-packet, sched1
    svc = Service(
        ServiceKey(AF6, UDP, "2001:db8::10", 53), "sh", flags, timeout=600, prefix=64, pe_name="sip"
    )
    body = (
        struct.pack("=HHH2x", 6, 1, AF6)
        + struct.pack("=HHH2x", 6, 2, UDP)
        + struct.pack("=HH", 20, 3) + bytes.fromhex("20010db8000000000000000000000010")
        + struct.pack("=HH", 6, 4) + b"\x00\x35\0\0"
        + struct.pack("=HH", 7, 6) + b"sh\0" + b"\0"  # 3 bytes of name, one of padding
        + struct.pack("=HHII", 12, 7, flags, 0xFFFFFFFF)
        + struct.pack("=HHI", 8, 8, 600)
        + struct.pack("=HHI", 8, 9, 64)  # IPv6 netmask: the prefix length, host order
        + struct.pack("=HH", 8, 11) + b"sip\0"  # PE_NAME
    )  # fmt: skip
    assert wire.service_attr(svc) == struct.pack("=HH", 4 + len(body), 0x8001) + body


def test_persistent_ipv4_prefix_24() -> None:
    svc = Service(ServiceKey(AF4, TCP, "198.18.0.12", 443), "lc", 0x1, timeout=600, prefix=24)
    enc = wire.service_attr(svc)
    assert enc.endswith(struct.pack("=HHI", 8, 8, 600) + struct.pack("=HH", 8, 9) + b"\xff\xff\xff\x00")


def test_fwmark_service_key() -> None:
    svc = Service(ServiceKey(AF4, 0, "", 0, 42), "wrr")
    body = (
        struct.pack("=HHH2x", 6, 1, AF4)
        + struct.pack("=HHI", 8, 5, 42)  # FWMARK, no protocol/address/port
        + struct.pack("=HH", 8, 6) + b"wrr\0"
        + struct.pack("=HHII", 12, 7, 0, 0xFFFFFFFF)
        + struct.pack("=HHI", 8, 8, 0)
        + struct.pack("=HH", 8, 9) + b"\xff\xff\xff\xff"
    )  # fmt: skip
    assert wire.service_attr(svc) == struct.pack("=HH", 4 + len(body), 0x8001) + body
    assert wire.service_key_attr(svc.key) == struct.pack("=HHHHH2xHHI", 20, 0x8001, 6, 1, AF4, 8, 5, 42)


def test_service_key_attr() -> None:
    key = ServiceKey(AF4, SCTP, "198.18.0.13", 3868)
    body = (
        struct.pack("=HHH2x", 6, 1, AF4)
        + struct.pack("=HHH2x", 6, 2, SCTP)
        + struct.pack("=HH", 20, 3) + bytes([198, 18, 0, 13]) + bytes(12)
        + struct.pack("=HH", 6, 4) + struct.pack("!H", 3868) + b"\0\0"
    )  # fmt: skip
    assert wire.service_key_attr(key) == struct.pack("=HH", 4 + len(body), 0x8001) + body


# ---------------------------------------------------------------- destination encoders


def test_nat_dest() -> None:
    d = Destination(DestKey(AF4, "198.18.1.11", 8080), fwd=0, weight=10, u_thresh=1000, l_thresh=800)
    body = (
        struct.pack("=HH", 20, 1) + bytes([198, 18, 1, 11]) + bytes(12)  # ADDR
        + struct.pack("=HH", 6, 2) + struct.pack("!H", 8080) + b"\0\0"  # PORT
        + struct.pack("=HHH2x", 6, 11, AF4)  # ADDR_FAMILY
        + struct.pack("=HHI", 8, 3, 0)  # FWD_METHOD (masq)
        + struct.pack("=HHI", 8, 4, 10)  # WEIGHT
        + struct.pack("=HHI", 8, 5, 1000)  # U_THRESH
        + struct.pack("=HHI", 8, 6, 800)  # L_THRESH
        + struct.pack("=HHB3x", 5, 13, 0)  # TUN_TYPE u8
        + struct.pack("=HH", 6, 14) + b"\0\0\0\0"  # TUN_PORT
        + struct.pack("=HHH2x", 6, 15, 0)  # TUN_FLAGS u16
    )  # fmt: skip
    assert wire.dest_attr(d) == struct.pack("=HH", 4 + len(body), 2 | 0x8000) + body


def test_gue_tunnel_dest_port_is_big_endian() -> None:
    d = Destination(DestKey(AF6, "2001:db8::1", 80), fwd=2, weight=5, tun_type=1, tun_port=6080, tun_flags=2)
    body = (
        struct.pack("=HH", 20, 1) + bytes.fromhex("20010db8000000000000000000000001")
        + struct.pack("=HH", 6, 2) + b"\x00\x50\0\0"
        + struct.pack("=HHH2x", 6, 11, AF6)
        + struct.pack("=HHI", 8, 3, 2)  # tunnel
        + struct.pack("=HHI", 8, 4, 5)
        + struct.pack("=HHI", 8, 5, 0)
        + struct.pack("=HHI", 8, 6, 0)
        + struct.pack("=HHB3x", 5, 13, 1)  # gue
        + struct.pack("=HH", 6, 14) + b"\x17\xc0\0\0"  # 6080 in network order (host order would be c0 17)
        + struct.pack("=HHH2x", 6, 15, 2)  # remcsum
    )  # fmt: skip
    assert wire.dest_attr(d) == struct.pack("=HH", 4 + len(body), 0x8002) + body


def test_dest_key_attr() -> None:
    key = DestKey(AF4, "198.18.1.1", 0)
    body = (
        struct.pack("=HH", 20, 1) + bytes([198, 18, 1, 1]) + bytes(12)
        + struct.pack("=HH", 6, 2) + b"\0\0\0\0"
        + struct.pack("=HHH2x", 6, 11, AF4)
    )  # fmt: skip
    assert wire.dest_key_attr(key) == struct.pack("=HH", 4 + len(body), 0x8002) + body


def test_timeouts_and_daemon() -> None:
    assert wire.timeouts_attrs(Timeouts(900, 120, 300)) == (
        struct.pack("=HHI", 8, 4, 900) + struct.pack("=HHI", 8, 5, 120) + struct.pack("=HHI", 8, 6, 300)
    )
    body = (
        struct.pack("=HHI", 8, 1, 1)
        + struct.pack("=HH", 9, 2)
        + b"eth0\0\0\0\0"
        + struct.pack("=HHI", 8, 3, 7)
    )
    assert wire.daemon_attr(SyncDaemon(1, "eth0", 7)) == struct.pack("=HH", 4 + len(body), 0x8003) + body
    body = struct.pack("=HHI", 8, 1, 2) + struct.pack("=HHI", 8, 3, 0)
    assert wire.daemon_attr(SyncDaemon(2, "")) == struct.pack("=HH", 4 + len(body), 0x8003) + body


# ---------------------------------------------------------------- round trips through a fake kernel reply


def reply(cmd: int, attrs: bytes, seq: int = 9) -> wire.Message:
    """A kernel dump message carrying `attrs`, parsed back by iter_messages."""
    (msg,) = wire.iter_messages(wire.message(FAMILY_ID, NLM_F_MULTI, seq, cmd, attrs))
    assert (msg.type, msg.flags, msg.seq) == (FAMILY_ID, NLM_F_MULTI, seq)
    return msg


def stats_attrs(values: list[int], wide: bool) -> bytes:
    out = b""
    for i, v in enumerate(values, 1):
        # STATS: bytes counters (4, 5) are u64, the rest u32; STATS64: all u64
        out += attr(i, struct.pack("=Q", v) if wide or i in (4, 5) else struct.pack("=I", v))
    return out


def with_extra(encoded_nested: bytes, extra: bytes) -> bytes:
    """Append attributes inside an already encoded nested attribute."""
    (length, atype) = struct.unpack_from("=HH", encoded_nested)
    body = encoded_nested[4:length] + extra
    return struct.pack("=HH", 4 + len(body), atype) + body


SERVICES = [
    Service(ServiceKey(AF4, TCP, "198.18.0.10", 80), "wrr"),
    Service(ServiceKey(AF4, UDP, "198.18.0.12", 53), "sh", 0x4 | 0x8 | 0x10),
    Service(ServiceKey(AF4, TCP, "198.18.0.12", 0), "lc", 0x1, 600, 24),
    Service(ServiceKey(AF6, TCP, "2001:db8::10", 80), "rr", 0x1, 60, 64),
    Service(ServiceKey(AF6, SCTP, "2001:db8::11", 3868), "fo", 0, 0, 128),
    Service(ServiceKey(AF4, 0, "", 0, 42), "mh", 0x10),
    Service(ServiceKey(AF6, 0, "", 0, 4294967295), "wlc", 0, 0, 128),
    Service(ServiceKey(AF4, TCP, "198.18.0.10", 5060), "rr", 0x1, 300, 32, "sip"),
]


@pytest.mark.parametrize("svc", SERVICES, ids=str)
def test_service_round_trip(svc: Service) -> None:
    got = wire.decode_service(reply(1, wire.service_attr(svc)))
    assert got == svc
    assert got.stats is None


def test_service_decode_masks_kernel_internal_flags_and_reads_stats64() -> None:
    svc = Service(ServiceKey(AF4, TCP, "198.18.0.10", 80), "mh", 0x1 | 0x10, 300, 32)
    kernel_view = Service(svc.key, svc.scheduler, svc.flags | 0x2, svc.timeout, svc.prefix)  # + HASHED
    big = [2**40 + 1, 2, 3, 2**50, 5, 6, 7, 8, 9, 10]
    small = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    extra = nested(10, stats_attrs(small, wide=False)) + nested(12, stats_attrs(big, wide=True))
    got = wire.decode_service(reply(1, with_extra(wire.service_attr(kernel_view), extra)))
    assert got.flags == svc.flags  # HASHED (0x2) masked
    assert got.settings() == svc.settings()
    assert got.stats == Stats(*big)  # STATS64 preferred over STATS


def test_service_decode_with_32_bit_stats_only() -> None:
    svc = SERVICES[0]
    values = [11, 12, 13, 2**40, 2**41, 16, 17, 18, 19, 20]
    got = wire.decode_service(
        reply(1, with_extra(wire.service_attr(svc), nested(10, stats_attrs(values, False))))
    )
    assert got.stats == Stats(*values)


def test_service_decode_ignores_unknown_attributes_and_defaults_missing_ones() -> None:
    key = ServiceKey(AF4, TCP, "198.18.0.10", 80)
    body = wire.service_key_attrs(key) + attr(99, b"whatever") + attr(12 | NESTED, b"")
    got = wire.decode_service(reply(1, nested(CMD_ATTR_SERVICE, body)))
    assert got == Service(key, "", 0, 0, 0)
    assert got.stats == Stats()


DESTS = [
    (AF4, Destination(DestKey(AF4, "198.18.1.11", 8080), 0, 10)),
    (AF4, Destination(DestKey(AF4, "198.18.1.12", 80), 3, 0, 1000, 800)),
    (AF4, Destination(DestKey(AF4, "198.18.1.13", 80), 2, 1, tun_type=2, tun_flags=1)),
    (AF4, Destination(DestKey(AF4, "198.18.1.14", 0), 2, 5, tun_type=1, tun_port=6080, tun_flags=2)),
    (AF6, Destination(DestKey(AF6, "2001:db8::1:1", 8080), 0, 65535)),
    (AF6, Destination(DestKey(AF4, "198.18.1.31", 80), 2, 1)),  # IPv4 real of an IPv6 service
    (AF4, Destination(DestKey(AF6, "2001:db8::2", 80), 2, 1, tun_type=1, tun_port=65535)),
]


@pytest.mark.parametrize(("svc_af", "dest"), DESTS, ids=[str(d.key) for _, d in DESTS])
def test_dest_round_trip(svc_af: int, dest: Destination) -> None:
    vip = "198.18.0.1" if svc_af == AF4 else "::2"
    msg = reply(8, wire.service_key_attr(ServiceKey(svc_af, TCP, vip, 80)) + wire.dest_attr(dest))
    got = wire.decode_dest(msg, svc_af)
    assert got == dest
    assert got.settings() == dest.settings()


def test_dest_decode_connections_stats_and_fwd_mask() -> None:
    d = Destination(DestKey(AF4, "198.18.1.11", 8080), 3, 7)
    values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 2**63]
    extra = (
        attr(7, struct.pack("=I", 12))  # ACTIVE_CONNS
        + attr(8, struct.pack("=I", 30))  # INACT_CONNS
        + attr(9, struct.pack("=I", 4))  # PERSIST_CONNS
        + nested(12, stats_attrs(values, True))
    )
    encoded = with_extra(wire.dest_attr(d), extra)
    # the kernel may report flag bits above the forwarding method; only the method is kept
    encoded = encoded.replace(struct.pack("=HHI", 8, 3, 3), struct.pack("=HHI", 8, 3, 3 | 0x100))
    got = wire.decode_dest(reply(8, encoded), AF4)
    assert got == d
    assert (got.fwd, got.active_conns, got.inact_conns, got.persist_conns) == (3, 12, 30, 4)
    assert got.connections == 42
    assert got.stats == Stats(*values)


def test_dest_without_address_family_uses_the_service_family() -> None:
    body = (
        attr(1, addr16(AF6, "2001:db8::5")) + attr(2, struct.pack("!H", 443)) + attr(4, struct.pack("=I", 2))
    )
    got = wire.decode_dest(reply(8, nested(CMD_ATTR_DEST, body)), AF6)
    assert got == Destination(DestKey(AF6, "2001:db8::5", 443), 0, 2)
    assert got.tun_port == 0 and got.stats is None


def test_timeouts_daemon_and_family_round_trips() -> None:
    assert wire.decode_timeouts(reply(13, wire.timeouts_attrs(Timeouts(900, 120, 300)))) == Timeouts(
        900, 120, 300
    )
    assert wire.decode_timeouts(reply(13, b"")) == Timeouts()
    for d in (SyncDaemon(1, "eth0", 7), SyncDaemon(2, "", 0)):
        assert wire.decode_daemon(reply(11, wire.daemon_attr(d))) == d
    ctrl = nlmsg(
        0x10, 0, 1, struct.pack("=BBH", 1, 2, 0) + attr(2, b"IPVS\0") + attr(1, struct.pack("=H", 0x1D))
    )
    (msg,) = wire.iter_messages(ctrl)
    assert wire.decode_family_id(msg) == 0x1D


def dotted(a: ipaddress.IPv6Address) -> bool:
    """IPv6 addresses that inet_ntop prints with an embedded IPv4 part."""
    return a.ipv4_mapped is not None or (int(a) >> 32 == 0 and int(a) > 0xFFFF)


@pytest.mark.parametrize("text", ["::ffff:198.18.0.1", "::ffff:c612:1", "::198.18.0.1", "2001:DB8::1"])
def test_config_and_kernel_agree_on_the_address_text(text: str) -> None:
    """The config's canonical form is what the decoder produces, so plans converge."""
    from ipvsmgr.config.build import _address

    af, canonical = _address(text)
    svc = Service(ServiceKey(af, TCP, canonical, 80), "rr", 0, 0, 128)
    assert wire.decode_service(reply(1, wire.service_attr(svc))).key.addr == canonical


services = st.builds(
    lambda af, proto, addr4, addr6, port, fwmark, sched, flags, timeout, p4, p6, pe: Service(
        ServiceKey(
            af,
            0 if fwmark else proto,
            "" if fwmark else (addr4 if af == AF4 else addr6),
            0 if fwmark else port,
            fwmark,
        ),
        sched,
        flags,
        timeout,
        p4 if af == AF4 else p6,
        pe,
    ),  # fmt: skip
    st.sampled_from([AF4, AF6]),
    st.sampled_from([TCP, UDP, SCTP]),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).filter(lambda a: not dotted(a)).map(str),
    st.integers(0, 65535),
    st.one_of(st.just(0), st.integers(1, 2**32 - 1)),
    st.sampled_from(["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"]),
    st.sets(st.sampled_from([0x1, 0x4, 0x8, 0x10, 0x20])).map(sum),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
    st.integers(0, 128),
    st.sampled_from(["", "sip"]),
)
dests = st.builds(
    lambda af, a4, a6, port, fwd, w, u, lo, tt, tp, tf: Destination(
        DestKey(af, a4 if af == AF4 else a6, port), fwd, w, u, lo, tt, tp, tf
    ),
    st.sampled_from([AF4, AF6]),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).filter(lambda a: not dotted(a)).map(str),
    st.integers(0, 65535),
    st.integers(0, 4),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 255),
    st.integers(0, 65535),
    st.integers(0, 65535),
)


@settings(max_examples=150)
@given(services, dests)
def test_round_trips_property(svc: Service, dest: Destination) -> None:
    assert wire.decode_service(reply(1, wire.service_attr(svc))) == svc
    assert (
        wire.decode_dest(reply(8, wire.service_key_attr(svc.key) + wire.dest_attr(dest)), svc.key.af) == dest
    )


# ---------------------------------------------------------------- framing


def test_iter_messages_walks_padded_messages() -> None:
    a = nlmsg(FAMILY_ID, NLM_F_MULTI, 1, b"abcde")  # 21 bytes, padded to 24 on the wire
    b = nlmsg(3, NLM_F_MULTI, 2, struct.pack("=i", 0))  # NLMSG_DONE
    msgs = list(wire.iter_messages(pad(a) + b))
    assert [(m.type, m.flags, m.seq, bytes(m.payload)) for m in msgs] == [
        (FAMILY_ID, NLM_F_MULTI, 1, b"abcde"),
        (3, NLM_F_MULTI, 2, b"\0\0\0\0"),
    ]
    assert list(wire.iter_messages(b"")) == []


def test_parse_attrs_masks_nested_and_byte_order_flags() -> None:
    buf = attr(1 | 0x8000, b"x") + attr(2 | 0x4000, b"yz") + attr(3, b"")
    got = wire.parse_attrs(memoryview(buf))
    assert {k: bytes(v) for k, v in got.items()} == {1: b"x", 2: b"yz", 3: b""}


def two_messages() -> bytes:
    return nlmsg(FAMILY_ID, NLM_F_MULTI, 1, b"\x04\x00\x01\x00" + attr(1, b"abcdefgh")) + nlmsg(
        3, 2, 1, bytes(4)
    )


@pytest.mark.parametrize("cut", range(16 + 1, 32))  # inside the first message, after its header
def test_truncated_message_raises(cut: int) -> None:
    with pytest.raises(wire.WireError):
        list(wire.iter_messages(two_messages()[:cut]))


@pytest.mark.parametrize("cut", range(32 + 16 + 1, 52))  # inside the second message, after its header
def test_truncated_second_message_raises_after_the_first(cut: int) -> None:
    it = wire.iter_messages(two_messages()[:cut])
    assert next(it).seq == 1
    with pytest.raises(wire.WireError):
        next(it)


@pytest.mark.parametrize("cut", [32 + 4, 32 + 8, 32 + 15])
def test_cut_inside_the_next_header_raises(cut: int) -> None:
    with pytest.raises(wire.WireError):
        list(wire.iter_messages(two_messages()[:cut]))


@pytest.mark.parametrize("cut", [32 + 1, 32 + 3])
def test_up_to_three_trailing_bytes_are_padding(cut: int) -> None:
    assert [m.seq for m in wire.iter_messages(two_messages()[:cut])] == [1]


@pytest.mark.parametrize("length", [0, 1, 15])
def test_message_length_below_the_header_raises(length: int) -> None:
    with pytest.raises(wire.WireError):
        list(wire.iter_messages(struct.pack("=IHHII", length, 1, 0, 0, 0) + bytes(8)))


@pytest.mark.parametrize(
    "buf",
    [
        struct.pack("=HH", 9, 1) + b"abcd",  # claims 5 payload bytes, has 4
        struct.pack("=HH", 3, 1),  # shorter than its own header
        struct.pack("=HH", 0, 1) + bytes(4),  # zero length would loop forever
        attr(1, b"ok") + struct.pack("=HH", 200, 2) + b"xx",
    ],
)
def test_bad_attribute_length_raises(buf: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.parse_attrs(memoryview(buf))


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_give_messages_or_wire_error(buf: bytes) -> None:
    try:
        msgs = list(wire.iter_messages(buf))
    except wire.WireError:
        return
    for m in msgs:
        assert 16 + len(m.payload) <= len(buf)
        with contextlib.suppress(wire.WireError):
            wire.parse_attrs(m.payload)


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_random_bytes_give_attributes_or_wire_error(buf: bytes) -> None:
    try:
        attrs = wire.parse_attrs(memoryview(buf))
    except wire.WireError:
        return
    assert all(0 <= t <= 0x3FFF for t in attrs)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 0x3FFF), st.binary(max_size=20)), max_size=6), st.data())
def test_cutting_an_attribute_stream_short_raises(
    items: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    buf = b"".join(attr(t, p) for t, p in items)
    assert {k: bytes(v) for k, v in wire.parse_attrs(memoryview(buf)).items()} == dict(items)
    # cut inside the last attribute's header-declared length (not in its trailing padding)
    if items:
        last = attr(*items[-1])
        declared = 4 + len(items[-1][1])
        start = len(buf) - len(last)
        cut = data.draw(st.integers(start + 4, start + declared - 1)) if declared > 4 else None
        if cut is not None:
            with pytest.raises(wire.WireError):
                wire.parse_attrs(memoryview(buf[:cut]))


# ---------------------------------------------------------------- errors and acks


def request(seq: int = 5) -> bytes:
    return wire.message(FAMILY_ID, 0x5, seq, 1, wire.service_key_attr(ServiceKey(AF4, TCP, "198.18.0.1", 80)))


def error_message(err: int, flags: int, echoed: bytes, tlvs: bytes = b"", seq: int = 5) -> wire.Message:
    payload = struct.pack("=i", err) + pad(echoed) + tlvs
    (msg,) = wire.iter_messages(nlmsg(NLMSG_ERROR, flags, seq, payload))
    return msg


def test_decode_ack() -> None:
    assert wire.decode_error(error_message(0, 0x100, request()[:16])) == (0, "")  # capped
    assert wire.decode_error(error_message(0, 0, request())) == (0, "")  # full echo


def test_decode_error_without_extack() -> None:
    assert wire.decode_error(error_message(-errno.EEXIST, 0, request())) == (errno.EEXIST, "")
    assert wire.decode_error(error_message(-errno.ESRCH, 0x100, request()[:16])) == (errno.ESRCH, "")


def test_decode_error_with_extack_capped() -> None:
    tlvs = attr(1, b"Invalid scheduler\0") + attr(2, struct.pack("=I", 20))  # MSG, OFFS
    got = wire.decode_error(error_message(-errno.EINVAL, 0x100 | 0x200, request()[:16], tlvs))
    assert got == (errno.EINVAL, "Invalid scheduler")


def test_decode_error_with_extack_full_echo() -> None:
    req = request()
    tlvs = attr(2, struct.pack("=I", 20)) + attr(1, b"no such destination\0")
    assert wire.decode_error(error_message(-errno.ENOENT, 0x200, req, tlvs)) == (
        errno.ENOENT,
        "no such destination",
    )


def test_decode_error_with_extack_after_an_unaligned_echo() -> None:
    # a request whose length is not a multiple of 4: the TLVs start at the next 4-byte boundary
    req = nlmsg(FAMILY_ID, 0x5, 5, struct.pack("=BBH", 1, 1, 0) + b"xy")  # 22 bytes
    assert len(req) % 4 == 2
    tlvs = attr(1, b"odd\0")
    assert wire.decode_error(error_message(-errno.EINVAL, 0x200, req, tlvs)) == (errno.EINVAL, "odd")


def test_decode_error_with_extack_but_no_message() -> None:
    tlvs = attr(2, struct.pack("=I", 20))
    assert wire.decode_error(error_message(-errno.EBUSY, 0x300, request()[:16], tlvs)) == (errno.EBUSY, "")
