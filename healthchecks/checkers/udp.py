"""UDP check: send one datagram, judge the first datagram that comes back.

The socket is connected, so the kernel only delivers the target's replies
and an ICMP port unreachable surfaces as ECONNREFUSED: `port unreachable`.
Silence is a `timeout after Xs` (UDP cannot tell a dropped probe from a
slow server).
"""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass
from typing import Any

from healthchecks.result import Result, Target, bounded


class _Fail(Exception):
    """A failure with an operator-facing reason (internal control flow)."""


@dataclass(frozen=True, slots=True)
class UdpCheck:
    """Options of a udp check.

    `payload`: the datagram to send (the config gives it as text or hex).
    `expect`: the exact reply; `expect_regex`: a bytes pattern the reply must
    contain (re.search); neither: any reply passes.
    """

    payload: bytes = b""
    expect: bytes | None = None
    expect_regex: bytes | None = None

    def __post_init__(self) -> None:
        if self.expect is not None and self.expect_regex is not None:
            raise ValueError("udp check: give expect or expect_regex, not both")
        if self.expect_regex is not None:
            try:
                re.compile(self.expect_regex)
            except re.error as e:
                raise ValueError(f"udp check: bad expect_regex: {e}") from e

    async def check(self, target: Target, timeout: float) -> Result:
        return await bounded(self._run(target), timeout)

    async def _run(self, target: Target) -> Result:
        try:
            reply = await _exchange(target, self.payload)
        except _Fail as e:
            return Result.down(str(e))
        if self.expect is not None:
            ok = reply == self.expect
        elif self.expect_regex is not None:
            ok = re.search(self.expect_regex, reply) is not None
        else:
            ok = True
        if not ok:
            return Result.down(f"unexpected reply: {_show(reply)}")
        return Result.up()


def _show(data: bytes) -> str:
    return repr(data[:40]) + ("..." if len(data) > 40 else "")


def _sockaddrs(target: Target) -> tuple[int, tuple[Any, ...], tuple[Any, ...] | None]:
    if not target.port:
        raise _Fail("no port to check")
    try:
        family, _, _, _, addr = socket.getaddrinfo(
            target.address, target.port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST
        )[0]
    except (OSError, UnicodeError) as e:
        raise _Fail(f"bad address {target.address!r}") from e
    if target.source is None:
        return family, addr, None
    try:
        src = socket.getaddrinfo(target.source, 0, family, socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST)[0][
            4
        ]
    except (OSError, UnicodeError) as e:
        raise _Fail(f"bad source address {target.source!r} for {target.address}") from e
    return family, addr, src


async def _exchange(target: Target, payload: bytes) -> bytes:
    family, addr, src = _sockaddrs(target)
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
            raise _Fail("port unreachable") from e
