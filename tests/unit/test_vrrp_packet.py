"""VRRP advertisements: encoding, the RFCs' receive checks, and robustness."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

from vrrp.packet import GROUP4, GROUP6, Advert, Drop, checksum, decode, encode

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
SRC4 = V4("198.18.0.11")
SRC6 = V6("fe80::11")


def test_v3_advert_matches_keepalived_bytes() -> None:
    # keepalived 2.2.7: VRID 51, priority 150, 1 s, VIP 198.18.0.100, sent from 198.18.0.11.
    advert = Advert(3, 51, 150, 100, (V4("198.18.0.100"),))
    assert encode(advert, SRC4, GROUP4).hex(" ") == "31 33 96 01 00 64 cb 43 c6 12 00 64"


def test_v3_roundtrip_ipv4_and_ipv6() -> None:
    a4 = Advert(3, 7, 200, 10, (V4("198.18.0.100"), V4("198.18.0.101")))
    assert decode(encode(a4, SRC4, GROUP4), SRC4, GROUP4, 255) == a4
    a6 = Advert(3, 7, 100, 4095, (V6("2001:db8::100"),))
    data = encode(a6, SRC6, GROUP6)
    assert len(data) == 8 + 16
    assert decode(data, SRC6, GROUP6, 255) == a6


def test_v3_checksum_covers_the_pseudo_header() -> None:
    a = Advert(3, 1, 100, 100, (V4("198.18.0.100"),))
    data = encode(a, SRC4, GROUP4)
    # The same bytes from another source, or to another destination, do not verify.
    assert decode(data, V4("198.18.0.12"), GROUP4, 255) is Drop.CHECKSUM
    assert decode(data, SRC4, V4("198.18.0.2"), 255) is Drop.CHECKSUM
    unicast = encode(a, SRC4, V4("198.18.0.2"))
    assert decode(unicast, SRC4, V4("198.18.0.2"), 255) == a


def test_v2_layout_and_checksum_over_the_message_only() -> None:
    a = Advert(2, 51, 150, 100, (V4("198.18.0.100"),))
    data = encode(a, SRC4, GROUP4)
    assert len(data) == 8 + 4 + 8  # header, one address, 8 bytes of auth data
    ver_type, vrid, prio, count, auth, secs = struct.unpack_from("!6B", data)
    assert (ver_type, vrid, prio, count, auth, secs) == (0x21, 51, 150, 1, 0, 1)
    assert checksum(data) == 0
    assert decode(data, V4("198.18.9.9"), GROUP4, 255) == a  # no pseudo-header in v2


def test_receive_checks() -> None:
    a = Advert(3, 51, 150, 100, (V4("198.18.0.100"),))
    good = encode(a, SRC4, GROUP4)
    assert decode(good, SRC4, GROUP4, 64) is Drop.TTL
    assert decode(good[:7], SRC4, GROUP4, 255) is Drop.TRUNCATED
    assert decode(good[:11], SRC4, GROUP4, 255) is Drop.TRUNCATED  # the address list is cut
    assert decode(bytes([0x41]) + good[1:], SRC4, GROUP4, 255) is Drop.VERSION
    assert decode(bytes([0x32]) + good[1:], SRC4, GROUP4, 255) is Drop.TYPE
    flipped = good[:8] + bytes([good[8] ^ 1]) + good[9:]
    assert decode(flipped, SRC4, GROUP4, 255) is Drop.CHECKSUM
    assert decode(good + b"\0" * 6, SRC4, GROUP4, 255) == a  # Ethernet padding is ignored
    v2 = encode(Advert(2, 51, 150, 100, (V4("198.18.0.100"),)), SRC4, GROUP4)
    assert decode(v2, SRC6, GROUP6, 255) is Drop.VERSION  # v2 is IPv4 only
    zero = encode(Advert(3, 51, 150, 0, (V4("198.18.0.100"),)), SRC4, GROUP4)
    assert decode(zero, SRC4, GROUP4, 255) is Drop.ZERO_INTERVAL


@given(st.binary(max_size=200), st.integers(0, 255), st.booleans())
def test_random_bytes_never_raise(data: bytes, ttl: int, v6: bool) -> None:
    src, dst = (SRC6, GROUP6) if v6 else (SRC4, GROUP4)
    out = decode(data, src, dst, ttl)
    assert isinstance(out, Advert | Drop)


@given(
    st.integers(1, 255),
    st.integers(0, 255),
    st.integers(1, 4095),
    st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=20),
    st.integers(0, 11),
    st.integers(0, 255),
)
def test_mutated_adverts_never_raise_and_a_flipped_byte_is_caught(
    vrid: int, prio: int, interval: int, addrs: list[int], pos: int, xor: int
) -> None:
    a = Advert(3, vrid, prio, interval, tuple(V4(x) for x in addrs))
    data = bytearray(encode(a, SRC4, GROUP4))
    assert decode(bytes(data), SRC4, GROUP4, 255) == a
    pos = pos % len(data)
    data[pos] ^= xor
    out = decode(bytes(data), SRC4, GROUP4, 255)
    if xor:
        assert isinstance(out, Drop) or out != a


def test_instance_rules() -> None:
    from vrrp.instance import InstanceConfig, check_for_instance, parse_vip
    from vrrp.machine import Params

    def cfg(version: int = 3, priority: int = 100, interval_cs: int = 100) -> InstanceConfig:
        return InstanceConfig(
            "vi", "eth0", Params(51, priority, interval_cs, version), (parse_vip("198.18.0.100/24"),)
        )

    vip = (V4("198.18.0.100"),)
    assert check_for_instance(Advert(3, 51, 200, 100, vip), cfg()) is None
    assert (
        check_for_instance(Advert(3, 51, 200, 50, vip), cfg()) is None
    )  # v3: a different interval is learnt
    assert check_for_instance(Advert(2, 51, 200, 100, vip), cfg()) is Drop.VERSION
    assert check_for_instance(Advert(3, 51, 200, 100, (V4("198.18.0.1"),)), cfg()) is Drop.ADDRESSES
    assert check_for_instance(Advert(3, 51, 200, 100, ()), cfg()) is Drop.ADDRESSES
    # RFC 5798 7.1: the exemption is the sender's, the address owner (priority 255) ...
    other = (V4("198.18.0.1"),)
    assert check_for_instance(Advert(3, 51, 255, 100, other), cfg()) is None
    assert check_for_instance(Advert(2, 51, 255, 100, other), cfg(version=2)) is None
    # ... not ours: an owner still drops a non-owner's advert with another list.
    assert check_for_instance(Advert(3, 51, 200, 100, other), cfg(priority=255)) is Drop.ADDRESSES
    v2 = cfg(version=2)
    assert check_for_instance(Advert(2, 51, 200, 100, vip), v2) is None
    assert check_for_instance(Advert(2, 51, 200, 200, vip), v2) is Drop.INTERVAL
    assert check_for_instance(Advert(2, 51, 200, 100, vip, auth_type=1), v2) is Drop.AUTH


def test_v2_pass_authentication_on_the_wire_and_on_receipt() -> None:
    import dataclasses

    from vrrp.instance import InstanceConfig, check_for_instance, parse_vip
    from vrrp.machine import Params

    plain = InstanceConfig("vi", "eth0", Params(51, 100, 100, 2), (parse_vip("198.18.0.100/24"),))
    secret = dataclasses.replace(plain, password=b"k@l")
    vip = (V4("198.18.0.100"),)
    src = V4("198.18.5.1")
    # RFC 2338 5.3.6/5.3.10: type 1 and the password NUL-padded in the last 8 bytes
    data = encode(Advert(2, 51, 150, 100, vip, secret.auth_type, secret.auth_data), src, GROUP4)
    assert data[4] == 1 and data[-8:] == b"k@l\0\0\0\0\0" and checksum(data) == 0
    got = decode(data, src, GROUP4, 255)
    assert isinstance(got, Advert) and (got.auth_type, got.auth_data) == (1, b"k@l\0\0\0\0\0")
    assert check_for_instance(got, secret) is None
    assert check_for_instance(got, plain) is Drop.AUTH  # a type other than the instance's
    other = dataclasses.replace(secret, password=b"k@l!")
    assert check_for_instance(got, other) is Drop.AUTH_FAIL
    unauthenticated = decode(encode(Advert(2, 51, 150, 100, vip), src, GROUP4), src, GROUP4, 255)
    assert isinstance(unauthenticated, Advert) and check_for_instance(unauthenticated, secret) is Drop.AUTH
