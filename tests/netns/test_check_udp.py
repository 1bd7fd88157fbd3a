"""The udp checker against real UDP servers in the server namespace: an echo
server (7), a server that always answers "nope" (8), a closed port (9), and
one that reads and never answers (10); the server namespace also routes
198.18.201.0/24 to nowhere (`unreachable`), answering with ICMP errors."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator

import pytest

from healthchecks.checkers.udp import UdpCheck
from healthchecks.result import Result, Target
from tests.netns.lab import CLIENT4, SERVER4, SERVER6, Lab, down, sh

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]

TIMEOUT = 1.0
ECHO, WRONG, CLOSED, SILENT = 7, 8, 9, 10


class UdpServers:
    """Echo on port 7, a fixed wrong reply on port 8, on SERVER4 and SERVER6."""

    def __init__(self, lab: Lab) -> None:
        self.seen: list[str] = []  # source address of every datagram received
        self._stop = threading.Event()

        def sockets() -> list[socket.socket]:
            out = []
            for family, addr in ((socket.AF_INET, SERVER4), (socket.AF_INET6, SERVER6)):
                for port in (ECHO, WRONG, SILENT):
                    s = socket.socket(family, socket.SOCK_DGRAM)
                    s.bind((addr, port))
                    out.append(s)
            return out

        self._socks = lab.in_server(sockets)
        self._thread = lab.serve(self._loop)

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select(self._socks, [], [], 0.05)
            for s in ready:
                data, peer = s.recvfrom(65535)
                self.seen.append(peer[0])
                port = s.getsockname()[1]
                if port != SILENT:
                    s.sendto(data if port == ECHO else b"nope", peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self._socks:
            s.close()


@pytest.fixture
def servers(lab: Lab) -> Iterator[UdpServers]:
    srv = UdpServers(lab)
    try:
        yield srv
    finally:
        srv.close()


def check(lab: Lab, opts: UdpCheck, target: Target, timeout: float = TIMEOUT) -> Result:
    return lab.run(lambda: opts.check(target, timeout))


@pytest.mark.parametrize("address", [SERVER4, SERVER6])
def test_echo_passes_on_exact_regex_and_any_reply(lab: Lab, servers: UdpServers, address: str) -> None:
    target = Target(address, ECHO)
    for opts in (
        UdpCheck(b"ping\x00\xff", expect=b"ping\x00\xff"),
        UdpCheck(b"status: ok 42", expect_regex=rb"ok \d+"),
        UdpCheck(b"anything"),
        UdpCheck(b"", expect=b""),
    ):
        result = check(lab, opts, target)
        assert result.ok, (opts, result.reason)
        assert 0 < result.duration < TIMEOUT


def test_wrong_reply_is_shown(lab: Lab, servers: UdpServers) -> None:
    exact = check(lab, UdpCheck(b"ping", expect=b"pong"), Target(SERVER4, WRONG))
    assert down(exact) == "unexpected reply: b'nope'"
    regex = check(lab, UdpCheck(b"ping", expect_regex=rb"^po"), Target(SERVER4, WRONG))
    assert down(regex) == "unexpected reply: b'nope'"
    long = check(lab, UdpCheck(b"x" * 100, expect=b"y"), Target(SERVER4, ECHO))
    assert down(long) == f"unexpected reply: {b'x' * 40!r}..."
    assert check(lab, UdpCheck(b"ping"), Target(SERVER4, WRONG)).ok  # any reply will do


def test_closed_port_is_port_unreachable(lab: Lab, servers: UdpServers) -> None:
    for address in (SERVER4, SERVER6):
        result = check(lab, UdpCheck(b"ping"), Target(address, CLOSED))
        assert down(result) == "port unreachable"
        assert result.duration < TIMEOUT


def test_silence_is_up_unless_a_reply_is_required(lab: Lab, servers: UdpServers) -> None:
    # keepalived's UDP_CHECK: no reply and no ICMP error within the timeout passes ...
    quiet = check(lab, UdpCheck(b"ping"), Target(SERVER4, SILENT), timeout=0.5)
    assert quiet.ok and 0.4 <= quiet.duration < 0.5, quiet
    # ... unless a reply is required, which a pattern to match implies
    required = check(lab, UdpCheck(b"ping", require_reply=True), Target(SERVER4, SILENT), timeout=0.5)
    assert down(required) == "timeout after 0.5s"
    expected = check(lab, UdpCheck(b"ping", expect=b"pong"), Target(SERVER4, SILENT), timeout=0.5)
    assert down(expected) == "timeout after 0.5s"
    lenient = UdpCheck(b"ping", expect=b"pong", require_reply=False)
    assert check(lab, lenient, Target(SERVER4, SILENT), timeout=0.5).ok
    assert down(check(lab, lenient, Target(SERVER4, WRONG))) == "unexpected reply: b'nope'"
    # Nobody holds 198.18.200.77: ARP fails, nothing ever comes back.
    result = check(lab, UdpCheck(b"ping", require_reply=True), Target("198.18.200.77", ECHO), timeout=0.5)
    assert down(result) == "timeout after 0.5s"
    assert 0.5 <= result.duration < 1.5


def test_icmp_errors_end_the_check_at_once(lab: Lab, servers: UdpServers) -> None:
    # The server namespace routes 198.18.201.0/24 to nowhere and says so (ICMP
    # host unreachable); 198.18.202.0/24 is prohibited (ICMP admin prohibited).
    sh("ip", "-n", lab.server, "route", "add", "unreachable", "198.18.201.0/24")
    sh("ip", "-n", lab.server, "route", "add", "prohibit", "198.18.202.0/24")
    sh("ip", "netns", "exec", lab.server, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for net in ("201", "202"):
        sh("ip", "-n", lab.client, "route", "add", f"198.18.{net}.0/24", "via", SERVER4)
    for address in ("198.18.201.5", "198.18.202.5"):
        result = check(lab, UdpCheck(b"ping"), Target(address, ECHO))
        assert down(result) == "host unreachable", (address, result)
        assert result.duration < 0.2, result


def test_source_address_is_bound(lab: Lab, servers: UdpServers) -> None:
    sh("ip", "-n", lab.client, "addr", "add", "198.18.200.11/24", "dev", "veth0")
    assert check(lab, UdpCheck(b"a"), Target(SERVER4, ECHO, source=CLIENT4)).ok
    assert check(lab, UdpCheck(b"b"), Target(SERVER4, ECHO, source="198.18.200.11")).ok
    assert servers.seen == [CLIENT4, "198.18.200.11"]
    unavailable = check(lab, UdpCheck(b"c"), Target(SERVER4, ECHO, source="198.18.200.99"))
    assert down(unavailable) == "source address not available"
    assert down(check(lab, UdpCheck(b"d"), Target(SERVER4, ECHO, source="::1"))).startswith(
        "bad source address"
    )
    assert servers.seen == [CLIENT4, "198.18.200.11"]


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError):
        UdpCheck(b"x", expect=b"a", expect_regex=b"b")
    with pytest.raises(ValueError):
        UdpCheck(b"x", expect_regex=b"(")
