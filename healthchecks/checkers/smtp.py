"""SMTP check: read the banner, EHLO (or HELO), QUIT (RFC 5321 replies, multi-line aware).

A healthy server greets with the expected code (220) and answers EHLO with
250. A server that only speaks RFC 821 answers EHLO with a 5xx (502 "command
not implemented", 500, 504): the check then says HELO, as RFC 5321 4.1.4
tells a client to and keepalived does, and a 250 to that is healthy too.
QUIT is sent as a courtesy and never awaited: its answer, or lack of one,
does not change the verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from dataclasses import dataclass

from healthchecks.net import CheckFailed as _Fail
from healthchecks.net import SockAddrs, sockaddrs
from healthchecks.result import Result, Target, bounded

DEFAULT_PORT = 25
MAX_LINE = 4096  # RFC 5321 allows 512 per reply line; be lenient
MAX_LINES = 200
_REPLY = re.compile(rb"([1-5][0-9][0-9])(?:[ -].*)?", re.DOTALL)
_NAME = re.compile(r"[A-Za-z0-9.:\[\]_-]+")
_NO_EHLO = frozenset({500, 501, 502, 504})  # EHLO not understood: an RFC 821 server


@dataclass(frozen=True, slots=True)
class SmtpCheck:
    """Options of an smtp check: the EHLO name and the banner code expected."""

    helo: str = "ipvsmgr"
    banner_code: int = 220
    also: tuple[Target, ...] = ()  # more servers that must answer too, in turn (keepalived's hosts)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.helo):
            raise ValueError(f"smtp check: bad helo name {self.helo!r}")
        if not 100 <= self.banner_code <= 599:
            raise ValueError(f"smtp check: bad banner code {self.banner_code}")

    async def check(self, target: Target, timeout: float) -> Result:
        result = await bounded(self._run(target), timeout)
        for host in self.also:
            if not result.ok:
                break
            other = Target(host.address, host.port or target.port, host.source)  # the check's port by default
            one = await bounded(self._run(other), timeout)
            if not one.ok:
                where = f"[{other.address}]" if ":" in other.address else other.address
                result = Result(
                    False, f"{where}:{other.port or DEFAULT_PORT}: {one.reason}", None, one.duration
                )
        return result

    async def _run(self, target: Target) -> Result:
        loop = asyncio.get_running_loop()
        try:
            family, addr, src = _sockaddrs(target)
        except _Fail as e:
            return Result.down(str(e))
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            if src is not None:
                sock.bind(src)
            await loop.sock_connect(sock, addr)
            reader = _Replies(loop, sock)
            try:
                code = await reader.reply()
                if code != self.banner_code:
                    _quit(sock)
                    return Result.down(f"banner {code}")
                await loop.sock_sendall(sock, f"EHLO {self.helo}\r\n".encode("ascii"))
                code = await reader.reply()
                if code in _NO_EHLO:
                    await loop.sock_sendall(sock, f"HELO {self.helo}\r\n".encode("ascii"))
                    helo = await reader.reply()
                    if helo != 250:
                        _quit(sock)
                        return Result.down(f"EHLO answered {code}, HELO {helo}")
                elif code != 250:
                    _quit(sock)
                    return Result.down(f"EHLO answered {code}")
            except _Fail as e:
                return Result.down(str(e))
            # The verdict is known: QUIT is a courtesy, and waiting for its 221
            # would only race the timeout on a loaded machine.
            _quit(sock)
        return Result.up()


def _quit(sock: socket.socket) -> None:
    """Say goodbye politely without waiting: the verdict never depends on it."""
    with contextlib.suppress(OSError):
        sock.send(b"QUIT\r\n")  # non-blocking: a full send buffer just skips it
        sock.shutdown(socket.SHUT_WR)
        # Unread bytes at close turn the FIN into an RST, and an RST can make
        # the server drop the QUIT it has not read yet: empty what has arrived.
        while sock.recv(4096, socket.MSG_DONTWAIT):
            pass


def _show(data: bytes) -> str:
    return repr(data[:40]) + ("..." if len(data) > 40 else "")


class _Replies:
    """Reads SMTP replies (`250-first`, ..., `250 last`) from a non-blocking socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self._loop = loop
        self._sock = sock
        self._buf = bytearray()

    async def _line(self, started: bool) -> bytes:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end]).rstrip(b"\r")
                del self._buf[: end + 1]
                return line
            if len(self._buf) > MAX_LINE:
                raise _Fail(f"garbage response: {_show(bytes(self._buf))}")
            data = await self._loop.sock_recv(self._sock, 4096)
            if not data:
                rest = bytes(self._buf)
                if rest and not _REPLY.fullmatch(rest):
                    raise _Fail(f"garbage response: {_show(rest)}")
                if started or rest:
                    raise _Fail("connection closed mid-response")
                raise _Fail("connection closed before a response")
            self._buf += data

    async def reply(self) -> int:
        """The code of the next complete reply."""
        code: bytes | None = None
        for n in range(MAX_LINES):
            line = await self._line(started=n > 0)
            m = _REPLY.fullmatch(line)
            if m is None or (code is not None and m[1] != code):
                raise _Fail(f"garbage response: {_show(line)}")
            code = m[1]
            if line[3:4] != b"-":
                return int(code)
        raise _Fail("garbage response: too many lines")


def _sockaddrs(target: Target) -> SockAddrs:
    return sockaddrs(target.address, target.port or DEFAULT_PORT, target.source, socket.SOCK_STREAM)
