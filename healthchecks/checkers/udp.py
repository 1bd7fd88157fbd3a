"""UDP check: send one datagram, judge the first datagram that comes back.

The socket is connected, so the kernel only delivers the target's replies,
and IP_RECVERR reports any ICMP error about the probe at once: `port
unreachable`, `host unreachable`, ... fail the check as soon as they arrive.

Silence is keepalived's UDP_CHECK semantics by default: UDP cannot tell a
dropped probe from a server that does not answer this payload, so a check
that expects no particular reply passes when the whole timeout goes by
without an ICMP error. `require_reply` (true by default when `expect` or
`expect_regex` is given) makes silence a `timeout after Xs`.
"""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass

from healthchecks.net import CheckFailed as _Fail
from healthchecks.net import SockAddrs, sockaddrs, udp_exchange
from healthchecks.result import Result, Target, bounded


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
    require_reply: bool | None = None  # None: when expect or expect_regex is given

    @property
    def reply_required(self) -> bool:
        if self.require_reply is not None:
            return self.require_reply
        return self.expect is not None or self.expect_regex is not None

    def __post_init__(self) -> None:
        if self.expect is not None and self.expect_regex is not None:
            raise ValueError("udp check: give expect or expect_regex, not both")
        if self.expect_regex is not None:
            try:
                re.compile(self.expect_regex)
            except re.error as e:
                raise ValueError(f"udp check: bad expect_regex: {e}") from e

    async def check(self, target: Target, timeout: float) -> Result:
        return await bounded(self._run(target, timeout), timeout)

    async def _run(self, target: Target, timeout: float) -> Result:
        # Silence that is allowed ends a little before the deadline, so the
        # verdict is this check's and not the timeout's.
        wait = timeout if self.reply_required else max(timeout * 0.8, timeout - 0.05)
        try:
            async with asyncio.timeout(wait):
                reply = await _exchange(target, self.payload)
        except TimeoutError:
            if self.reply_required:
                raise
            return Result.up()
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


def _sockaddrs(target: Target) -> SockAddrs:
    if not target.port:
        raise _Fail("no port to check")
    return sockaddrs(target.address, target.port, target.source, socket.SOCK_DGRAM)


async def _exchange(target: Target, payload: bytes) -> bytes:
    return await udp_exchange(_sockaddrs(target), payload)
