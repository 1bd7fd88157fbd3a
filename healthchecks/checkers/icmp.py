"""ICMP check: one echo request (ping) over a raw socket, IPv4 or IPv6.

The first echo reply from the target carrying our identifier, sequence and
payload passes. A destination unreachable (or time exceeded) quoting our
request fails at once with its reason; any other ICMP traffic the raw socket
sees is ignored. Needs CAP_NET_RAW. The target port is ignored.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
from dataclasses import dataclass

from healthchecks.net import CheckFailed as _Fail
from healthchecks.net import SockAddrs, sockaddrs
from healthchecks.result import Result, Target, bounded

# IPv4 (RFC 792) and IPv6 (RFC 4443) message types.
ECHO_REQUEST4, ECHO_REPLY4, UNREACH4, TIME_EXCEEDED4 = 8, 0, 3, 11
ECHO_REQUEST6, ECHO_REPLY6, UNREACH6, TIME_EXCEEDED6 = 128, 129, 1, 3

_UNREACH4 = {
    0: "network unreachable",
    1: "host unreachable",
    2: "protocol unreachable",
    3: "port unreachable",
    4: "fragmentation needed",
    6: "network unreachable",
    7: "host unreachable",
    9: "administratively prohibited",
    10: "administratively prohibited",
    13: "administratively prohibited",
}
_UNREACH6 = {
    0: "network unreachable",  # no route to destination
    1: "administratively prohibited",
    3: "host unreachable",  # address unreachable
    4: "port unreachable",
    5: "administratively prohibited",  # source address failed policy
    6: "administratively prohibited",  # reject route
}

_SOL_RAW = 255  # Linux: setsockopt level of ICMP_FILTER
_ICMP_FILTER = 1
_ICMP6_FILTER = 1


@dataclass(frozen=True, slots=True)
class IcmpCheck:
    """Options of an icmp check. `size`: bytes of payload in the echo request."""

    size: int = 56

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 1400:
            raise ValueError(f"icmp payload size must be 8..1400, not {self.size}")

    async def check(self, target: Target, timeout: float) -> Result:
        return await bounded(self._run(target), timeout)

    async def _run(self, target: Target) -> Result:
        try:
            await _ping(target, self.size)
        except _Fail as e:
            return Result.down(str(e))
        return Result.up()


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    words: tuple[int, ...] = struct.unpack(f"!{len(data) // 2}H", data)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _sockaddrs(target: Target) -> SockAddrs:
    return sockaddrs(target.address, 0, target.source, socket.SOCK_DGRAM)


def _packed(family: int, address: str) -> bytes:
    return socket.inet_pton(family, address.split("%", 1)[0])


def _install_filter(sock: socket.socket, v6: bool) -> None:
    """Ask the kernel for echo replies and errors only (an optimisation: the
    matching below does not depend on it)."""
    try:
        if v6:
            blocked = [0xFFFFFFFF] * 8  # struct icmp6_filter: a set bit blocks that type
            for t in (ECHO_REPLY6, UNREACH6, TIME_EXCEEDED6):
                blocked[t >> 5] &= ~(1 << (t & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("=8I", *blocked))
        else:
            allowed = (1 << ECHO_REPLY4) | (1 << UNREACH4) | (1 << TIME_EXCEEDED4)
            sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("=I", ~allowed & 0xFFFFFFFF))
    except OSError:
        pass


async def _ping(target: Target, size: int) -> None:
    family, addr, src = _sockaddrs(target)
    v6 = family == socket.AF_INET6
    dst = _packed(family, addr[0])
    ident, seq = random.getrandbits(16), random.getrandbits(16)
    payload = os.urandom(size)
    if v6:
        # The kernel fills in the ICMPv6 checksum (it covers a pseudo-header).
        request = struct.pack("!BBHHH", ECHO_REQUEST6, 0, 0, ident, seq) + payload
    else:
        request = struct.pack("!BBHHH", ECHO_REQUEST4, 0, 0, ident, seq) + payload
        request = request[:2] + struct.pack("!H", checksum(request)) + request[4:]
    loop = asyncio.get_running_loop()
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        sock.setblocking(False)
        _install_filter(sock, v6)
        if src is not None:
            sock.bind(src)
        await loop.sock_sendto(sock, request, addr)
        while True:
            packet, peer = await loop.sock_recvfrom(sock, 65535)
            if v6:
                verdict = _match6(packet, _packed(family, peer[0]), dst, ident, seq, payload)
            else:
                verdict = _match4(packet, _packed(family, peer[0]), dst, ident, seq, payload)
            if verdict is None:
                continue
            if verdict:
                raise _Fail(verdict)
            return


def _match4(packet: bytes, peer: bytes, dst: bytes, ident: int, seq: int, payload: bytes) -> str | None:
    """None: not ours; "": our echo reply; else the reason of an error about our request."""
    icmp = packet[(packet[0] & 0x0F) * 4 :] if packet else b""
    if len(icmp) < 8:
        return None
    kind, code, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
    if kind == ECHO_REPLY4:
        ours = peer == dst and (rid, rseq) == (ident, seq) and icmp[8:] == payload
        return "" if ours else None
    if kind not in (UNREACH4, TIME_EXCEEDED4):
        return None
    inner = icmp[8:]  # the IP header and first 8 bytes of the datagram in error
    if len(inner) < 20 or inner[0] >> 4 != 4 or inner[9] != socket.IPPROTO_ICMP or inner[16:20] != dst:
        return None
    quoted = inner[(inner[0] & 0x0F) * 4 :]
    if len(quoted) < 8 or struct.unpack("!BxxxHH", quoted[:8]) != (ECHO_REQUEST4, ident, seq):
        return None
    if kind == TIME_EXCEEDED4:
        return "ttl exceeded"
    return _UNREACH4.get(code, f"destination unreachable (code {code})")


def _match6(packet: bytes, peer: bytes, dst: bytes, ident: int, seq: int, payload: bytes) -> str | None:
    """As _match4; an IPv6 raw socket gets the ICMPv6 message without the IP header."""
    if len(packet) < 8:
        return None
    kind, code, _, rid, rseq = struct.unpack("!BBHHH", packet[:8])
    if kind == ECHO_REPLY6:
        ours = peer == dst and (rid, rseq) == (ident, seq) and packet[8:] == payload
        return "" if ours else None
    if kind not in (UNREACH6, TIME_EXCEEDED6):
        return None
    inner = packet[8:]  # as much of the invoking packet as fits (IPv6 header first)
    if len(inner) < 48 or inner[0] >> 4 != 6 or inner[6] != socket.IPPROTO_ICMPV6 or inner[24:40] != dst:
        return None
    if struct.unpack("!BxxxHH", inner[40:48]) != (ECHO_REQUEST6, ident, seq):
        return None
    if kind == TIME_EXCEEDED6:
        return "ttl exceeded"
    return _UNREACH6.get(code, f"destination unreachable (code {code})")
