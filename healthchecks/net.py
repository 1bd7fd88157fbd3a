"""Socket plumbing shared by the datagram and line-protocol checkers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

SockAddrs = tuple[int, tuple[Any, ...], tuple[Any, ...] | None]


class CheckFailed(Exception):
    """A failure with an operator-facing reason, raised inside a checker."""


def sockaddrs(address: str, port: int, source: str | None, stype: int) -> SockAddrs:
    """(family, remote sockaddr, local sockaddr or None) for numeric addresses only."""
    try:
        family, _, _, _, addr = socket.getaddrinfo(address, port, type=stype, flags=socket.AI_NUMERICHOST)[0]
    except (OSError, UnicodeError) as e:
        raise CheckFailed(f"bad address {address!r}") from e
    if source is None:
        return family, addr, None
    try:
        src = socket.getaddrinfo(source, 0, family, stype, flags=socket.AI_NUMERICHOST)[0][4]
    except (OSError, UnicodeError) as e:
        raise CheckFailed(f"bad source address {source!r} for {address}") from e
    return family, addr, src


# IP_RECVERR / IPV6_RECVERR: every ICMP error about our datagrams is reported
# on the socket at once (without it Linux reports only the "hard" ones).
_RECVERR: dict[int, tuple[int, int]] = {
    socket.AF_INET: (socket.IPPROTO_IP, 11),
    socket.AF_INET6: (socket.IPPROTO_IPV6, 25),
}
_UDP_ERRORS = {111: "port unreachable"}  # ECONNREFUSED: ICMP port unreachable


async def udp_exchange(
    addrs: SockAddrs,
    payload: bytes,
    accept: Callable[[bytes], bool] | None = None,
    ignored: list[bytes] | None = None,
) -> bytes:
    """Send one datagram and return the first reply `accept` takes (any, without
    it), on a connected socket: the kernel drops datagrams from anyone else,
    and with IP_RECVERR any ICMP error about the probe (port, host or network
    unreachable, administratively prohibited) ends the wait at once. Replies
    `accept` refuses are appended to `ignored` and the wait goes on."""
    family, addr, src = addrs
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        level, option = _RECVERR.get(family, _RECVERR[socket.AF_INET])
        sock.setsockopt(level, option, 1)
        if src is not None:
            sock.bind(src)
        sock.connect(addr)
        try:
            await loop.sock_sendall(sock, payload)
            while True:
                reply = await loop.sock_recv(sock, 65535)
                if accept is None or accept(reply):
                    return reply
                if ignored is not None:
                    ignored.append(reply)
        except OSError as e:
            if e.errno in _UDP_ERRORS:
                raise CheckFailed(_UDP_ERRORS[e.errno]) from e
            from healthchecks.result import describe_os_error

            raise CheckFailed(describe_os_error(e)) from e
