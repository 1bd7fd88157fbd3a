"""The http and https checkers against small servers in the server namespace.

Each server is a listening socket and a thread per connection running a
handler (plain socket functions below), so every misbehaviour is scripted
byte by byte: a hang, a reset half-way, garbage, an endless body.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from healthchecks.checkers.http import HttpCheck
from healthchecks.result import Result, Target
from tests.netns.certs import CA
from tests.netns.lab import CLIENT4, SERVER4, SERVER6, Lab, sh
from tests.netns.test_check_tcp import EXTRA_CLIENT4, client_sockets

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning"),
]

BODY = b"<html><body>all good: ready=1</body></html>\n"
BODY_SHA = hashlib.sha256(BODY).hexdigest()


class Server:
    """A listener in the server namespace; `handler(conn, server)` runs on a thread per connection."""

    def __init__(
        self,
        lab: Lab,
        handler: Callable[[socket.socket, Server], None],
        addr: str = SERVER4,
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        def listen() -> socket.socket:
            s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
            s.listen(16)
            s.settimeout(0.05)
            return s

        self.handler, self.tls = handler, tls
        self.listener = lab.in_server(listen)
        self.port: int = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.peers: list[str] = []
        self.requests: list[bytes] = []
        self.sni: list[str | None] = []
        self.errors: list[BaseException] = []
        self.sent: list[int] = []  # bytes an endless body got out before the client went away
        self._threads: list[threading.Thread] = []
        if tls is not None:
            tls.sni_callback = lambda _obj, name, _ctx: self.sni.append(name)
        self._accepting = lab.serve(self._accept_loop)

    def _accept_loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, peer = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.peers.append(peer[0])
            t = threading.Thread(target=self._serve_one, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve_one(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                try:
                    conn.do_handshake()
                except (OSError, ValueError):
                    lingering_close(conn)
                    raise
            self.handler(conn, self)
        except (OSError, ValueError) as e:  # the client went away, or TLS refused: recorded
            self.errors.append(e)
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self._accepting.join(2)
        self.listener.close()
        for t in self._threads:
            t.join(2)
        assert not any(t.is_alive() for t in [self._accepting, *self._threads])


def lingering_close(conn: socket.socket) -> None:
    """Half-close and read until the client closes, as nginx does: the TLS alert just sent
    reaches the client's TLS layer instead of being overtaken by a RST (which closing with
    the client's request unread would send, and which a client that writes first sees)."""
    conn.settimeout(0.5)
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_WR)  # on an SSLSocket this also drops TLS: recv() is raw
        while conn.recv(4096):
            pass


@pytest.fixture
def serve(lab: Lab) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(handler: Callable[[socket.socket, Server], None], **kw: object) -> Server:
        servers.append(Server(lab, handler, **kw))  # type: ignore[arg-type]
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA(tmp_path)


def check(lab: Lab, http: HttpCheck, target: Target, timeout: float = 1.0) -> tuple[Result, float]:
    """Run the check in the client namespace; (result, seconds). No socket may stay open."""

    async def go() -> tuple[Result, float]:
        start = time.monotonic()
        result = await asyncio.wait_for(http.check(target, timeout), timeout + 5)
        return result, time.monotonic() - start

    result, took = lab.run(go)
    assert client_sockets(lab) == []
    return result, took


# --- handlers: what the server does with a connection ---------------------------------------------


def read_request(conn: socket.socket, server: Server) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    server.requests.append(data)
    return data


def header(request: bytes, name: bytes) -> bytes | None:
    for line in request.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.lower() == name.lower():
            return value.strip()
    return None


def respond(raw: bytes) -> Callable[[socket.socket, Server], None]:
    """Read the request, send `raw`, close."""

    def handler(conn: socket.socket, server: Server) -> None:
        read_request(conn, server)
        conn.sendall(raw)

    return handler


def ok(body: bytes = BODY, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), extra, body)


def hang(conn: socket.socket, server: Server) -> None:
    read_request(conn, server)
    server.stop.wait(5)


def reset_after(raw: bytes) -> Callable[[socket.socket, Server], None]:
    """Send part of a response, then close with SO_LINGER 0: a RST."""

    def handler(conn: socket.socket, server: Server) -> None:
        read_request(conn, server)
        conn.sendall(raw)
        time.sleep(0.05)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    return handler


def endless(head: bytes, chunked: bool = False) -> Callable[[socket.socket, Server], None]:
    """Stream a body of up to 1 GiB after `head`, counting what got out before the client left."""

    def handler(conn: socket.socket, server: Server) -> None:
        read_request(conn, server)
        block = b"x" * 65536
        if chunked:
            block = b"%x\r\n%s\r\n" % (len(block), block)
        sent = 0
        try:
            conn.sendall(head)
            while sent < 1 << 30 and not server.stop.is_set():
                conn.sendall(block)
                sent += len(block)
        except OSError:
            pass
        server.sent.append(sent)

    return handler


# a check that judges the body, so reads it: how a broken body fails
READS_BODY = HttpCheck(body_sha256=BODY_SHA)


def wait_for(cond: Callable[[], object], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# --- plain http ---------------------------------------------------------------------------------


def test_up_with_status_regex_and_digest(lab: Lab, serve: Callable[..., Server]) -> None:
    srv = serve(respond(ok()))
    target = Target(SERVER4, srv.port)
    for http in (
        HttpCheck(),
        HttpCheck(body_regex=r"ready=\d"),
        HttpCheck(body_sha256=BODY_SHA.upper()),
        HttpCheck(body_md5=hashlib.md5(BODY).hexdigest()),  # keepalived's HTTP_GET digest
        HttpCheck(expect_status=[200]),
    ):
        result, took = check(lab, http, target)
        assert result.ok, (http, result)
        assert took < 0.5
    request = srv.requests[0]
    assert request.startswith(b"GET / HTTP/1.1\r\n")
    assert header(request, b"host") == f"{SERVER4}:{srv.port}".encode()
    assert header(request, b"connection") == b"close"
    assert srv.peers[0] == CLIENT4


def test_request_line_and_host_header(lab: Lab, serve: Callable[..., Server]) -> None:
    srv = serve(respond(ok()))
    http = HttpCheck(method="HEAD", path="/health?full=1", host="www.example.test")
    result, _ = check(lab, http, Target(SERVER4, srv.port))
    assert result.ok, result
    assert srv.requests[0].startswith(b"HEAD /health?full=1 HTTP/1.1\r\n")
    assert header(srv.requests[0], b"host") == b"www.example.test"


def test_default_port_is_left_out_of_the_host_header(lab: Lab, serve: Callable[..., Server]) -> None:
    srv = serve(respond(ok()), port=80)
    for target in (Target(SERVER4, 80), Target(SERVER4)):  # port 0: the scheme's default
        result, _ = check(lab, HttpCheck(), target)
        assert result.ok, result
    assert [header(r, b"host") for r in srv.requests] == [SERVER4.encode()] * 2


def test_connect_refused(lab: Lab) -> None:
    result, took = check(lab, HttpCheck(), Target(SERVER4, 9))
    assert (result.ok, result.reason) == (False, "connect refused")
    assert took < 0.5


def test_accept_and_hang_is_a_timeout(lab: Lab, serve: Callable[..., Server]) -> None:
    srv = serve(hang)
    result, took = check(lab, HttpCheck(), Target(SERVER4, srv.port), timeout=1.0)
    assert (result.ok, result.reason) == (False, "timeout after 1s")
    assert 0.95 < took < 1.5
    assert len(srv.requests) == 1  # the request was sent; no answer came


def test_headers_without_end_are_a_timeout(lab: Lab, serve: Callable[..., Server]) -> None:
    def slow(conn: socket.socket, server: Server) -> None:
        read_request(conn, server)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Le")
        server.stop.wait(5)

    srv = serve(slow)
    result, _ = check(lab, HttpCheck(), Target(SERVER4, srv.port), timeout=0.3)
    assert result.reason == "timeout after 0.3s"


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nthe first few bytes",
        b"HTTP/1.1 200 OK\r\nContent-Ty",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nabc",
    ],
    ids=["in-body", "in-headers", "in-chunk"],
)
def test_reset_mid_response(lab: Lab, serve: Callable[..., Server], partial: bytes) -> None:
    srv = serve(reset_after(partial))
    result, took = check(lab, READS_BODY, Target(SERVER4, srv.port))
    assert (result.ok, result.reason) == (False, "connection reset")
    assert took < 0.5


def test_closed_before_or_during_a_response(lab: Lab, serve: Callable[..., Server]) -> None:
    cases = {
        b"": "connection closed before a response",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nshort": "connection closed mid-response",
        b"HTTP/1.1 200 OK\r\nServer: x\r\n": "connection closed mid-response",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n": (
            "connection closed mid-response"
        ),
    }
    for raw, reason in cases.items():
        srv = serve(respond(raw))
        result, took = check(lab, READS_BODY, Target(SERVER4, srv.port))
        assert (result.ok, result.reason) == (False, reason), raw
        assert took < 0.5


def test_garbage_response(lab: Lab, serve: Callable[..., Server]) -> None:
    def ssh_banner_then_hang(conn: socket.socket, server: Server) -> None:
        read_request(conn, server)
        conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3 more text here\r\n")
        server.stop.wait(5)

    srv = serve(ssh_banner_then_hang)
    result, took = check(lab, HttpCheck(), Target(SERVER4, srv.port))
    banner = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3 m"  # its first 40 bytes
    assert (result.ok, result.reason) == (False, f"garbage response: b'{banner}'")
    assert took < 0.5  # known garbage as soon as it arrives, not at the timeout

    for raw, reason in [
        (b"\x15\x03\x01\x00\x02\x02\x50", "garbage response: b'\\x15\\x03\\x01\\x00\\x02\\x02P'"),
        (b"HTTP/1.1 OK\r\n\r\n", "garbage response: b'HTTP/1.1 OK\\r\\n\\r\\n'"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "garbage response: b'HTTP/1.1 2000 OK\\r\\n\\r\\n'"),
    ]:
        srv = serve(respond(raw))
        result, _ = check(lab, HttpCheck(), Target(SERVER4, srv.port))
        assert (result.ok, result.reason) == (False, reason)


def test_wrong_status(lab: Lab, serve: Callable[..., Server]) -> None:
    srv = serve(respond(ok(b"busy\n", b"503 Service Unavailable")))
    target = Target(SERVER4, srv.port)
    result, _ = check(lab, HttpCheck(), target)
    assert (result.ok, result.reason) == (False, "status 503")
    result, _ = check(lab, HttpCheck(expect_status=[200, "300-399"]), target)
    assert result.reason == "status 503"
    expects: list[list[int | str]] = [[503], ["500-599"], [200, "503"]]
    for expect in expects:
        result, _ = check(lab, HttpCheck(expect_status=expect), target)
        assert result.ok, (expect, result)


def test_redirect_is_not_followed(lab: Lab, serve: Callable[..., Server]) -> None:
    srv = serve(respond(ok(b"", b"301 Moved Permanently", b"Location: /elsewhere\r\n")))
    result, _ = check(lab, HttpCheck(), Target(SERVER4, srv.port))
    assert result.reason == "status 301"


def test_wrong_body(lab: Lab, serve: Callable[..., Server]) -> None:
    srv = serve(respond(ok()))
    target = Target(SERVER4, srv.port)
    result, _ = check(lab, HttpCheck(body_regex=r"ready=0"), target)
    assert (result.ok, result.reason) == (False, "body does not match /ready=0/")
    result, _ = check(lab, HttpCheck(body_sha256=hashlib.sha256(b"other").hexdigest()), target)
    assert (result.ok, result.reason) == (False, "body digest mismatch")
    result, _ = check(lab, HttpCheck(body_md5=hashlib.md5(b"other").hexdigest()), target)
    assert (result.ok, result.reason) == (False, "body MD5 mismatch")


def test_body_is_decoded_with_the_response_charset(lab: Lab, serve: Callable[..., Server]) -> None:
    body = "état: prêt".encode("latin-1")
    srv = serve(respond(ok(body, extra=b"Content-Type: text/plain; charset=ISO-8859-1\r\n")))
    result, _ = check(lab, HttpCheck(body_regex="état: prêt"), Target(SERVER4, srv.port))
    assert result.ok, result


def test_chunked_response(lab: Lab, serve: Callable[..., Server]) -> None:
    def chunked(conn: socket.socket, server: Server) -> None:
        read_request(conn, server)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"5;name=value\r\nhello\r\n", b"1", b"0\r\n world, and ", b"more\r\n", b"0\r\n"):
            conn.sendall(piece)
            time.sleep(0.01)
        conn.sendall(b"X-Trailer: 1\r\n\r\n")
        server.stop.wait(5)  # framing, not the close, ends the body

    srv = serve(chunked)
    target = Target(SERVER4, srv.port)
    body = b"hello world, and more"
    result, took = check(lab, HttpCheck(body_sha256=hashlib.sha256(body).hexdigest()), target)
    assert result.ok, result
    assert took < 0.5
    result, _ = check(lab, HttpCheck(body_regex="^hello world, and more$"), target)
    assert result.ok, result


def test_bad_chunked_encoding(lab: Lab, serve: Callable[..., Server]) -> None:
    srv = serve(respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"))
    result, _ = check(lab, READS_BODY, Target(SERVER4, srv.port))
    assert result.reason == "bad chunked encoding"


def test_body_until_close(lab: Lab, serve: Callable[..., Server]) -> None:
    srv = serve(respond(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n" + BODY))
    result, _ = check(lab, HttpCheck(body_sha256=BODY_SHA), Target(SERVER4, srv.port))
    assert result.ok, result


def test_content_length_frames_the_body(lab: Lab, serve: Callable[..., Server]) -> None:
    def keep_open(conn: socket.socket, server: Server) -> None:
        respond(ok(extra=b"Connection: keep-alive\r\n"))(conn, server)
        server.stop.wait(5)

    srv = serve(keep_open)
    result, took = check(lab, HttpCheck(body_sha256=BODY_SHA), Target(SERVER4, srv.port))
    assert result.ok, result
    assert took < 0.5


def test_bad_content_length(lab: Lab, serve: Callable[..., Server]) -> None:
    for value in (b"12, 13", b"-1", b"lots"):
        srv = serve(respond(b"HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\nhello" % value))
        result, _ = check(lab, READS_BODY, Target(SERVER4, srv.port))
        assert result.reason == "bad content-length", value


def test_interim_responses_are_skipped(lab: Lab, serve: Callable[..., Server]) -> None:
    srv = serve(respond(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n" + ok()))
    result, _ = check(lab, HttpCheck(body_sha256=BODY_SHA), Target(SERVER4, srv.port))
    assert result.ok, result


def test_head_reads_no_body(lab: Lab, serve: Callable[..., Server]) -> None:
    def head_then_hang(conn: socket.socket, server: Server) -> None:
        read_request(conn, server)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        server.stop.wait(5)

    srv = serve(head_then_hang)
    result, took = check(lab, HttpCheck(method="HEAD"), Target(SERVER4, srv.port))
    assert result.ok, result
    assert took < 0.5


@pytest.mark.parametrize(
    "head, chunked",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\n\r\n", False),  # until the close
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", True),
    ],
    ids=["content-length", "until-close", "chunked"],
)
def test_oversized_body(lab: Lab, serve: Callable[..., Server], head: bytes, chunked: bool) -> None:
    srv = serve(endless(head, chunked))
    target = Target(SERVER4, srv.port)
    # a status-only check does not read the body at all; a regex searches its first bytes
    for http in (HttpCheck(), HttpCheck(max_body_bytes=1000, body_regex="^x+$")):
        result, took = check(lab, http, target)
        assert result.ok, (http, result)
        assert took < 0.5
    result, _ = check(lab, HttpCheck(max_body_bytes=1000, body_regex="y"), target)
    assert result.reason == "body does not match /y/ in its first 1000 bytes"
    # a digest needs the whole body, which does not fit
    result, took = check(lab, HttpCheck(max_body_bytes=1000, body_sha256="0" * 64), target)
    assert (result.ok, result.reason) == (False, "body larger than 1000 bytes")
    assert took < 0.5
    # the check's RST stopped the server long before 1 GiB: what got out is what the socket
    # buffers held (about 1 MiB here), the rest was never sent, let alone read
    wait_for(lambda: len(srv.sent) == 4)
    assert max(srv.sent) < 16 << 20, srv.sent


def test_a_normal_page_larger_than_the_limit_passes(lab: Lab, serve: Callable[..., Server]) -> None:
    page = b"<html>" + b"x" * 100_000 + b"</html>"  # 100 KB, over the 64 KiB default
    srv = serve(respond(ok(page)))
    target = Target(SERVER4, srv.port)
    for http in (HttpCheck(), HttpCheck(body_regex="^<html>"), HttpCheck(expect_status=[200])):
        result, _ = check(lab, http, target)
        assert result.ok, (http, result)


def test_an_encoded_body_is_named_in_the_reason(lab: Lab, serve: Callable[..., Server]) -> None:
    import gzip

    srv = serve(respond(ok(gzip.compress(b"ready=1"), extra=b"Content-Encoding: gzip\r\n")))
    result, _ = check(lab, HttpCheck(body_regex="ready=1"), Target(SERVER4, srv.port))
    assert result.reason == "body does not match /ready=1/ (the body is gzip-encoded)"


def test_body_of_exactly_the_limit_passes(lab: Lab, serve: Callable[..., Server]) -> None:
    body = b"y" * 1000
    digest = hashlib.sha256(body).hexdigest()
    for raw in (ok(body), b"HTTP/1.1 200 OK\r\n\r\n" + body):
        srv = serve(respond(raw))
        result, _ = check(lab, HttpCheck(max_body_bytes=1000, body_sha256=digest), Target(SERVER4, srv.port))
        assert result.ok, result
        result, _ = check(lab, HttpCheck(max_body_bytes=999, body_sha256=digest), Target(SERVER4, srv.port))
        assert result.reason == "body larger than 999 bytes"


def test_ipv6(lab: Lab, serve: Callable[..., Server]) -> None:
    srv = serve(respond(ok()), addr=SERVER6)
    result, _ = check(lab, HttpCheck(body_sha256=BODY_SHA), Target(SERVER6, srv.port))
    assert result.ok, result
    assert header(srv.requests[0], b"host") == f"[{SERVER6}]:{srv.port}".encode()
    assert srv.peers == ["2001:db8:200::1"]


def test_binds_to_the_source_address(lab: Lab, serve: Callable[..., Server]) -> None:
    sh("ip", "-n", lab.client, "addr", "add", f"{EXTRA_CLIENT4}/24", "dev", "veth0")
    srv = serve(respond(ok()))
    for source in (CLIENT4, EXTRA_CLIENT4):
        result, _ = check(lab, HttpCheck(), Target(SERVER4, srv.port, source=source))
        assert result.ok, result
    assert srv.peers == [CLIENT4, EXTRA_CLIENT4]
    result, _ = check(lab, HttpCheck(), Target(SERVER4, srv.port, source="198.18.200.99"))
    assert result.reason == "source address not available"


def test_bad_options_are_configuration_errors() -> None:
    bad: list[dict[str, Any]] = [
        {"method": "GE T"},
        {"path": "no-slash"},
        {"path": "/a b"},
        {"host": "a\r\nX-Injected: 1"},
        {"host": ""},
        {"path": "/é"},
        {"expect_status": ["2xx"]},
        {"expect_status": ["299-200"]},
        {"expect_status": []},
        {"expect_status": "200"},
        {"body_regex": "a", "body_sha256": BODY_SHA},
        {"body_sha256": "abc"},
        {"body_regex": "("},
        {"max_body_bytes": -1},
        {"sni": "x"},
    ]
    for kw in bad:
        with pytest.raises(ValueError):
            HttpCheck(**kw)


# --- https --------------------------------------------------------------------------------------


def test_https_verified_with_the_test_ca(lab: Lab, serve: Callable[..., Server], ca: CA) -> None:
    cert = ca.issue(ips=(SERVER4,))
    srv = serve(respond(ok()), tls=cert.server_context())
    http = HttpCheck(tls=True, ca_file=ca.ca_file, body_sha256=BODY_SHA)
    result, _ = check(lab, http, Target(SERVER4, srv.port))
    assert result.ok, result
    assert srv.sni in ([], [None])  # no SNI for an IP address
    assert header(srv.requests[0], b"host") == f"{SERVER4}:{srv.port}".encode()


def test_https_sni_from_the_host_header(lab: Lab, serve: Callable[..., Server], ca: CA) -> None:
    srv = serve(respond(ok()), tls=ca.issue(dns=("www.example.test",)).server_context())
    target = Target(SERVER4, srv.port)
    result, _ = check(lab, HttpCheck(tls=True, ca_file=ca.ca_file, host="www.example.test:8443"), target)
    assert result.ok, result
    result, _ = check(lab, HttpCheck(tls=True, ca_file=ca.ca_file, sni="www.example.test"), target)
    assert result.ok, result
    assert srv.sni == ["www.example.test", "www.example.test"]
    assert header(srv.requests[0], b"host") == b"www.example.test:8443"
    assert header(srv.requests[1], b"host") == f"{SERVER4}:{srv.port}".encode()


def test_https_expired_certificate(lab: Lab, serve: Callable[..., Server], ca: CA) -> None:
    expired = ca.issue(ips=(SERVER4,), not_after=time_from_now(days=-1))
    srv = serve(respond(ok()), tls=expired.server_context())
    target = Target(SERVER4, srv.port)
    result, took = check(lab, HttpCheck(tls=True, ca_file=ca.ca_file), target)
    assert (result.ok, result.reason) == (False, "certificate verify failed: certificate has expired")
    assert took < 0.5
    result, _ = check(lab, HttpCheck(tls=True, verify=False, body_sha256=BODY_SHA), target)
    assert result.ok, result


def test_https_wrong_name(lab: Lab, serve: Callable[..., Server], ca: CA) -> None:
    srv = serve(respond(ok()), tls=ca.issue(dns=("other.example.test",)).server_context())
    target = Target(SERVER4, srv.port)
    result, _ = check(lab, HttpCheck(tls=True, ca_file=ca.ca_file, host="www.example.test"), target)
    assert result.reason == (
        "certificate verify failed: Hostname mismatch, certificate is not valid for 'www.example.test'"
    )
    result, _ = check(lab, HttpCheck(tls=True, ca_file=ca.ca_file), target)
    assert result.reason == (
        f"certificate verify failed: IP address mismatch, certificate is not valid for '{SERVER4}'"
    )
    result, _ = check(lab, HttpCheck(tls=True, verify=False, host="www.example.test"), target)
    assert result.ok, result


def test_https_unknown_ca(lab: Lab, serve: Callable[..., Server], ca: CA) -> None:
    srv = serve(respond(ok()), tls=ca.issue(ips=(SERVER4,)).server_context())
    result, _ = check(lab, HttpCheck(tls=True), Target(SERVER4, srv.port))  # the system store
    assert result.reason == "certificate verify failed: unable to get local issuer certificate"


def test_https_client_certificate(lab: Lab, serve: Callable[..., Server], ca: CA) -> None:
    server_ctx = ca.issue(ips=(SERVER4,)).server_context(client_ca=ca.ca_file)
    srv = serve(respond(ok()), tls=server_ctx)
    target = Target(SERVER4, srv.port)
    client = ca.issue(client=True)
    with_cert = HttpCheck(tls=True, ca_file=ca.ca_file, cert_file=client.cert_file, key_file=client.key_file)
    result, _ = check(lab, with_cert, target)
    assert result.ok, result
    result, took = check(lab, HttpCheck(tls=True, ca_file=ca.ca_file), target)
    assert (result.ok, result.reason) == (False, "tls error: tlsv13 alert certificate required")
    assert took < 0.5


def test_https_handshake_failures(lab: Lab, serve: Callable[..., Server], ca: CA) -> None:
    def plain_http(conn: socket.socket, server: Server) -> None:  # plain http on the https port
        conn.recv(4096)  # the ClientHello
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    srv = serve(plain_http)
    result, _ = check(lab, HttpCheck(tls=True, verify=False), Target(SERVER4, srv.port))
    assert result.reason == "handshake failed: wrong version number"
    srv = serve(hang)  # accepts, reads the ClientHello, says nothing
    result, _ = check(lab, HttpCheck(tls=True, verify=False), Target(SERVER4, srv.port), timeout=0.3)
    assert result.reason == "timeout after 0.3s"

    def close_at_once(conn: socket.socket, server: Server) -> None:
        conn.recv(10)

    srv = serve(close_at_once)
    result, _ = check(lab, HttpCheck(tls=True, verify=False), Target(SERVER4, srv.port))
    assert result.reason in ("handshake failed: connection closed", "handshake failed: connection reset")


def test_https_ipv6(lab: Lab, serve: Callable[..., Server], ca: CA) -> None:
    srv = serve(respond(ok()), addr=SERVER6, tls=ca.issue(ips=(SERVER6,)).server_context())
    result, _ = check(lab, HttpCheck(tls=True, ca_file=ca.ca_file), Target(SERVER6, srv.port))
    assert result.ok, result


def test_https_bad_files(lab: Lab, tmp_path: Path) -> None:
    result, _ = check(lab, HttpCheck(tls=True, ca_file=str(tmp_path / "missing.pem")), Target(SERVER4, 9))
    assert result.reason.startswith("tls setup failed: No such file or directory")


def time_from_now(days: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)
