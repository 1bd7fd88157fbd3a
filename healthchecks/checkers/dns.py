"""DNS check: one query over UDP or TCP, judged on the reply's rcode and,
optionally, on data that must appear in its answer section.

dnspython builds the query and parses the reply; the I/O is plain asyncio
socket calls so the check can bind `target.source` and close its socket on
every path. dnspython is imported lazily: the rest of ipvsmgr works without it.

Over UDP, a datagram that is not a response to this query (another id: a
late answer to an earlier probe, or a spoofed one) is ignored and the wait
goes on, as a resolver does (RFC 5452); if the right one never comes, the
timeout says how many were ignored. A truncated reply (TC) is asked again
over TCP, within the same timeout (RFC 7766).
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from healthchecks.checkers import MissingPackage
from healthchecks.net import CheckFailed as _Fail
from healthchecks.net import SockAddrs, sockaddrs, udp_exchange
from healthchecks.result import Result, Target, bounded

if TYPE_CHECKING:
    import dns.message

DEFAULT_PORT = 53
# The dnspython modules used below (imported on first use).
_MODULES = (
    "dns.flags",
    "dns.message",
    "dns.name",
    "dns.rcode",
    "dns.rdatatype",
    "dns.rdtypes.txtbase",
)
_MISSING = "the dns health check needs dnspython (Debian package python3-dnspython)"


class DnspythonMissing(MissingPackage):
    """dnspython is not installed."""


def _require_dnspython() -> None:
    try:
        for module in _MODULES:
            importlib.import_module(module)
    except ImportError as e:
        raise DnspythonMissing(_MISSING) from e


@dataclass(frozen=True, slots=True)
class DnsCheck:
    """Options of a dns check.

    `name`/`qtype`: the question (`www.example.com`, `A`). `transport`: `udp`
    or `tcp`. `rcode`: the rcode a healthy server answers (`NOERROR`, or e.g.
    `NXDOMAIN` for a probe name). `answer`: strings that must all appear among
    the answer section's rdata texts (`198.18.0.9`, a TXT string with or
    without quotes, a name with or without the final dot); empty: not checked.
    """

    name: str
    qtype: str = "A"
    transport: Literal["udp", "tcp"] = "udp"
    rcode: str = "NOERROR"
    answer: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        _require_dnspython()
        import dns.name
        import dns.rcode
        import dns.rdatatype

        if self.transport not in ("udp", "tcp"):
            raise ValueError(f"dns transport must be udp or tcp, not {self.transport!r}")
        try:
            dns.name.from_text(self.name)
        except Exception as e:
            raise ValueError(f"bad dns query name {self.name!r}: {e}") from e
        try:
            dns.rdatatype.from_text(self.qtype)
        except Exception as e:
            raise ValueError(f"unknown dns query type {self.qtype!r}") from e
        try:
            dns.rcode.from_text(self.rcode)
        except Exception as e:
            raise ValueError(f"unknown dns rcode {self.rcode!r}") from e
        # A list or set from the config is fine; keep the dataclass hashable.
        object.__setattr__(self, "answer", frozenset(self.answer))

    async def check(self, target: Target, timeout: float) -> Result:
        try:
            _require_dnspython()
        except DnspythonMissing as e:
            return Result.down(str(e))
        ignored: list[bytes] = []
        result = await bounded(self._run(target, ignored), timeout)
        if ignored and not result.ok and result.reason.startswith("timeout"):
            n = len(ignored)
            why = f"{result.reason} ({n} {'reply' if n == 1 else 'replies'} with another id ignored)"
            result = Result(False, why, None, result.duration)
        return result

    async def _run(self, target: Target, ignored: list[bytes]) -> Result:
        import dns.flags
        import dns.message

        query = dns.message.make_query(self.name, self.qtype)
        wire = query.to_wire()
        try:
            if self.transport == "udp":
                family, addr, src = _sockaddrs(target, DEFAULT_PORT, socket.SOCK_DGRAM)
                reply = await udp_exchange((family, addr, src), wire, _ours(query), ignored)
                if _flags(reply) & dns.flags.TC:
                    reply = await _tcp_exchange(*_sockaddrs(target, DEFAULT_PORT, socket.SOCK_STREAM), wire)
            else:
                family, addr, src = _sockaddrs(target, DEFAULT_PORT, socket.SOCK_STREAM)
                reply = await _tcp_exchange(family, addr, src, wire)
            self._judge(query, reply)
        except _Fail as e:
            return Result.down(str(e))
        return Result.up()

    def _judge(self, query: dns.message.Message, wire: bytes) -> None:
        import dns.flags
        import dns.message
        import dns.rcode

        try:
            reply = dns.message.from_wire(wire)
        except Exception as e:
            raise _Fail(f"garbage reply: {_why(e)}") from e
        if reply.id != query.id:
            raise _Fail("reply id mismatch")
        if not reply.flags & dns.flags.QR:
            raise _Fail("garbage reply: not a response")
        if reply.opcode() != query.opcode():
            raise _Fail("garbage reply: opcode mismatch")
        rcode = reply.rcode()
        # Servers refusing a query may leave the question out; the rcode says it all.
        if (reply.question or rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)) and not (
            len(reply.question) == 1 and reply.question[0] == query.question[0]
        ):
            raise _Fail("reply question mismatch")
        if rcode != dns.rcode.from_text(self.rcode):
            raise _Fail(f"rcode {dns.rcode.to_text(rcode)}")
        if not self.answer:
            return
        present = _answer_texts(reply)
        missing = sorted(a for a in self.answer if not _wanted_forms(a) & present)
        if missing:
            why = f"answer missing {', '.join(missing)}"
            if reply.flags & dns.flags.TC:
                why += " (reply truncated)"  # over TCP: the server set TC on a stream
            raise _Fail(why)


def _ours(query: dns.message.Message) -> Callable[[bytes], bool]:
    """Whether a datagram is to be judged: anything but a response to another
    query (the QR bit, another id), which is ignored; garbage is judged."""

    def accept(wire: bytes) -> bool:
        other = len(wire) >= 4 and bool(wire[2] & 0x80) and struct.unpack("!H", wire[:2])[0] != query.id
        return not other

    return accept


def _flags(wire: bytes) -> int:
    return struct.unpack("!H", wire[2:4])[0] if len(wire) >= 4 else 0


def _why(e: Exception) -> str:
    """A short description of why dnspython could not parse a reply."""
    import dns.message

    if isinstance(e, dns.message.ShortHeader):
        return "too short"
    if isinstance(e, dns.message.TrailingJunk):
        return "trailing junk"
    text = " ".join(str(e).split()).rstrip(".") or type(e).__name__
    if len(text) > 60:
        text = text[:57] + "..."
    if text[:2].istitle():  # "The label type ..." -> "the label type ...", not "dNS message"
        text = text[:1].lower() + text[1:]
    return text


def _norm(text: str) -> str:
    """Canonical form of an address (so `2001:db8::0009` matches `2001:db8::9`)."""
    text = text.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def _wanted_forms(text: str) -> set[str]:
    text = _norm(text)
    return {text, text.rstrip(".")} - {""}


def _answer_texts(reply: dns.message.Message) -> set[str]:
    """Every text an operator may have written for the answer's rdata."""
    import dns.rdtypes.txtbase

    texts: set[str] = set()
    for rrset in reply.answer:
        for rd in rrset:
            text = _norm(rd.to_text())
            texts |= {text, text.rstrip(".")}
            if isinstance(rd, dns.rdtypes.txtbase.TXTBase):
                strings = [s.decode("utf-8", "backslashreplace") for s in rd.strings]
                texts |= {"".join(strings), *strings}
    return texts


def _sockaddrs(target: Target, default_port: int, stype: int) -> SockAddrs:
    return sockaddrs(target.address, target.port or default_port, target.source, stype)


async def _tcp_exchange(
    family: int, addr: tuple[Any, ...], src: tuple[Any, ...] | None, wire: bytes
) -> bytes:
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        if src is not None:
            sock.bind(src)
        await loop.sock_connect(sock, addr)
        await loop.sock_sendall(sock, struct.pack("!H", len(wire)) + wire)
        (length,) = struct.unpack("!H", await _recv_exactly(loop, sock, 2, first=True))
        return await _recv_exactly(loop, sock, length, first=False)


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int, first: bool) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = await loop.sock_recv(sock, n - len(buf))
        if not data:
            if first and not buf:
                raise _Fail("connection closed before a response")
            raise _Fail("garbage reply: truncated")
        buf += data
    return bytes(buf)
