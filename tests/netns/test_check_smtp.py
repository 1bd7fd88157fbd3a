"""The smtp checker against small SMTP servers in the server namespace, one
behaviour per port: a good server, a 554 banner, EHLO refused, garbage, a
server that accepts and never speaks, one that closes at once, and one that
ignores QUIT."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from healthchecks.checkers.smtp import SmtpCheck
from healthchecks.result import Result, Target
from tests.netns.lab import CLIENT4, SERVER4, SERVER6, Lab, down, sh

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]

TIMEOUT = 1.0


def good(conn: socket.socket, log: list[bytes]) -> None:
    conn.sendall(b"220-mx.test ESMTP\r\n220-second line\r\n220 ready\r\n")
    lines = conn.makefile("rb")
    for line in lines:
        log.append(line)
        if line.startswith(b"EHLO"):
            conn.sendall(b"250-mx.test hello\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        elif line.startswith(b"QUIT"):
            conn.sendall(b"221 bye\r\n")
            return
        else:
            conn.sendall(b"500 what\r\n")


def banner_554(conn: socket.socket, log: list[bytes]) -> None:
    conn.sendall(b"554 mx.test no service for you\r\n")
    for line in conn.makefile("rb"):
        log.append(line)
        conn.sendall(b"221 bye\r\n" if line.startswith(b"QUIT") else b"250 whatever\r\n")


def ehlo_502(conn: socket.socket, log: list[bytes]) -> None:
    conn.sendall(b"220 mx.test ESMTP\r\n")
    for line in conn.makefile("rb"):
        log.append(line)
        conn.sendall(b"221 bye\r\n" if line.startswith(b"QUIT") else b"502 not implemented\r\n")


def helo_only(conn: socket.socket, log: list[bytes]) -> None:
    """An RFC 821 server: EHLO is an unknown command, HELO is fine."""
    conn.sendall(b"220 old.test SMTP\r\n")
    for line in conn.makefile("rb"):
        log.append(line)
        if line.startswith(b"HELO"):
            conn.sendall(b"250 old.test\r\n")
        elif line.startswith(b"QUIT"):
            conn.sendall(b"221 bye\r\n")
            return
        else:
            conn.sendall(b"502 5.5.1 command not implemented\r\n")


def garbage(conn: socket.socket, log: list[bytes]) -> None:
    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
    log.extend(conn.makefile("rb"))


def hang(conn: socket.socket, log: list[bytes]) -> None:
    log.extend(conn.makefile("rb"))  # says nothing until the client gives up


def close_at_once(conn: socket.socket, log: list[bytes]) -> None:
    pass


def ignore_quit(conn: socket.socket, log: list[bytes]) -> None:
    conn.sendall(b"220 ready\r\n")
    for line in conn.makefile("rb"):
        log.append(line)
        if line.startswith(b"EHLO"):
            conn.sendall(b"250 ok\r\n")


Handler = Callable[[socket.socket, list[bytes]], None]
PORTS: dict[int, Handler] = {
    2525: good,
    2526: banner_554,
    2527: ehlo_502,
    2528: garbage,
    2529: hang,
    2530: close_at_once,
    2531: ignore_quit,
    2532: helo_only,
}


class SmtpServers:
    """Every handler in PORTS on SERVER4 and SERVER6; one connection at a time."""

    def __init__(self, lab: Lab) -> None:
        self.peers: list[str] = []
        self.log: list[bytes] = []  # every line the servers received
        self._stop = threading.Event()

        def listeners() -> list[socket.socket]:
            out = []
            for family, addr in ((socket.AF_INET, SERVER4), (socket.AF_INET6, SERVER6)):
                for port in PORTS:
                    s = socket.socket(family, socket.SOCK_STREAM)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((addr, port))
                    s.listen()
                    out.append(s)
            return out

        self._listeners = lab.in_server(listeners)
        self._thread = lab.serve(self._loop)

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select(self._listeners, [], [], 0.05)
            for s in ready:
                conn, peer = s.accept()
                self.peers.append(peer[0])
                with conn, contextlib.suppress(OSError):
                    conn.settimeout(3)
                    PORTS[s.getsockname()[1]](conn, self.log)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self._listeners:
            s.close()


@pytest.fixture
def servers(lab: Lab) -> Iterator[SmtpServers]:
    srv = SmtpServers(lab)
    try:
        yield srv
    finally:
        srv.close()


def check(lab: Lab, target: Target, timeout: float = TIMEOUT, opts: SmtpCheck | None = None) -> Result:
    return lab.run(lambda: (opts or SmtpCheck()).check(target, timeout))


def wait_for(cond: Callable[[], bool], limit: float = 2.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.parametrize("address", [SERVER4, SERVER6])
def test_good_server_passes_and_gets_quit(lab: Lab, servers: SmtpServers, address: str) -> None:
    result = check(lab, Target(address, 2525))
    assert result.ok, result.reason
    assert 0 < result.duration < TIMEOUT
    wait_for(lambda: len(servers.log) == 2)
    assert servers.log == [b"EHLO ipvsmgr\r\n", b"QUIT\r\n"]


def test_helo_name_and_source_address(lab: Lab, servers: SmtpServers) -> None:
    sh("ip", "-n", lab.client, "addr", "add", "198.18.200.11/24", "dev", "veth0")
    assert check(lab, Target(SERVER4, 2525, source=CLIENT4), opts=SmtpCheck(helo="lb1.example.net")).ok
    assert check(lab, Target(SERVER4, 2525, source="198.18.200.11")).ok
    wait_for(lambda: len(servers.log) == 4)
    assert servers.log[0] == b"EHLO lb1.example.net\r\n"
    assert servers.peers == [CLIENT4, "198.18.200.11"]


def test_rejections_name_the_code(lab: Lab, servers: SmtpServers) -> None:
    assert down(check(lab, Target(SERVER4, 2526))) == "banner 554"
    assert check(lab, Target(SERVER4, 2526), opts=SmtpCheck(banner_code=554)).ok
    assert down(check(lab, Target(SERVER4, 2527))) == "EHLO answered 502, HELO 502"
    wait_for(lambda: servers.log.count(b"QUIT\r\n") == 3)  # a polite client says goodbye


def test_a_server_that_only_speaks_helo_passes(lab: Lab, servers: SmtpServers) -> None:
    assert check(lab, Target(SERVER4, 2532)).ok  # RFC 5321 4.1.4: fall back to HELO
    wait_for(lambda: len(servers.log) == 3)
    assert servers.log == [b"EHLO ipvsmgr\r\n", b"HELO ipvsmgr\r\n", b"QUIT\r\n"]


def test_garbage(lab: Lab, servers: SmtpServers) -> None:
    assert down(check(lab, Target(SERVER4, 2528))) == "garbage response: b'SSH-2.0-OpenSSH_9.2'"


def test_silent_server_times_out(lab: Lab, servers: SmtpServers) -> None:
    result = check(lab, Target(SERVER4, 2529), timeout=0.5)
    assert down(result) == "timeout after 0.5s"
    assert 0.5 <= result.duration < 1.5


def test_server_closing_at_once(lab: Lab, servers: SmtpServers) -> None:
    assert down(check(lab, Target(SERVER4, 2530))) == "connection closed before a response"


def test_server_ignoring_quit_still_passes_in_time(lab: Lab, servers: SmtpServers) -> None:
    result = check(lab, Target(SERVER4, 2531), timeout=0.5)
    assert result.ok, result.reason
    assert result.duration < 0.5


def test_closed_port_and_unreachable_host(lab: Lab, servers: SmtpServers) -> None:
    assert down(check(lab, Target(SERVER4, 2599))) == "connect refused"
    assert down(check(lab, Target("198.18.200.77", 25), timeout=0.5)) == "timeout after 0.5s"


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ValueError):
        SmtpCheck(helo="evil\r\nRCPT TO:<x>")
    with pytest.raises(ValueError):
        SmtpCheck(banner_code=1000)


def test_every_host_must_answer_as_in_keepalived(lab: Lab, servers: SmtpServers) -> None:
    # keepalived's SMTP_CHECK with several host blocks: the real is up only if all of them are
    both = SmtpCheck(also=(Target(SERVER6, 2525),))
    assert check(lab, Target(SERVER4, 2525), opts=both).ok
    wait_for(lambda: len(servers.log) == 4)
    assert servers.peers == [CLIENT4, servers.peers[1]] and ":" in servers.peers[1]  # both were asked
    second_fails = SmtpCheck(also=(Target(SERVER4, 2526),))
    assert down(check(lab, Target(SERVER4, 2525), opts=second_fails)) == f"{SERVER4}:2526: banner 554"
    port_of_check = SmtpCheck(also=(Target(SERVER6),))  # no port: the check's
    assert check(lab, Target(SERVER4, 2525), opts=port_of_check).ok
    first_fails = SmtpCheck(also=(Target(SERVER4, 2525),))
    assert down(check(lab, Target(SERVER4, 2526), opts=first_fails)) == "banner 554"  # not asked further
