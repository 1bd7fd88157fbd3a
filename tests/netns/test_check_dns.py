"""The dns checker against a small dnspython server in the server namespace.

The server answers over UDP and TCP on port 53 of SERVER4 and SERVER6. Names
pick its behaviour: www/txt/v6 have records, anything else is NXDOMAIN, and
garbage/wrongid/wrongq/silent misbehave as their names say; lateid answers
with another id first and the right one 50 ms later; big is truncated (TC)
over UDP and whole over TCP.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Literal

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from healthchecks.checkers.dns import DnsCheck
from healthchecks.result import Result, Target
from tests.netns.lab import CLIENT4, SERVER4, SERVER6, Lab, down, sh

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]

TIMEOUT = 1.0
ZONE = {
    ("www.test.", "A"): ["198.18.0.9"],
    ("txt.test.", "TXT"): ['"hello world"'],
    ("v6.test.", "AAAA"): ["2001:db8::9"],
}
NAMES = {name for name, _ in ZONE}


def answer(wire: bytes, udp: bool = False) -> bytes | None:
    """The server's reply to one query (None: stay silent)."""
    query = dns.message.from_wire(wire)
    question = query.question[0]
    name = question.name.to_text().lower()
    if name == "silent.test.":
        return None
    if name == "garbage.test.":
        return b"this is not a dns message at all"
    if name == "wrongq.test.":
        other = dns.message.make_query("other.test.", "A")
        other.id = query.id
        return dns.message.make_response(other).to_wire()
    response = dns.message.make_response(query)
    if name == "wrongid.test.":
        response.id = (query.id + 1) & 0xFFFF
    if name == "big.test." and udp:
        response.flags |= dns.flags.TC  # too big for a datagram: ask over TCP
        return response.to_wire()
    if name == "big.test.":
        rrs = [f"198.18.{i}.1" for i in range(1, 120)]  # about 2 KB
        response.answer.append(dns.rrset.from_text(name, 60, "IN", "A", *rrs))
        return response.to_wire()
    rdtype = dns.rdatatype.to_text(question.rdtype)
    if (name, rdtype) in ZONE:
        response.answer.append(dns.rrset.from_text(name, 60, "IN", rdtype, *ZONE[name, rdtype]))
    elif name not in NAMES:
        response.set_rcode(dns.rcode.NXDOMAIN)
    return response.to_wire()


class DnsServer:
    def __init__(self, lab: Lab, port: int = 53) -> None:
        self.seen: list[str] = []  # client address of every query
        self.transports: list[str] = []  # and how it came
        self._stop = threading.Event()

        def sockets() -> list[socket.socket]:
            out = []
            for family, addr in ((socket.AF_INET, SERVER4), (socket.AF_INET6, SERVER6)):
                udp = socket.socket(family, socket.SOCK_DGRAM)
                udp.bind((addr, port))
                tcp = socket.socket(family, socket.SOCK_STREAM)
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((addr, port))
                tcp.listen()
                out += [udp, tcp]
            return out

        self._socks = lab.in_server(sockets)
        self._thread = lab.serve(self._loop)

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select(self._socks, [], [], 0.05)
            for s in ready:
                if s.type == socket.SOCK_DGRAM:
                    wire, peer = s.recvfrom(65535)
                    self.seen.append(peer[0])
                    self.transports.append("udp")
                    if b"\x06lateid\x04test" in wire:  # another id first, the right one later
                        wrong = bytearray(answer(wire) or b"")
                        wrong[0] ^= 0xFF
                        s.sendto(bytes(wrong), peer)
                        later = threading.Timer(0.05, s.sendto, (answer(wire), peer))
                        later.start()
                        continue
                    reply = answer(wire, udp=True)
                    if reply is not None:
                        s.sendto(reply, peer)
                else:
                    conn, peer = s.accept()
                    self.seen.append(peer[0])
                    self.transports.append("tcp")
                    with conn:
                        self._tcp(conn)

    def _tcp(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        try:
            header = conn.recv(2, socket.MSG_WAITALL)
            wire = conn.recv(struct.unpack("!H", header)[0], socket.MSG_WAITALL)
            reply = answer(wire)
            if reply is None:
                conn.recv(1)  # until the client gives up and closes
            else:
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except (OSError, struct.error):
            pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self._socks:
            s.close()


@pytest.fixture
def server(lab: Lab) -> Iterator[DnsServer]:
    srv = DnsServer(lab)
    try:
        yield srv
    finally:
        srv.close()


def check(lab: Lab, opts: DnsCheck, target: Target, timeout: float = TIMEOUT) -> Result:
    return lab.run(lambda: opts.check(target, timeout))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("address", [SERVER4, SERVER6])
def test_a_record_passes_over_both_transports_and_families(
    lab: Lab, server: DnsServer, transport: Literal["udp", "tcp"], address: str
) -> None:
    opts = DnsCheck("www.test", transport=transport, answer=frozenset({"198.18.0.9"}))
    result = check(lab, opts, Target(address, 53))
    assert result.ok, result.reason
    assert 0 < result.duration < TIMEOUT


def test_txt_and_aaaa_answers_match_as_operators_write_them(lab: Lab, server: DnsServer) -> None:
    txt = DnsCheck("txt.test", qtype="TXT", answer=frozenset({"hello world"}))
    assert check(lab, txt, Target(SERVER4, 53)).ok
    quoted = DnsCheck("txt.test", qtype="TXT", answer=frozenset({'"hello world"'}))
    assert check(lab, quoted, Target(SERVER4, 53)).ok
    aaaa = DnsCheck("v6.test", qtype="AAAA", transport="tcp", answer=frozenset({"2001:db8:0::0009"}))
    assert check(lab, aaaa, Target(SERVER6, 53)).ok


def test_missing_answer_is_named(lab: Lab, server: DnsServer) -> None:
    opts = DnsCheck("www.test", answer=frozenset({"198.18.0.9", "198.18.0.10"}))
    assert down(check(lab, opts, Target(SERVER4, 53))) == "answer missing 198.18.0.10"


def test_nxdomain_fails_unless_expected(lab: Lab, server: DnsServer) -> None:
    assert down(check(lab, DnsCheck("nope.test"), Target(SERVER4, 53))) == "rcode NXDOMAIN"
    assert check(lab, DnsCheck("nope.test", rcode="NXDOMAIN"), Target(SERVER4, 53)).ok
    assert down(check(lab, DnsCheck("www.test", rcode="NXDOMAIN"), Target(SERVER4, 53))) == "rcode NOERROR"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_misbehaving_server(lab: Lab, server: DnsServer, transport: Literal["udp", "tcp"]) -> None:
    t = transport
    target = Target(SERVER4, 53)
    garbage = down(check(lab, DnsCheck("garbage.test", transport=t), target))
    assert garbage.startswith("garbage reply: "), garbage
    wrong_id = down(check(lab, DnsCheck("wrongid.test", transport=t), target))
    if t == "udp":  # not an answer to this query: ignored, and the right one never came
        assert wrong_id == "timeout after 1s (1 reply with another id ignored)"
    else:
        assert wrong_id == "reply id mismatch"
    assert down(check(lab, DnsCheck("wrongq.test", transport=t), target)) == "reply question mismatch"
    silent = check(lab, DnsCheck("silent.test", transport=t), target, timeout=0.5)
    assert down(silent) == "timeout after 0.5s"
    assert 0.5 <= silent.duration < 1.5


def test_a_reply_with_another_id_is_ignored_until_the_right_one(lab: Lab, server: DnsServer) -> None:
    result = check(lab, DnsCheck("lateid.test", rcode="NXDOMAIN"), Target(SERVER4, 53))
    assert result.ok, result.reason
    assert 0.05 <= result.duration < 0.5


def test_a_truncated_reply_is_asked_again_over_tcp(lab: Lab, server: DnsServer) -> None:
    opts = DnsCheck("big.test", answer=frozenset({"198.18.1.1", "198.18.119.1"}))
    result = check(lab, opts, Target(SERVER4, 53))
    assert result.ok, result.reason
    assert server.transports == ["udp", "tcp"]


def test_closed_port_udp_and_tcp(lab: Lab, server: DnsServer) -> None:
    for address in (SERVER4, SERVER6):
        assert down(check(lab, DnsCheck("www.test"), Target(address, 5353))) == "port unreachable"
        tcp = DnsCheck("www.test", transport="tcp")
        assert down(check(lab, tcp, Target(address, 5353))) == "connect refused"


def test_source_address_is_bound(lab: Lab, server: DnsServer) -> None:
    sh("ip", "-n", lab.client, "addr", "add", "198.18.200.11/24", "dev", "veth0")
    assert check(lab, DnsCheck("www.test"), Target(SERVER4, 53, source=CLIENT4)).ok
    assert check(lab, DnsCheck("www.test", transport="tcp"), Target(SERVER4, 53, source="198.18.200.11")).ok
    assert check(lab, DnsCheck("www.test"), Target(SERVER4, 53, source="198.18.200.11")).ok
    assert server.seen == [CLIENT4, "198.18.200.11", "198.18.200.11"]
    unavailable = check(lab, DnsCheck("www.test"), Target(SERVER4, 53, source="198.18.200.99"))
    assert down(unavailable) == "source address not available"
    mixed = check(lab, DnsCheck("www.test"), Target(SERVER6, 53, source=CLIENT4))
    assert down(mixed).startswith("bad source address")


def test_unreachable_server_times_out(lab: Lab) -> None:
    result = check(lab, DnsCheck("www.test"), Target("198.18.200.77", 53), timeout=0.5)
    assert down(result) == "timeout after 0.5s"


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError):
        DnsCheck("www.test", qtype="NOTATYPE")
    with pytest.raises(ValueError):
        DnsCheck("www.test", rcode="NOTARCODE")
    with pytest.raises(ValueError):
        DnsCheck("www.test", transport="sctp")  # type: ignore[arg-type]
