"""Socket plumbing shared by the datagram and line-protocol checkers."""

from __future__ import annotations

import asyncio
import socket
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


async def udp_exchange(addrs: SockAddrs, payload: bytes) -> bytes:
    """Send one datagram and return the first reply, on a connected socket:
    the kernel drops datagrams from anyone else and turns an ICMP port
    unreachable into ECONNREFUSED on the next receive."""
    family, addr, src = addrs
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        if src is not None:
            sock.bind(src)
        sock.connect(addr)
        try:
            await loop.sock_sendall(sock, payload)
            return await loop.sock_recv(sock, 65535)
        except ConnectionRefusedError as e:
            raise CheckFailed("port unreachable") from e
