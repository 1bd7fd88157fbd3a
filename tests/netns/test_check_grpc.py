"""gRPC checker against real gRPC servers in the server namespace.

The servers (grpcio + the grpc_health servicer, and a raw handler that
answers with hand-picked bytes) run in one process started with lab.spawn.

The checks run in a short-lived Python process started inside the client
namespace (nsenter), not in a lab.run thread: gRPC core does its I/O on
threads of its own, created on first use and kept for the life of the
process, and a thread's network namespace is whichever one the thread that
created it was in; so only a process that is wholly inside the client
namespace is certain to connect from there (and never from the root one).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from healthchecks.checkers.grpc import STATUS_NAMES, decode_response, encode_request
from tests.netns.lab import SERVER4, SERVER6, Lab, sh

ROOT = Path(__file__).resolve().parents[2]
HEALTH, RAW, TLS, HTTP1 = 50051, 50052, 50053, 50054
EXTRA_CLIENT4 = "198.18.200.3"

SERVER = r"""
import sys, time, urllib.parse
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

ready, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]

def health_servicer():
    h = health.HealthServicer()
    h.set("", health_pb2.HealthCheckResponse.SERVING)
    h.set("up", health_pb2.HealthCheckResponse.SERVING)
    h.set("down", health_pb2.HealthCheckResponse.NOT_SERVING)
    return h

def raw_check(request, context):
    # request and answer are raw bytes: no (de)serializers on this handler
    service = health_pb2.HealthCheckRequest.FromString(request).service
    peer = urllib.parse.unquote(context.peer()).rsplit(":", 1)[0].split(":", 1)[1].strip("[]")
    if service.startswith("peer="):
        return b"\x08\x01" if peer == service[5:] else b"\x08\x02"
    if service == "slow":
        time.sleep(5)
    return {
        "truncated": b"\x08",
        "wrong-wire-type": b"\x0a\x01\x01",
        "service-unknown": b"\x08\x03",
        "unknown": b"",
        "extra-fields": b"\x12\x03abc\x25\x00\x00\x00\x00\x08\x01",
        "status-7": b"\x08\x07",
        "too-big": b"\x12\x90\x4e" + b"x" * 10000,
    }.get(service, b"\x08\x01")

plain = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
health_pb2_grpc.add_HealthServicer_to_server(health_servicer(), plain)
assert plain.add_insecure_port("[::]:%d" % 50051)
plain.start()

raw = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
raw.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
    "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(raw_check)})])
assert raw.add_insecure_port("[::]:%d" % 50052)
raw.start()

secure = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
health_pb2_grpc.add_HealthServicer_to_server(health_servicer(), secure)
creds = grpc.ssl_server_credentials([(open(key, "rb").read(), open(cert, "rb").read())])
assert secure.add_secure_port("[::]:%d" % 50053, creds)
secure.start()

open(ready, "w").write("ready")
plain.wait_for_termination()
"""

CLIENT = r"""
import asyncio, json, sys
from healthchecks.checkers.grpc import GrpcCheck
from healthchecks.result import Target

def established(port):
    # TCP connections of this namespace to `port`, established (/proc/net/tcp{,6})
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(name).read().splitlines()[1:]:
            fields = line.split()
            if fields[2].endswith(":%04X" % port) and fields[3] == "01":
                n += 1
    return n

async def main():
    out = []
    for case in json.loads(sys.argv[1]):
        r = await GrpcCheck(**case["check"]).check(Target(**case["target"]), case["timeout"])
        out.append({"ok": r.ok, "reason": r.reason, "duration": r.duration,
                    "connections": established(case["target"]["port"])})
    print(json.dumps(out))

asyncio.run(main())
"""


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the server's addresses and real.test."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ipvsmgr test real")])
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName(
        [
            x509.IPAddress(ipaddress.ip_address(SERVER4)),
            x509.IPAddress(ipaddress.ip_address(SERVER6)),
            x509.DNSName("real.test"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
def servers(lab: Lab, tmp_path: Path) -> Path:
    """Start the servers in the server namespace; return the CA file (the server's cert)."""
    cert, key = make_cert(tmp_path)
    script, ready = tmp_path / "server.py", tmp_path / "ready"
    script.write_text(SERVER)
    proc = lab.spawn([sys.executable, str(script), str(ready), str(cert), str(key)])
    deadline = time.monotonic() + 15
    while not ready.exists():
        assert proc.poll() is None, "the gRPC test server exited"
        assert time.monotonic() < deadline, "the gRPC test server did not start"
        time.sleep(0.05)
    return cert


def checks(lab: Lab, *cases: tuple[dict[str, Any], dict[str, Any], float]) -> list[dict[str, Any]]:
    """Run GrpcCheck(**check).check(Target(**target), timeout) for each case in the client namespace."""
    arg = json.dumps([{"check": c, "target": t, "timeout": timeout} for c, t, timeout in cases])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # A proxy in the environment must be ignored (it is not even routable from the lab).
    env.update(http_proxy="http://192.0.2.1:3128", https_proxy="http://192.0.2.1:3128", grpc_proxy="")
    proc = subprocess.run(
        ["nsenter", f"--net=/run/netns/{lab.client}", sys.executable, "-c", CLIENT, arg],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    return results


def v4(port: int, **kw: Any) -> dict[str, Any]:
    return {"address": SERVER4, "port": port, **kw}


def reasons(results: list[dict[str, Any]]) -> list[str]:
    return [r["reason"] if not r["ok"] else "up" for r in results]


def test_serving_not_serving_and_unknown_service(lab: Lab, servers: Path) -> None:
    got = checks(
        lab,
        ({}, v4(HEALTH), 2.0),
        ({"service": "up"}, v4(HEALTH), 2.0),
        ({"service": "down"}, v4(HEALTH), 2.0),
        ({"service": "nope"}, v4(HEALTH), 2.0),
    )
    assert reasons(got) == ["up", "up", "status NOT_SERVING", "status SERVICE_UNKNOWN"]
    assert all(0 < r["duration"] < 2 for r in got)


# A fresh lab's first IPv6 packet can wait a second or two for the link (neighbour
# discovery on a link that has just come up): IPv6 cases get a roomier timeout.
V6_TIMEOUT = 5.0


def test_a_channel_is_kept_per_real(lab: Lab, servers: Path) -> None:
    got = checks(lab, *[({"service": "up"}, v4(HEALTH), 2.0) for _ in range(5)])
    assert reasons(got) == ["up"] * 5
    assert [r["connections"] for r in got] == [1] * 5  # one connection, not one per check


def test_an_http1_server_is_named(lab: Lab, servers: Path) -> None:
    import http.server

    class Quiet(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = lab.in_server(lambda: http.server.HTTPServer((SERVER4, HTTP1), Quiet))
    lab.serve(httpd.serve_forever)
    try:
        (got,) = checks(lab, ({}, v4(HTTP1), 2.0))
    finally:
        httpd.shutdown()
        httpd.server_close()
    print(got)
    assert got["reason"].startswith("grpc UNAVAILABLE: "), got
    assert "http1" in got["reason"] or "HTTP/2" in got["reason"], got


def test_ipv6(lab: Lab, servers: Path) -> None:
    six = {"address": SERVER6, "port": HEALTH}
    got = checks(lab, ({}, six, V6_TIMEOUT), ({"service": "down"}, six, V6_TIMEOUT))
    assert reasons(got) == ["up", "status NOT_SERVING"]


def test_no_server_is_unavailable(lab: Lab, servers: Path) -> None:
    (got,) = checks(lab, ({}, v4(50059), 3.0))
    assert got["reason"].startswith("grpc UNAVAILABLE: "), got
    assert "Connection refused" in got["reason"], got
    assert got["duration"] < 2.0  # refused at once, not at the deadline


def test_no_server_at_all_over_ipv6(lab: Lab) -> None:
    (got,) = checks(lab, ({}, {"address": SERVER6, "port": HEALTH}, V6_TIMEOUT))
    assert got["reason"].startswith("grpc UNAVAILABLE: "), got


def test_hand_decoded_responses(lab: Lab, servers: Path) -> None:
    names = [
        "truncated",
        "wrong-wire-type",
        "service-unknown",
        "unknown",
        "extra-fields",
        "status-7",
        "too-big",
    ]
    got = checks(lab, *[({"service": n}, v4(RAW), 2.0) for n in names])
    assert reasons(got)[:6] == [
        "garbage response",
        "garbage response",
        "status SERVICE_UNKNOWN",
        "status UNKNOWN",
        "up",
        "status 7",
    ]
    assert reasons(got)[6].startswith("grpc RESOURCE_EXHAUSTED"), got[6]


def test_deadline(lab: Lab, servers: Path) -> None:
    (got,) = checks(lab, ({"service": "slow"}, v4(RAW), 0.5))
    assert got["reason"] == "timeout after 0.5s"
    assert 0.4 < got["duration"] < 1.2


def test_tls(lab: Lab, servers: Path) -> None:
    ca = str(servers)
    got = checks(
        lab,
        ({"tls": True, "ca_file": ca}, v4(TLS), 3.0),
        ({"tls": True, "ca_file": ca, "service": "down"}, v4(TLS), 3.0),
        ({"tls": True, "ca_file": ca}, {"address": SERVER6, "port": TLS}, V6_TIMEOUT),
        ({"tls": True, "ca_file": ca, "server_name": "real.test"}, v4(TLS), 3.0),
        ({"tls": True, "ca_file": ca, "server_name": "other.test"}, v4(TLS), 3.0),
        ({"tls": True}, v4(TLS), 3.0),  # not signed by a system root
        ({"tls": True, "ca_file": "/nonexistent/ca.pem"}, v4(TLS), 3.0),
        ({}, v4(TLS), 3.0),  # plain text to a TLS port
    )
    r = reasons(got)
    assert r[:4] == ["up", "status NOT_SERVING", "up", "up"]
    assert r[4] == "grpc UNAVAILABLE: Peer name other.test is not in peer certificate", r[4]
    assert r[5].startswith("grpc UNAVAILABLE: Ssl handshake failed"), r[5]
    assert r[6] == "cannot read ca_file /nonexistent/ca.pem: no such file or directory"
    assert r[7].startswith("grpc UNAVAILABLE"), r[7]


def test_source_address(lab: Lab, servers: Path) -> None:
    sh("ip", "-n", lab.client, "addr", "add", f"{EXTRA_CLIENT4}/24", "dev", "veth0")
    got = checks(
        lab,
        ({"service": f"peer={EXTRA_CLIENT4}"}, v4(RAW, source=EXTRA_CLIENT4), 2.0),
        ({"service": f"peer={EXTRA_CLIENT4}"}, v4(RAW), 2.0),  # the kernel picks .1
        (
            {"service": "peer=2001:db8:200::1"},
            {"address": SERVER6, "port": RAW, "source": "2001:db8:200::1"},
            V6_TIMEOUT,
        ),
        ({}, v4(HEALTH, source=EXTRA_CLIENT4), 2.0),
        ({"service": "down"}, v4(HEALTH, source=EXTRA_CLIENT4), 2.0),
        ({"tls": True, "ca_file": str(servers)}, v4(TLS, source=EXTRA_CLIENT4), 3.0),
        ({}, v4(50059, source=EXTRA_CLIENT4), 2.0),
        ({}, v4(HEALTH, source="198.18.200.99"), 2.0),
    )
    assert reasons(got) == [
        "up",
        "status NOT_SERVING",
        "up",
        "up",
        "status NOT_SERVING",
        "up",
        "connect refused",
        "source address not available",
    ]


def test_request_encoding() -> None:
    assert encode_request("") == b""
    assert encode_request("up") == b"\x0a\x02up"
    long = "s" * 300
    assert encode_request(long) == b"\x0a\xac\x02" + long.encode()
    assert encode_request("é") == b"\x0a\x02\xc3\xa9"


def test_response_decoding() -> None:
    assert [decode_response(b"\x08" + bytes([n])) for n in range(4)] == [0, 1, 2, 3]
    assert decode_response(b"") == 0
    assert decode_response(b"\x08\x01\x08\x02") == 2  # the last one wins
    assert decode_response(b"\x10\x05\x08\x01") == 1  # unknown varint field
    assert decode_response(b"\x19" + b"\0" * 8 + b"\x08\x01") == 1  # fixed64
    for garbage in [b"\x08", b"\x0a\x01\x01", b"\x12\x05ab", b"\x0b", b"\x00\x01", b"\x08" + b"\xff" * 11]:
        with pytest.raises(ValueError):
            decode_response(garbage)
    assert STATUS_NAMES[1] == "SERVING"


def test_missing_grpc_module_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from healthchecks.checkers.grpc import GrpcCheck
    from healthchecks.result import Target

    monkeypatch.setitem(sys.modules, "grpc", None)  # import grpc -> ImportError
    result = asyncio.run(GrpcCheck().check(Target("127.0.0.1", 9), 1.0))  # never sent: loopback anyway
    assert not result.ok
    assert "python3-grpcio" in result.reason
