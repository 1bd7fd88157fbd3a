"""The tcp checker against real listeners in the server namespace."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator

import pytest

from healthchecks.checkers.tcp import TcpCheck
from healthchecks.result import Result, Target
from tests.netns.lab import CLIENT4, CLIENT6, SERVER4, SERVER6, Lab, sh

EXTRA_CLIENT4, EXTRA_CLIENT6 = "198.18.200.11", "2001:db8:200::11"  # added by the source tests

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]


def check(lab: Lab, target: Target, timeout: float = 1.0) -> tuple[Result, float]:
    """Run TcpCheck in the client namespace; (result, seconds it took)."""

    async def go() -> tuple[Result, float]:
        start = time.monotonic()
        result = await asyncio.wait_for(TcpCheck().check(target, timeout), timeout + 5)
        return result, time.monotonic() - start

    return lab.run(go)


def client_sockets(lab: Lab) -> list[str]:
    """TCP sockets in the client namespace that this process still holds open."""
    out = sh("ip", "netns", "exec", lab.client, "ss", "-tanpH")
    return [line for line in out.splitlines() if f"pid={os.getpid()}," in line]


@pytest.fixture
def listeners(lab: Lab) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def listen(lab: Lab, socks: list[socket.socket], addr: str = SERVER4, backlog: int = 16) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
        s.bind((addr, 0))
        s.listen(backlog)
        s.settimeout(2)
        return s

    s = lab.in_server(make)
    socks.append(s)
    return s


def peer_of_next_connection(s: socket.socket) -> str:
    conn, peer = s.accept()
    conn.close()
    return str(peer[0])


def test_up_when_listening(lab: Lab, listeners: list[socket.socket]) -> None:
    s = listen(lab, listeners)
    result, took = check(lab, Target(SERVER4, s.getsockname()[1]))
    assert result.ok, result
    assert result.reason == ""
    assert took < 0.5
    assert peer_of_next_connection(s) == CLIENT4
    assert client_sockets(lab) == []


def test_connect_refused(lab: Lab) -> None:
    result, took = check(lab, Target(SERVER4, 9))
    assert (result.ok, result.reason) == (False, "connect refused")
    assert took < 0.5
    assert client_sockets(lab) == []


def test_timeout_when_the_accept_queue_is_full(lab: Lab, listeners: list[socket.socket]) -> None:
    # backlog 0 queues one connection; SYNs beyond it are dropped, so connect() hangs
    s = listen(lab, listeners, backlog=0)
    port = s.getsockname()[1]
    filler = lab.in_client(lambda: socket.create_connection((SERVER4, port), timeout=1))
    try:
        result, took = check(lab, Target(SERVER4, port), timeout=0.5)
    finally:
        filler.close()
    assert (result.ok, result.reason) == (False, "timeout after 0.5s")
    assert 0.45 < took < 1.0
    assert 0.45 < result.duration < 1.0
    assert client_sockets(lab) == []


def test_ipv6(lab: Lab, listeners: list[socket.socket]) -> None:
    s = listen(lab, listeners, SERVER6)
    result, _ = check(lab, Target(SERVER6, s.getsockname()[1]))
    assert result.ok, result
    assert peer_of_next_connection(s) == CLIENT6
    result, _ = check(lab, Target(SERVER6, 9))
    assert result.reason == "connect refused"


def test_binds_to_the_source_address(lab: Lab, listeners: list[socket.socket]) -> None:
    sh("ip", "-n", lab.client, "addr", "add", f"{EXTRA_CLIENT4}/24", "dev", "veth0")
    sh("ip", "-n", lab.client, "addr", "add", f"{EXTRA_CLIENT6}/64", "dev", "veth0", "nodad")
    s4, s6 = listen(lab, listeners), listen(lab, listeners, SERVER6)
    for source in (CLIENT4, EXTRA_CLIENT4):
        result, _ = check(lab, Target(SERVER4, s4.getsockname()[1], source=source))
        assert result.ok, result
        assert peer_of_next_connection(s4) == source
    result, _ = check(lab, Target(SERVER6, s6.getsockname()[1], source=EXTRA_CLIENT6))
    assert result.ok, result
    assert peer_of_next_connection(s6) == EXTRA_CLIENT6


def test_source_problems(lab: Lab) -> None:
    result, _ = check(lab, Target(SERVER4, 9, source="198.18.200.99"))
    assert result.reason == "source address not available"
    result, _ = check(lab, Target(SERVER4, 9, source=CLIENT6))
    assert result.reason == "source address family does not match target"


def test_bad_targets(lab: Lab) -> None:
    assert check(lab, Target(SERVER4, 0))[0].reason == "no port"
    assert check(lab, Target("not-an-address", 80))[0].reason == "bad target address"


def test_closes_with_a_reset_and_leaves_no_time_wait(lab: Lab, listeners: list[socket.socket]) -> None:
    s = listen(lab, listeners)
    for _ in range(5):
        result, _ = check(lab, Target(SERVER4, s.getsockname()[1]))
        assert result.ok, result
    conns = [s.accept()[0] for _ in range(5)]
    try:
        for c in conns:
            c.settimeout(2)
            with pytest.raises(ConnectionResetError):
                c.recv(1)
    finally:
        for c in conns:
            c.close()
    out = sh("ip", "netns", "exec", lab.client, "ss", "-tanH", "state", "time-wait")
    assert out.strip() == ""
