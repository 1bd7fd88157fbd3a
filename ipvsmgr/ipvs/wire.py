"""Netlink/genetlink/IPVS message encoding and decoding: bytes in, values out.

Nothing here touches a socket, so every encoder and decoder is unit-tested
against hand-built byte strings.
"""

from __future__ import annotations

import functools
import operator
import socket
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ipvsmgr.ipvs import constants as c
from ipvsmgr.ipvs.model import (
    Destination,
    DestKey,
    Service,
    ServiceKey,
    Stats,
    SyncDaemon,
    Timeouts,
)

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
GENLHDR = struct.Struct("=BBH")  # cmd, version, reserved
NLATTR = struct.Struct("=HH")  # len, type
U16 = struct.Struct("=H")
U32 = struct.Struct("=I")
U64 = struct.Struct("=Q")
BE16 = struct.Struct("!H")
I32 = struct.Struct("=i")
FLAGS = struct.Struct("=II")  # struct ip_vs_flags {flags, mask}
ERRHDR_LEN = 4 + NLMSGHDR.size

_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


class WireError(ValueError):
    """A message from the kernel that does not parse."""


def nla(atype: int, payload: bytes) -> bytes:
    n = NLATTR.size + len(payload)
    return NLATTR.pack(n, atype) + payload + _PAD[n & 3]


def nla_nested(atype: int, payload: bytes) -> bytes:
    return nla(atype | c.NLA_F_NESTED, payload)


def nla_u8(atype: int, v: int) -> bytes:
    return NLATTR.pack(5, atype) + bytes((v, 0, 0, 0))


def nla_u16(atype: int, v: int) -> bytes:
    return NLATTR.pack(6, atype) + U16.pack(v) + b"\0\0"


def nla_be16(atype: int, v: int) -> bytes:
    return NLATTR.pack(6, atype) + BE16.pack(v) + b"\0\0"


def nla_u32(atype: int, v: int) -> bytes:
    return NLATTR.pack(8, atype) + U32.pack(v)


def nla_str(atype: int, s: str) -> bytes:
    return nla(atype, s.encode() + b"\0")


def addr_bytes(af: int, addr: str) -> bytes:
    """The 16-byte union nf_inet_addr that IPVS expects for both families."""
    raw = socket.inet_pton(af, addr)
    return raw + bytes(16 - len(raw))


def netmask_bytes(af: int, prefix: int) -> bytes:
    # IPv4: a __be32 mask; IPv6: the prefix length as a host-order u32.
    if af == socket.AF_INET:
        return (((1 << 32) - 1) ^ ((1 << (32 - prefix)) - 1)).to_bytes(4, "big")
    return U32.pack(prefix)


def message(family: int, flags: int, seq: int, cmd: int, attrs: bytes) -> bytes:
    body = GENLHDR.pack(cmd, c.IPVS_GENL_VERSION, 0) + attrs
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), family, flags, seq, 0) + body


# ---------------------------------------------------------------- encoders


def service_key_attrs(key: ServiceKey) -> bytes:
    out = nla_u16(c.IPVS_SVC_ATTR_AF, key.af)
    if key.fwmark:
        return out + nla_u32(c.IPVS_SVC_ATTR_FWMARK, key.fwmark)
    return (
        out
        + nla_u16(c.IPVS_SVC_ATTR_PROTOCOL, key.protocol)
        + nla(c.IPVS_SVC_ATTR_ADDR, addr_bytes(key.af, key.addr))
        + nla_be16(c.IPVS_SVC_ATTR_PORT, key.port)
    )


def service_attr(svc: Service) -> bytes:
    """IPVS_CMD_ATTR_SERVICE with every field (for NEW/SET_SERVICE)."""
    body = (
        service_key_attrs(svc.key)
        + nla_str(c.IPVS_SVC_ATTR_SCHED_NAME, svc.scheduler)
        + nla(c.IPVS_SVC_ATTR_FLAGS, FLAGS.pack(svc.flags, 0xFFFFFFFF))
        + nla_u32(c.IPVS_SVC_ATTR_TIMEOUT, svc.timeout)
        + nla(c.IPVS_SVC_ATTR_NETMASK, netmask_bytes(svc.key.af, svc.prefix))
    )
    if svc.pe_name:
        body += nla_str(c.IPVS_SVC_ATTR_PE_NAME, svc.pe_name)
    return nla_nested(c.IPVS_CMD_ATTR_SERVICE, body)


@functools.lru_cache(maxsize=1 << 16)  # every real of a service repeats its key
def service_key_attr(key: ServiceKey) -> bytes:
    return nla_nested(c.IPVS_CMD_ATTR_SERVICE, service_key_attrs(key))


def dest_key_attrs(dest: DestKey) -> bytes:
    return (
        nla(c.IPVS_DEST_ATTR_ADDR, addr_bytes(dest.af, dest.addr))
        + nla_be16(c.IPVS_DEST_ATTR_PORT, dest.port)
        + nla_u16(c.IPVS_DEST_ATTR_ADDR_FAMILY, dest.af)
    )


# A full destination is one fixed layout: packing it with a single Struct is
# several times faster than joining eleven attributes (it is the bulk of a
# 100,000-real apply). Ports are big-endian inside a native-endian layout, so
# they are byte-swapped on little-endian hosts before packing.
_DEST_FULL = struct.Struct("=HH HH16s HHH2x HHH2x HHI HHI HHI HHI HHB3x HHH2x HHH2x")
_SWAP = sys.byteorder == "little"


def _be(port: int) -> int:
    return ((port & 0xFF) << 8) | (port >> 8) if _SWAP else port


def dest_attr(dest: Destination) -> bytes:
    """IPVS_CMD_ATTR_DEST with every field (for NEW/SET_DEST)."""
    k = dest.key
    return _DEST_FULL.pack(
        _DEST_FULL.size, c.IPVS_CMD_ATTR_DEST | c.NLA_F_NESTED,
        20, c.IPVS_DEST_ATTR_ADDR, addr_bytes(k.af, k.addr),
        6, c.IPVS_DEST_ATTR_PORT, _be(k.port),
        6, c.IPVS_DEST_ATTR_ADDR_FAMILY, k.af,
        8, c.IPVS_DEST_ATTR_FWD_METHOD, dest.fwd,
        8, c.IPVS_DEST_ATTR_WEIGHT, dest.weight,
        8, c.IPVS_DEST_ATTR_U_THRESH, dest.u_thresh,
        8, c.IPVS_DEST_ATTR_L_THRESH, dest.l_thresh,
        5, c.IPVS_DEST_ATTR_TUN_TYPE, dest.tun_type,
        6, c.IPVS_DEST_ATTR_TUN_PORT, _be(dest.tun_port),
        6, c.IPVS_DEST_ATTR_TUN_FLAGS, dest.tun_flags,
    )  # fmt: skip


def dest_key_attr(key: DestKey) -> bytes:
    return nla_nested(c.IPVS_CMD_ATTR_DEST, dest_key_attrs(key))


def timeouts_attrs(t: Timeouts) -> bytes:
    return (
        nla_u32(c.IPVS_CMD_ATTR_TIMEOUT_TCP, t.tcp)
        + nla_u32(c.IPVS_CMD_ATTR_TIMEOUT_TCP_FIN, t.tcp_fin)
        + nla_u32(c.IPVS_CMD_ATTR_TIMEOUT_UDP, t.udp)
    )


def daemon_attr(d: SyncDaemon) -> bytes:
    body = nla_u32(c.IPVS_DAEMON_ATTR_STATE, d.state)
    if d.interface:
        body += nla_str(c.IPVS_DAEMON_ATTR_MCAST_IFN, d.interface)
    body += nla_u32(c.IPVS_DAEMON_ATTR_SYNC_ID, d.sync_id)
    return nla_nested(c.IPVS_CMD_ATTR_DAEMON, body)


# ---------------------------------------------------------------- decoders


@dataclass(frozen=True, slots=True)
class Message:
    type: int
    flags: int
    seq: int
    payload: memoryview


def iter_messages(buf: bytes | memoryview) -> Iterator[Message]:
    view = memoryview(buf)
    off = 0
    end = len(view)
    while off + NLMSGHDR.size <= end:
        length, mtype, flags, seq, _pid = NLMSGHDR.unpack_from(view, off)
        if length < NLMSGHDR.size or off + length > end:
            raise WireError(f"truncated netlink message at offset {off}")
        yield Message(mtype, flags, seq, view[off + NLMSGHDR.size : off + length])
        off += (length + 3) & ~3
    if end - off >= 4:  # more than alignment padding, less than a header
        raise WireError(f"{end - off} stray bytes after the last netlink message")


def parse_attrs(buf: memoryview) -> dict[int, memoryview]:
    out: dict[int, memoryview] = {}
    off = 0
    end = len(buf)
    while off + NLATTR.size <= end:
        length, atype = NLATTR.unpack_from(buf, off)
        if length < NLATTR.size or off + length > end:
            raise WireError(f"bad netlink attribute length {length} at offset {off}")
        out[atype & c.NLA_TYPE_MASK] = buf[off + NLATTR.size : off + length]
        off += (length + 3) & ~3
    return out


def genl_attrs(msg: Message) -> dict[int, memoryview]:
    return parse_attrs(msg.payload[GENLHDR.size :])


def decode_error(msg: Message) -> tuple[int, str]:
    """(positive errno or 0, extended-ack message) from an NLMSG_ERROR."""
    (err,) = I32.unpack_from(msg.payload, 0)
    text = ""
    if msg.flags & 0x200:  # NLM_F_ACK_TLVS: extack attributes follow
        (inner_len,) = U32.unpack_from(msg.payload, 4)
        # with NETLINK_CAP_ACK only the request header is echoed
        skip = 4 + (NLMSGHDR.size if msg.flags & 0x100 else inner_len)
        tlvs = parse_attrs(msg.payload[(skip + 3) & ~3 :])
        if 1 in tlvs:  # NLMSGERR_ATTR_MSG
            text = bytes(tlvs[1]).rstrip(b"\0").decode(errors="replace")
    return -err, text


def _u16(v: memoryview) -> int:
    return U16.unpack_from(v)[0]  # type: ignore[no-any-return]


def _u32(v: memoryview) -> int:
    return U32.unpack_from(v)[0]  # type: ignore[no-any-return]


def _be16(v: memoryview) -> int:
    return BE16.unpack_from(v)[0]  # type: ignore[no-any-return]


def _addr(af: int, v: memoryview) -> str:
    n = 4 if af == socket.AF_INET else 16
    return socket.inet_ntop(af, bytes(v[:n]))


def _cstr(v: memoryview) -> str:
    return bytes(v).split(b"\0", 1)[0].decode()


def decode_stats(v: memoryview, wide: bool) -> Stats:
    """Counters from a nested STATS/STATS64 attribute (one pass, values read in place)."""
    f = [0] * 11
    off = 0
    end = len(v)
    while off + 4 <= end:
        length, at = NLATTR.unpack_from(v, off)
        if length < 4 or off + length > end:
            raise WireError(f"bad netlink attribute length {length} at offset {off}")
        at &= c.NLA_TYPE_MASK
        if 1 <= at <= 10:
            if length >= 12:
                f[at] = U64.unpack_from(v, off + 4)[0]
            elif length >= 8:
                f[at] = U32.unpack_from(v, off + 4)[0]
        off += (length + 3) & ~3
    return Stats(f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10])


def _prefix(af: int, raw: memoryview) -> int:
    if af == socket.AF_INET:
        return bin(int.from_bytes(bytes(raw[:4]), "big")).count("1")
    return _u32(raw)


def decode_service(msg: Message) -> Service:
    top = genl_attrs(msg)
    a = parse_attrs(top[c.IPVS_CMD_ATTR_SERVICE])
    af = _u16(a[c.IPVS_SVC_ATTR_AF])
    fwmark = _u32(a[c.IPVS_SVC_ATTR_FWMARK]) if c.IPVS_SVC_ATTR_FWMARK in a else 0
    if fwmark:
        key = ServiceKey(af, 0, "", 0, fwmark)
    else:
        key = ServiceKey(
            af,
            _u16(a[c.IPVS_SVC_ATTR_PROTOCOL]),
            _addr(af, a[c.IPVS_SVC_ATTR_ADDR]),
            _be16(a[c.IPVS_SVC_ATTR_PORT]),
        )
    flags = FLAGS.unpack_from(a[c.IPVS_SVC_ATTR_FLAGS])[0] if c.IPVS_SVC_ATTR_FLAGS in a else 0
    stats = None
    if c.IPVS_SVC_ATTR_STATS64 in a:
        stats = decode_stats(a[c.IPVS_SVC_ATTR_STATS64], True)
    elif c.IPVS_SVC_ATTR_STATS in a:
        stats = decode_stats(a[c.IPVS_SVC_ATTR_STATS], False)
    return Service(
        key=key,
        scheduler=_cstr(a[c.IPVS_SVC_ATTR_SCHED_NAME]) if c.IPVS_SVC_ATTR_SCHED_NAME in a else "",
        flags=flags & c.USER_SVC_FLAGS,
        timeout=_u32(a[c.IPVS_SVC_ATTR_TIMEOUT]) if c.IPVS_SVC_ATTR_TIMEOUT in a else 0,
        prefix=_prefix(af, a[c.IPVS_SVC_ATTR_NETMASK]) if c.IPVS_SVC_ATTR_NETMASK in a else 0,
        pe_name=_cstr(a[c.IPVS_SVC_ATTR_PE_NAME]) if c.IPVS_SVC_ATTR_PE_NAME in a else "",
        stats=stats,
    )


def _nested_span(p: memoryview, atype: int) -> tuple[int, int]:
    """(start, end) of top-level attribute `atype` in a genetlink payload."""
    off = GENLHDR.size
    end = len(p)
    while off + NLATTR.size <= end:
        length, at = NLATTR.unpack_from(p, off)
        if length < NLATTR.size or off + length > end:
            raise WireError(f"bad netlink attribute length {length} at offset {off}")
        if at & c.NLA_TYPE_MASK == atype:
            return off + NLATTR.size, off + length
        off += (length + 3) & ~3
    raise WireError(f"attribute {atype} missing from the message")


_DEST_U32 = {
    c.IPVS_DEST_ATTR_FWD_METHOD,
    c.IPVS_DEST_ATTR_WEIGHT,
    c.IPVS_DEST_ATTR_U_THRESH,
    c.IPVS_DEST_ATTR_L_THRESH,
    c.IPVS_DEST_ATTR_ACTIVE_CONNS,
    c.IPVS_DEST_ATTR_INACT_CONNS,
    c.IPVS_DEST_ATTR_PERSIST_CONNS,
}


_DEST_FIELDS = (
    c.IPVS_DEST_ATTR_ADDR,
    c.IPVS_DEST_ATTR_PORT,
    c.IPVS_DEST_ATTR_FWD_METHOD,
    c.IPVS_DEST_ATTR_WEIGHT,
    c.IPVS_DEST_ATTR_U_THRESH,
    c.IPVS_DEST_ATTR_L_THRESH,
    c.IPVS_DEST_ATTR_TUN_TYPE,
    c.IPVS_DEST_ATTR_TUN_PORT,
    c.IPVS_DEST_ATTR_TUN_FLAGS,
    c.IPVS_DEST_ATTR_ACTIVE_CONNS,
    c.IPVS_DEST_ATTR_INACT_CONNS,
    c.IPVS_DEST_ATTR_PERSIST_CONNS,
    c.IPVS_DEST_ATTR_ADDR_FAMILY,
)
_VALUE_FORMATS = {16: "16s", 4: "I", 2: "H2x", 1: "B3x"}


@dataclass(frozen=True, slots=True)
class _Layout:
    """The attribute layout of the last destination the kernel sent.

    The kernel writes the same attributes in the same order for every real,
    so once learnt, a message is checked against the layout (its attribute
    headers included) and decoded with a single Struct unpack.
    """

    struct: struct.Struct
    headers: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    expected: tuple[int, ...]
    fields: Callable[[tuple[Any, ...]], tuple[Any, ...]]


_dest_layout: list[_Layout | None] = [None]


def _learn_dest_layout(p: memoryview, off: int, end: int) -> _Layout | None:
    fmt = "="
    expected: list[int] = []
    header_idx: list[int] = []
    field_idx: dict[int, int] = {}
    idx = 0
    while off + 4 <= end:
        length, at = NLATTR.unpack_from(p, off)
        kind = at & c.NLA_TYPE_MASK
        if kind in (c.IPVS_DEST_ATTR_STATS, c.IPVS_DEST_ATTR_STATS64):
            break
        value = _VALUE_FORMATS.get(length - 4)
        if value is None or kind in field_idx:
            return None
        fmt += "HH" + value
        expected += [length, at]
        header_idx += [idx, idx + 1]
        field_idx[kind] = idx + 2
        idx += 3
        off += (length + 3) & ~3
    if any(f not in field_idx for f in _DEST_FIELDS):
        return None
    return _Layout(
        struct.Struct(fmt),
        operator.itemgetter(*header_idx),
        tuple(expected),
        operator.itemgetter(*(field_idx[f] for f in _DEST_FIELDS)),
    )


def _swap16(v: int) -> int:
    return ((v & 0xFF) << 8) | (v >> 8) if _SWAP else v


def decode_dest(msg: Message, svc_af: int, stats: bool = True) -> Destination:
    p = msg.payload
    start, end = _nested_span(p, c.IPVS_CMD_ATTR_DEST)
    layout = _dest_layout[0]
    if layout is not None and start + layout.struct.size <= end:
        values = layout.struct.unpack_from(p, start)
        if layout.headers(values) == layout.expected:
            addr, port, fwd, weight, u, low, tun_type, tun_port, tun_flags, act, inact, pers, af = (
                layout.fields(values)
            )
            decoded = None
            if stats:
                decoded = _dest_stats(p, start + layout.struct.size, end)
            text = socket.inet_ntop(af, addr[: 4 if af == socket.AF_INET else 16])
            return Destination(
                key=DestKey(af, text, _swap16(port)),
                fwd=fwd & c.IP_VS_CONN_F_FWD_MASK, weight=weight, u_thresh=u, l_thresh=low,
                tun_type=tun_type, tun_port=_swap16(tun_port), tun_flags=tun_flags,
                active_conns=act, inact_conns=inact, persist_conns=pers, stats=decoded,
            )  # fmt: skip
    _dest_layout[0] = _learn_dest_layout(p, start, end)
    return _decode_dest_slow(msg, svc_af, stats)


def _dest_stats(p: memoryview, off: int, end: int) -> Stats | None:
    found: tuple[int, int] | None = None
    while off + 4 <= end:
        length, at = NLATTR.unpack_from(p, off)
        if length < 4 or off + length > end:
            raise WireError(f"bad netlink attribute length {length} at offset {off}")
        at &= c.NLA_TYPE_MASK
        if at == c.IPVS_DEST_ATTR_STATS64:
            return decode_stats(p[off + 4 : off + length], True)
        if at == c.IPVS_DEST_ATTR_STATS:
            found = (off + 4, off + length)
        off += (length + 3) & ~3
    return decode_stats(p[found[0] : found[1]], False) if found else None


def _decode_dest_slow(msg: Message, svc_af: int, stats: bool = True) -> Destination:
    # Any layout: one pass over the attributes, values read in place.
    p = msg.payload
    off, end = _nested_span(p, c.IPVS_CMD_ATTR_DEST)
    f = [0] * 16
    af = svc_af
    addr_at = -1
    stats_at = (-1, -1, False)
    unpack_attr = NLATTR.unpack_from
    while off + 4 <= end:
        length, at = unpack_attr(p, off)
        if length < 4 or off + length > end:
            raise WireError(f"bad netlink attribute length {length} at offset {off}")
        at &= c.NLA_TYPE_MASK
        v = off + 4
        if at in _DEST_U32 and length >= 8:
            f[at] = U32.unpack_from(p, v)[0]
        elif at == c.IPVS_DEST_ATTR_ADDR:
            addr_at = v
        elif at == c.IPVS_DEST_ATTR_PORT or at == c.IPVS_DEST_ATTR_TUN_PORT:
            f[at] = BE16.unpack_from(p, v)[0]
        elif at == c.IPVS_DEST_ATTR_ADDR_FAMILY:
            af = U16.unpack_from(p, v)[0]
        elif at == c.IPVS_DEST_ATTR_TUN_FLAGS:
            f[at] = U16.unpack_from(p, v)[0]
        elif at == c.IPVS_DEST_ATTR_TUN_TYPE and length >= 5:
            f[at] = p[v]
        elif at == c.IPVS_DEST_ATTR_STATS64:
            stats_at = (v, off + length, True)
        elif at == c.IPVS_DEST_ATTR_STATS and not stats_at[2]:
            stats_at = (v, off + length, False)
        off += (length + 3) & ~3
    n = 4 if af == socket.AF_INET else 16
    if addr_at < 0 or addr_at + n > end:
        raise WireError("destination without a usable address")
    decoded = None
    if stats and stats_at[0] >= 0:
        decoded = decode_stats(p[stats_at[0] : stats_at[1]], stats_at[2])
    return Destination(
        key=DestKey(af, socket.inet_ntop(af, bytes(p[addr_at : addr_at + n])), f[c.IPVS_DEST_ATTR_PORT]),
        fwd=f[c.IPVS_DEST_ATTR_FWD_METHOD] & c.IP_VS_CONN_F_FWD_MASK,
        weight=f[c.IPVS_DEST_ATTR_WEIGHT],
        u_thresh=f[c.IPVS_DEST_ATTR_U_THRESH],
        l_thresh=f[c.IPVS_DEST_ATTR_L_THRESH],
        tun_type=f[c.IPVS_DEST_ATTR_TUN_TYPE],
        tun_port=f[c.IPVS_DEST_ATTR_TUN_PORT],
        tun_flags=f[c.IPVS_DEST_ATTR_TUN_FLAGS],
        active_conns=f[c.IPVS_DEST_ATTR_ACTIVE_CONNS],
        inact_conns=f[c.IPVS_DEST_ATTR_INACT_CONNS],
        persist_conns=f[c.IPVS_DEST_ATTR_PERSIST_CONNS],
        stats=decoded,
    )


def decode_timeouts(msg: Message) -> Timeouts:
    a = genl_attrs(msg)

    def get(t: int) -> int:
        return _u32(a[t]) if t in a else 0

    return Timeouts(
        get(c.IPVS_CMD_ATTR_TIMEOUT_TCP),
        get(c.IPVS_CMD_ATTR_TIMEOUT_TCP_FIN),
        get(c.IPVS_CMD_ATTR_TIMEOUT_UDP),
    )


def decode_daemon(msg: Message) -> SyncDaemon:
    a = parse_attrs(genl_attrs(msg)[c.IPVS_CMD_ATTR_DAEMON])
    return SyncDaemon(
        state=_u32(a[c.IPVS_DAEMON_ATTR_STATE]),
        interface=_cstr(a[c.IPVS_DAEMON_ATTR_MCAST_IFN]) if c.IPVS_DAEMON_ATTR_MCAST_IFN in a else "",
        sync_id=_u32(a[c.IPVS_DAEMON_ATTR_SYNC_ID]) if c.IPVS_DAEMON_ATTR_SYNC_ID in a else 0,
    )


def decode_family_id(msg: Message) -> int:
    a = parse_attrs(msg.payload[GENLHDR.size :])
    return _u16(a[c.CTRL_ATTR_FAMILY_ID])
