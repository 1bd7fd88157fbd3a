"""VRRP advertisements on the wire: RFC 5798 (v3, IPv4 and IPv6) and RFC 3768 (v2).

    v3: | ver 3 | type 1 | VRID | priority | count |  rsvd(4) max adver int(12, cs) | checksum |
        | addresses (4 or 16 bytes each) |
    v2: | ver 2 | type 1 | VRID | priority | count | auth type | adver int (s) | checksum |
        | IPv4 addresses | 8 bytes of authentication data |

v3 checksums the IP pseudo-header (source, destination, protocol 112, VRRP
length) and the message; v2 checksums the message only. Pure functions:
decode() never raises for bad input, it returns a Drop naming the rule the
packet broke, which the I/O side counts.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

PROTO = 112
TYPE_ADVERT = 1
GROUP4 = ipaddress.IPv4Address("224.0.0.18")
GROUP6 = ipaddress.IPv6Address("ff02::12")
TTL = 255  # sent with, and required on receipt (RFC 5798 5.1.1.3, 7.1)
TOS = 0xC0  # network control, as keepalived sends
AUTH_NONE = 0
AUTH_PASS = 1  # RFC 2338's simple text password: sent in clear, for keepalived peers that use it
V2_AUTH_LEN = 8

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
VIP = ipaddress.IPv4Interface | ipaddress.IPv6Interface  # a VIP with its prefix length

_HEAD = struct.Struct("!BBBBHH")


class Drop(enum.Enum):
    """Why a received packet was discarded; the value is the metric label."""

    TTL = "ttl_not_255"
    TRUNCATED = "truncated"
    VERSION = "bad_version"
    TYPE = "bad_type"
    CHECKSUM = "bad_checksum"
    FAMILY = "address_family"
    VRID = "unknown_vrid"
    ADDRESSES = "address_list_mismatch"
    INTERVAL = "interval_mismatch"  # v2 only: v3 learns the master's interval
    AUTH = "auth_type"  # v2: a type other than the instance's
    AUTH_FAIL = "auth_failure"  # v2 PASS: another password
    OWN = "own_advert"
    ZERO_INTERVAL = "zero_interval"


@dataclass(frozen=True, slots=True)
class Advert:
    version: int  # 2 or 3
    vrid: int
    priority: int
    interval_cs: int  # centiseconds (v2's whole seconds are converted)
    addresses: tuple[IPAddress, ...]
    auth_type: int = AUTH_NONE  # v2 only
    auth_data: bytes = bytes(V2_AUTH_LEN)  # v2 only: the password, NUL-padded to 8 bytes

    @property
    def interval(self) -> float:
        return self.interval_cs / 100.0


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of data."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total & 0xFFFF) + (total >> 16)
    total += total >> 16
    return ~total & 0xFFFF


def _pseudo(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, PROTO, length)
    return src.packed + dst.packed + struct.pack("!I3xB", length, PROTO)


def encode(advert: Advert, src: IPAddress, dst: IPAddress) -> bytes:
    """The VRRP message (no IP header) for advert sent from src to dst."""
    count = len(advert.addresses)
    addrs = b"".join(a.packed for a in advert.addresses)
    if advert.version == 3:
        head = _HEAD.pack(0x31, advert.vrid, advert.priority, count, advert.interval_cs & 0x0FFF, 0)
        body = head + addrs
        csum = checksum(_pseudo(src, dst, len(body)) + body)
    elif advert.version == 2:
        seconds = max(1, advert.interval_cs // 100)
        head = struct.pack(
            "!BBBBBBH", 0x21, advert.vrid, advert.priority, count, advert.auth_type, seconds, 0
        )
        body = head + addrs + advert.auth_data[:V2_AUTH_LEN].ljust(V2_AUTH_LEN, b"\0")
        csum = checksum(body)
    else:
        raise ValueError(f"VRRP version {advert.version}")
    return body[:6] + struct.pack("!H", csum) + body[8:]


def decode(data: bytes, src: IPAddress, dst: IPAddress, ttl: int) -> Advert | Drop:
    """Validate a received VRRP message (RFC 5798 7.1 / RFC 3768 7.1) up to what
    needs no configuration: TTL, length, version, type, checksum. Instance
    rules (VRID, address list, interval, auth) are check_for_instance()'s."""
    if ttl != TTL:
        return Drop.TTL
    if len(data) < 8:
        return Drop.TRUNCATED
    ver_type, vrid, priority, count = data[0], data[1], data[2], data[3]
    version, kind = ver_type >> 4, ver_type & 0x0F
    if version not in (2, 3) or (version == 2 and src.version != 4):
        return Drop.VERSION
    if kind != TYPE_ADVERT:
        return Drop.TYPE
    size = 4 if src.version == 4 else 16
    need = 8 + count * size + (V2_AUTH_LEN if version == 2 else 0)
    if len(data) < need:
        return Drop.TRUNCATED
    data = data[:need]  # trailing bytes (Ethernet padding) are not part of the message
    if version == 3:
        if checksum(_pseudo(src, dst, len(data)) + data) != 0:
            return Drop.CHECKSUM
        interval_cs = struct.unpack_from("!H", data, 4)[0] & 0x0FFF
        auth, auth_data = AUTH_NONE, bytes(V2_AUTH_LEN)
    else:
        if checksum(data) != 0:
            return Drop.CHECKSUM
        auth, seconds = data[4], data[5]
        auth_data = data[need - V2_AUTH_LEN : need]
        interval_cs = seconds * 100
    if interval_cs == 0:
        return Drop.ZERO_INTERVAL
    cls = ipaddress.IPv4Address if size == 4 else ipaddress.IPv6Address
    addresses = tuple(cls(data[8 + i * size : 8 + (i + 1) * size]) for i in range(count))
    return Advert(version, vrid, priority, interval_cs, addresses, auth, auth_data)
