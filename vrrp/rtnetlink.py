"""The few rtnetlink requests VRRP needs, with the standard library (socket + struct).

Links by name, a link's addresses, adding and removing an address, creating
a macvlan, setting a link up or down, deleting a link: each is one request
and its ack (or a dump) on one NETLINK_ROUTE socket, in the network
namespace where the socket was made. Failures are OSError with the kernel's
errno (and its extended-ack text when it gives one).

Why not pyroute2: it costs the VRRP process about 13 MB (167 modules) of
its 28, and its 0.9 rewrite on asyncio broke calls made from a running
loop; these seven requests are a page of code. The message framing is
ipvsmgr/ipvs/wire.py's, which speaks IPVS the same way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from dataclasses import dataclass

from ipvsmgr.ipvs.wire import NLMSGHDR, Message, WireError, decode_error, iter_messages, nla, parse_attrs

# <linux/rtnetlink.h>, <linux/if_link.h>, <linux/if_addr.h>, <linux/netlink.h>
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
SOL_NETLINK, NETLINK_EXT_ACK = 270, 11
IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINK, IFLA_OPERSTATE, IFLA_LINKINFO = 1, 3, 5, 16, 18
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_MACVLAN_MODE, MACVLAN_MODE_BRIDGE = 1, 4
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_FLAGS = 1, 2, 3, 8
IFF_UP = 0x1
NLA_F_NESTED = 0x8000

IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
U32 = struct.Struct("=I")


@dataclass(frozen=True, slots=True)
class LinkInfo:
    index: int
    name: str
    flags: int
    mac: bytes
    operstate: int | None
    kind: str | None  # IFLA_INFO_KIND: "macvlan", "veth", ... (None for a plain device)


@dataclass(frozen=True, slots=True)
class AddrInfo:
    family: int
    prefixlen: int
    flags: int  # IFA_FLAGS when given (all 32 bits), else ifa_flags
    index: int
    address: str  # IFA_ADDRESS as text


class Rtnetlink:
    """One NETLINK_ROUTE socket; synchronous requests (each takes microseconds)."""

    def __init__(self) -> None:
        kind = socket.SOCK_RAW | socket.SOCK_CLOEXEC
        self._sock = socket.socket(socket.AF_NETLINK, kind, socket.NETLINK_ROUTE)
        try:
            self._sock.bind((0, 0))
            with contextlib.suppress(OSError):  # the kernel's reason beside the errno, when it has one
                self._sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        except BaseException:
            self._sock.close()
            raise
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    # ------------------------------------------------------------ requests

    def link(self, name: str) -> LinkInfo | None:
        """The link of that name; None if there is none."""
        body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + nla(IFLA_IFNAME, name.encode() + b"\0")
        try:
            found = [m for m in self._request(RTM_GETLINK, 0, body) if m.type == RTM_NEWLINK]
        except OSError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        return _link(found[0]) if found else None

    def addresses(self, index: int) -> list[AddrInfo]:
        """Every address on the link (both families)."""
        body = IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        found = (_addr(m) for m in self._request(RTM_GETADDR, NLM_F_DUMP, body) if m.type == RTM_NEWADDR)
        return [a for a in found if a is not None and a.index == index]

    def add_address(
        self,
        index: int,
        address: str,
        prefixlen: int,
        flags: int = 0,
        *,
        label: str | None = None,
        scope: int = 0,
    ) -> None:
        """EEXIST if it is there already. label: IPv4 only (ifconfig's eth0:vip)."""
        body = _addr_body(index, address, prefixlen, flags, scope)
        if label is not None:
            body += nla(IFA_LABEL, label.encode() + b"\0")
        self._ack(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)

    def del_address(self, index: int, address: str, prefixlen: int) -> None:
        """EADDRNOTAVAIL if it is not there."""
        self._ack(RTM_DELADDR, 0, _addr_body(index, address, prefixlen, 0))

    def add_macvlan(self, name: str, base: int, mac: bytes, mode: int = MACVLAN_MODE_BRIDGE) -> None:
        data = nla(IFLA_MACVLAN_MODE, U32.pack(mode))
        info = nla(IFLA_INFO_KIND, b"macvlan") + nla(IFLA_INFO_DATA | NLA_F_NESTED, data)
        body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + b"".join(
            (
                nla(IFLA_IFNAME, name.encode() + b"\0"),
                nla(IFLA_LINK, U32.pack(base)),
                nla(IFLA_ADDRESS, mac),
                nla(IFLA_LINKINFO | NLA_F_NESTED, info),
            )
        )
        self._ack(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)

    def set_up(self, index: int, up: bool) -> None:
        self._ack(RTM_NEWLINK, 0, IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0, IFF_UP))

    def delete_link(self, index: int) -> None:
        """ENODEV if it is gone."""
        self._ack(RTM_DELLINK, 0, IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0))

    # ------------------------------------------------------------ plumbing

    def _ack(self, mtype: int, flags: int, body: bytes) -> None:
        self._request(mtype, flags | NLM_F_ACK, body)

    def _request(self, mtype: int, flags: int, body: bytes) -> list[Message]:
        """Send one request; the replies until its ack, DONE, or the one answer of a GET.
        An error reply raises OSError."""
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        self._sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(body), mtype, NLM_F_REQUEST | flags, seq, 0) + body)
        replies: list[Message] = []
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        while True:
            data = self._sock.recv(1 << 16)
            try:
                messages = list(iter_messages(data))
            except WireError as e:
                raise OSError(errno.EPROTO, f"rtnetlink: {e}") from None
            for m in messages:
                if m.seq != seq:
                    continue  # a stale answer to an earlier, interrupted request
                if m.type == NLMSG_ERROR:
                    code, text = decode_error(m)
                    if code:
                        raise OSError(code, os.strerror(code) + (f" ({text})" if text else ""))
                    return replies  # the ack
                if m.type == NLMSG_DONE:
                    return replies
                replies.append(m)
                if not dump and not flags & NLM_F_ACK:
                    return replies  # a GET's single answer


def _addr_body(index: int, address: str, prefixlen: int, flags: int, scope: int = 0) -> bytes:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    raw = socket.inet_pton(family, address)
    attrs = nla(IFA_LOCAL, raw) + nla(IFA_ADDRESS, raw) if family == socket.AF_INET else nla(IFA_ADDRESS, raw)
    return IFADDRMSG.pack(family, prefixlen, flags & 0xFF, scope, index) + attrs


def _link(m: Message) -> LinkInfo:
    family, itype, index, flags, _ = IFINFOMSG.unpack_from(m.payload, 0)
    attrs = parse_attrs(m.payload[IFINFOMSG.size :])
    kind = None
    if IFLA_LINKINFO in attrs:
        info = parse_attrs(attrs[IFLA_LINKINFO])
        if IFLA_INFO_KIND in info:
            kind = bytes(info[IFLA_INFO_KIND]).rstrip(b"\0").decode(errors="replace")
    name = bytes(attrs.get(IFLA_IFNAME, b"")).rstrip(b"\0").decode(errors="replace")
    operstate = attrs[IFLA_OPERSTATE][0] if IFLA_OPERSTATE in attrs else None
    return LinkInfo(index, name, flags, bytes(attrs.get(IFLA_ADDRESS, b"")), operstate, kind)


def _addr(m: Message) -> AddrInfo | None:
    family, prefixlen, flags, _scope, index = IFADDRMSG.unpack_from(m.payload, 0)
    attrs = parse_attrs(m.payload[IFADDRMSG.size :])
    raw = attrs.get(IFA_ADDRESS) or attrs.get(IFA_LOCAL)
    if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
        return None
    if IFA_FLAGS in attrs:
        (flags,) = U32.unpack_from(attrs[IFA_FLAGS], 0)
    return AddrInfo(family, prefixlen, flags, index, socket.inet_ntop(family, bytes(raw)))
