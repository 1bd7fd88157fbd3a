"""TCP check: the real passes when a TCP connection to it can be opened.

Also the connection plumbing the http and tls checks share: `connect()` (bind
to `target.source`, connect, close on every failure), `release()`, `guarded()`
(check body -> Result, bounded in time) and `CheckFailed`.

Option-less: `TcpCheck()`. Port 0 in the target is a failure (`no port`).

Reasons: `connect refused`, `timeout after 1s`, `host unreachable`,
`network unreachable`, `source address not available`,
`source address family does not match target`, `bad target address`, `no port`
and other `describe_os_error` phrases.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import socket
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from healthchecks import connectprobe
from healthchecks.connectprobe import Cancel, Done
from healthchecks.result import NO_FD, NO_FD_ERRNOS, Result, Target, bounded, describe_os_error

# Linux: let bind() to a source address leave the port to connect(), so checks
# bound to one source do not exhaust the ephemeral ports (Python < 3.12 lacks the name).
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class CheckFailed(Exception):
    """Raised inside a check with the operator-facing reason; becomes Result.down(reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def os_reason(e: OSError) -> str:
    """describe_os_error, plus the errno-less errors asyncio makes (e.g. EOF in a TLS handshake)."""
    if isinstance(e, ConnectionResetError) and e.errno is None:
        return "connection closed"
    if isinstance(e, ConnectionAbortedError) and e.errno is None:
        return "connection aborted"
    return describe_os_error(e) or type(e).__name__


async def guarded(body: Coroutine[Any, Any, Result], timeout: float) -> Result:
    """Run a check body within `timeout`: CheckFailed, OSError and overrunning become Result.down.

    Anything else a body raises is a bug in the checker, still reported as a
    failure (`check error: ...`) rather than raised into the scheduler.
    """

    async def run() -> Result:
        try:
            return await body
        except CheckFailed as e:
            return Result.down(e.reason)
        except TimeoutError:
            raise  # bounded() words it
        except OSError as e:
            if e.errno in NO_FD_ERRNOS:
                return Result.not_run(NO_FD)
            return Result.down(os_reason(e))
        except Exception as e:
            return Result.down(f"check error: {type(e).__name__}: {e}")

    return await bounded(run(), timeout)


def _sockaddr(address: str, port: int, family: int = socket.AF_UNSPEC) -> tuple[int, Any]:
    """(family, sockaddr) of a numeric address; never a DNS lookup.

    A plain IPv4 or IPv6 literal (what the configuration holds) is read with
    inet_pton, which costs less than a connect: no cache to hold per target
    (an LRU of getaddrinfo results held 5 MiB at 10,000 checks). Other forms
    (a scope id, fe80::1%eth0) go through getaddrinfo, cached."""
    if "%" not in address:
        for fam in (socket.AF_INET, socket.AF_INET6):
            if family not in (socket.AF_UNSPEC, fam):
                continue
            try:
                socket.inet_pton(fam, address)
            except OSError:
                continue
            return fam, ((address, port) if fam == socket.AF_INET else (address, port, 0, 0))
    return _resolved(address, port, family)


@functools.lru_cache(maxsize=1024)
def _resolved(address: str, port: int, family: int) -> tuple[int, Any]:
    infos = socket.getaddrinfo(address, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    return infos[0][0], infos[0][4]


async def connect(target: Target, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to target.address:port, bound to
    target.source when set. Raises CheckFailed or OSError; the socket is closed
    on every failure, cancellation included."""
    if not 0 < port < 65536:
        raise CheckFailed("no port" if port == 0 else f"bad port {port}")
    try:
        family, dest = _sockaddr(target.address, port)
    except (OSError, UnicodeError):
        raise CheckFailed("bad target address") from None
    source = None
    if target.source:
        try:
            _, source = _sockaddr(target.source, 0, family)
        except (OSError, UnicodeError):
            raise CheckFailed("source address family does not match target") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source is not None:
            if sys.platform == "linux":
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            try:
                sock.bind(source)
            except OSError as e:
                if e.errno == errno.EADDRNOTAVAIL:
                    raise CheckFailed("source address not available") from None
                raise
        await asyncio.get_running_loop().sock_connect(sock, dest)
    except BaseException:
        sock.close()
        raise
    return sock


async def release(sock: socket.socket, writer: asyncio.StreamWriter | None = None) -> None:
    """Close a check's connection now, without a graceful TLS shutdown or lingering.

    abort() unregisters the socket from the loop at once; the sleep lets the
    transport's connection_lost run (so no transport is left unclosed), and the
    final close covers a socket no transport took over.
    """
    if writer is not None:
        writer.transport.abort()
    try:
        await asyncio.sleep(0)
    finally:
        sock.close()


def _probe_addrs(target: Target) -> tuple[int, Any, Any] | Result:
    """(family, dest, source sockaddr or None) for a probe, or the failure to report."""
    if not 0 < target.port < 65536:
        return Result.down("no port" if target.port == 0 else f"bad port {target.port}")
    try:
        family, dest = _sockaddr(target.address, target.port)
    except (OSError, UnicodeError):
        return Result.down("bad target address")
    if not target.source:
        return family, dest, None
    try:
        return family, dest, _sockaddr(target.source, 0, family)[1]
    except (OSError, UnicodeError):
        return Result.down("source address family does not match target")


@dataclass(frozen=True, slots=True)
class TcpCheck:
    """Connect only: up when the three-way handshake completes.

    start() is the scheduler's path: a callback probe on the loop's
    ConnectProber, no coroutine (see healthchecks/connectprobe.py); check()
    awaits the same probe.
    """

    def start(
        self, loop: asyncio.AbstractEventLoop, target: Target, timeout: float, done: Done, /
    ) -> Cancel | None:
        addrs = _probe_addrs(target)
        if isinstance(addrs, Result):
            done(addrs)
            return None
        family, dest, source = addrs
        return connectprobe.for_loop(loop).start(family, dest, source, timeout, done)

    async def check(self, target: Target, timeout: float) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        start = loop.time()

        def done(result: Result) -> None:
            if not future.done():
                future.set_result(result)

        cancel = self.start(loop, target, timeout, done)
        try:
            result = await future
        except BaseException:
            if cancel is not None:
                cancel()
            raise
        return Result(result.ok, result.reason, result.weight, loop.time() - start, result.ran)
