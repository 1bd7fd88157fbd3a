"""The tls checker against TLS listeners in the server namespace (and its DER expiry reader)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from healthchecks.checkers.tls import TlsCheck, der_not_after
from healthchecks.result import Result, Target
from tests.netns.certs import CA, Issued
from tests.netns.lab import CLIENT4, SERVER4, SERVER6, Lab, sh
from tests.netns.test_check_http import Server, hang
from tests.netns.test_check_tcp import EXTRA_CLIENT4, client_sockets

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning"),
]


def handshake_then_wait(conn: socket.socket, server: Server) -> None:
    """The TLS handshake happened in Server; hold the session until the client closes it."""
    with contextlib.suppress(OSError):
        conn.recv(1)


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA(tmp_path)


@pytest.fixture
def tls_server(lab: Lab) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(cert: Issued | None, addr: str = SERVER4, handler: object = handshake_then_wait) -> Server:
        tls = cert.server_context() if cert is not None else None
        servers.append(Server(lab, handler, addr=addr, tls=tls))  # type: ignore[arg-type]
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def check(lab: Lab, tls: TlsCheck, target: Target, timeout: float = 1.0) -> tuple[Result, float]:
    async def go() -> tuple[Result, float]:
        start = time.monotonic()
        result = await asyncio.wait_for(tls.check(target, timeout), timeout + 5)
        return result, time.monotonic() - start

    result, took = lab.run(go)
    assert client_sockets(lab) == []
    return result, took


def days(n: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=n)


def test_up_with_the_test_ca(lab: Lab, tls_server: Callable[..., Server], ca: CA) -> None:
    srv = tls_server(ca.issue(ips=(SERVER4,)))
    result, took = check(lab, TlsCheck(ca_file=ca.ca_file), Target(SERVER4, srv.port))
    assert result.ok, result
    assert took < 0.5
    assert srv.sni in ([], [None])  # no SNI for an IP address
    assert srv.peers == [CLIENT4]


def test_sni(lab: Lab, tls_server: Callable[..., Server], ca: CA) -> None:
    srv = tls_server(ca.issue(dns=("www.example.test",)))
    result, _ = check(lab, TlsCheck(sni="www.example.test", ca_file=ca.ca_file), Target(SERVER4, srv.port))
    assert result.ok, result
    assert srv.sni == ["www.example.test"]


def test_expired_certificate(lab: Lab, tls_server: Callable[..., Server], ca: CA) -> None:
    srv = tls_server(ca.issue(ips=(SERVER4,), not_after=days(-2)))
    target = Target(SERVER4, srv.port)
    result, _ = check(lab, TlsCheck(ca_file=ca.ca_file), target)
    assert (result.ok, result.reason) == (False, "certificate verify failed: certificate has expired")
    result, _ = check(lab, TlsCheck(verify=False), target)
    assert result.ok, result
    result, _ = check(lab, TlsCheck(verify=False, min_days_left=0), target)
    assert (result.ok, result.reason) == (False, "certificate has expired")


def test_wrong_name(lab: Lab, tls_server: Callable[..., Server], ca: CA) -> None:
    srv = tls_server(ca.issue(dns=("other.example.test",)))
    target = Target(SERVER4, srv.port)
    result, _ = check(lab, TlsCheck(sni="www.example.test", ca_file=ca.ca_file), target)
    assert result.reason == (
        "certificate verify failed: Hostname mismatch, certificate is not valid for 'www.example.test'"
    )
    result, _ = check(lab, TlsCheck(ca_file=ca.ca_file), target)
    assert result.reason == (
        f"certificate verify failed: IP address mismatch, certificate is not valid for '{SERVER4}'"
    )
    result, _ = check(lab, TlsCheck(sni="www.example.test", verify=False), target)
    assert result.ok, result


def test_unknown_ca(lab: Lab, tls_server: Callable[..., Server], ca: CA, tmp_path: Path) -> None:
    srv = tls_server(ca.issue(ips=(SERVER4,)))
    (tmp_path / "other").mkdir()
    other = CA(tmp_path / "other", "another CA")
    result, _ = check(lab, TlsCheck(ca_file=other.ca_file), Target(SERVER4, srv.port))
    assert result.reason == "certificate verify failed: unable to get local issuer certificate"


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
def test_min_days_left(lab: Lab, tls_server: Callable[..., Server], ca: CA, verify: bool) -> None:
    srv = tls_server(ca.issue(ips=(SERVER4,), not_after=days(5.04)))
    target = Target(SERVER4, srv.port)
    options: dict[str, Any] = {"ca_file": ca.ca_file} if verify else {"verify": False}
    result, _ = check(lab, TlsCheck(min_days_left=10, **options), target)
    assert (result.ok, result.reason) == (False, "certificate expires in 5 days")
    for enough in (5, 3):
        result, _ = check(lab, TlsCheck(min_days_left=enough, **options), target)
        assert result.ok, (enough, result)


def test_handshake_failures(lab: Lab, tls_server: Callable[..., Server]) -> None:
    def plain_http(conn: socket.socket, server: Server) -> None:
        conn.recv(4096)  # the ClientHello
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    srv = tls_server(None, handler=plain_http)
    result, _ = check(lab, TlsCheck(verify=False), Target(SERVER4, srv.port))
    assert (result.ok, result.reason) == (False, "handshake failed: wrong version number")

    def close_at_once(conn: socket.socket, server: Server) -> None:
        conn.recv(10)

    srv = tls_server(None, handler=close_at_once)
    result, _ = check(lab, TlsCheck(verify=False), Target(SERVER4, srv.port))
    assert result.reason in ("handshake failed: connection closed", "handshake failed: connection reset")


def test_connect_refused_and_timeout(lab: Lab, tls_server: Callable[..., Server]) -> None:
    result, _ = check(lab, TlsCheck(verify=False), Target(SERVER4, 9))
    assert (result.ok, result.reason) == (False, "connect refused")
    srv = tls_server(None, handler=hang)  # accepts, never answers the ClientHello
    result, took = check(lab, TlsCheck(verify=False), Target(SERVER4, srv.port), timeout=0.5)
    assert (result.ok, result.reason) == (False, "timeout after 0.5s")
    assert 0.45 < took < 1.0


def test_ipv6_and_source_address(lab: Lab, tls_server: Callable[..., Server], ca: CA) -> None:
    sh("ip", "-n", lab.client, "addr", "add", f"{EXTRA_CLIENT4}/24", "dev", "veth0")
    srv6 = tls_server(ca.issue(ips=(SERVER6,)), addr=SERVER6)
    result, _ = check(lab, TlsCheck(ca_file=ca.ca_file), Target(SERVER6, srv6.port))
    assert result.ok, result
    srv4 = tls_server(ca.issue(ips=(SERVER4,)))
    result, _ = check(lab, TlsCheck(ca_file=ca.ca_file), Target(SERVER4, srv4.port, source=EXTRA_CLIENT4))
    assert result.ok, result
    assert srv4.peers == [EXTRA_CLIENT4]


def test_bad_files(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    result, _ = check(lab, TlsCheck(ca_file=str(tmp_path / "junk.pem")), Target(SERVER4, 9))
    assert result.reason.startswith("tls setup failed: ")


@pytest.mark.parametrize("year", [1999, 2030, 2049, 2050, 2100])
def test_der_not_after(ca: CA, year: int) -> None:
    # UTCTime through 2049, GeneralizedTime from 2050 on
    when = datetime.datetime(year, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)
    cert = ca.issue(dns=("x.test",), not_after=when)
    der = x509.load_pem_x509_certificate(Path(cert.cert_file).read_bytes()).public_bytes(Encoding.DER)
    assert der_not_after(der) == when.timestamp()
    assert der_not_after(der) == ssl.cert_time_to_seconds(when.strftime("%b %d %H:%M:%S %Y GMT"))
    with pytest.raises(ValueError):
        der_not_after(der[:60])


def test_tls13_client_certificate_rejection_is_seen(
    lab: Lab, tls_server: Callable[..., Server], ca: CA, tmp_path: Path
) -> None:
    # TLS 1.3: the server judges the client's certificate after the client's
    # side of the handshake is done; its alert comes after (RFC 8446 4.4.2.4)
    server = ca.issue(ips=(SERVER4,))
    srv = Server(lab, handshake_then_wait, addr=SERVER4, tls=server.server_context(client_ca=ca.ca_file))
    try:
        target = Target(SERVER4, srv.port)
        client = ca.issue(client=True)
        good = TlsCheck(ca_file=ca.ca_file, cert_file=client.cert_file, key_file=client.key_file)
        result, took = check(lab, good, target)
        assert result.ok, result
        assert took < 0.5
        result, _ = check(lab, TlsCheck(ca_file=ca.ca_file), target)
        assert result.reason == "client certificate rejected: tlsv13 alert certificate required", result
        (tmp_path / "other").mkdir()
        stranger = CA(tmp_path / "other", "another CA").issue(client=True)
        foreign = TlsCheck(ca_file=ca.ca_file, cert_file=stranger.cert_file, key_file=stranger.key_file)
        result, _ = check(lab, foreign, target)
        assert result.reason.startswith("client certificate rejected: "), result
        assert "alert" in result.reason, result
    finally:
        srv.close()
