"""gRPC check: the standard grpc.health.v1.Health/Check.

Up when the server answers SERVING for `service` ("" asks about the server
as a whole). Plain text, or TLS with an optional CA file and name to verify.

The only runtime dependency is the `grpc` module (Debian: python3-grpcio),
imported on first use: the HealthCheckRequest and HealthCheckResponse
messages are encoded and decoded here by hand, so neither protobuf nor
grpc_health (grpcio-health-checking) is needed.

Source address: gRPC has no channel option to bind a client socket (C-core
only has `grpc.socket_mutator`, a C pointer Python cannot pass). When
`target.source` is set, the check connects the TCP socket itself (bound to
the source, on the calling thread) and hands gRPC a one-shot relay to it
over a private Unix socket; TLS still runs end to end, verifying the
server's name as on a direct channel. Without a source, gRPC connects
directly, from threads of its own: in a process whose threads sit in
different network namespaces, only the relay path is sure to connect from
the calling thread's namespace (the daemon's threads share one).

A Check answered with gRPC status NOT_FOUND (what Health/Check returns for
a service it does not know) is reported like the SERVICE_UNKNOWN status.

Channels are kept, one per real and option set on each event loop (at most
_MAX_CHANNELS, the least recently used closed first): a new channel costs a
TCP and HTTP/2 (and TLS) handshake and about 1.6 ms of CPU, a call on a
kept one a fraction of that. A kept channel that loses its server
reconnects by itself, within _RECONNECT_MAX_MS once the server is back; a
check in between fails with the connection's error. Source-bound checks
(the relay above) use a channel of their own each time.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import os
import re
import shutil
import socket
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from healthchecks.checkers import MissingPackage
from healthchecks.result import Result, Target, describe_os_error, os_error_result

METHOD = "/grpc.health.v1.Health/Check"
STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
SERVING = 1
MISSING = "the grpc health check needs grpcio (Debian package python3-grpcio)"
DETAILS_MAX = 120
_MAX_RESPONSE = 4096  # bytes: a HealthCheckResponse is 2
_GRACE = 0.5  # seconds past the deadline before the check gives up on gRPC itself
_RELAY_CHUNK = 65536
_MAX_CHANNELS = 4096
_RECONNECT_MAX_MS = 1000
# (event loop, channel target, tls, ca_file, server_name) -> channel, least recently used first
_CHANNELS: OrderedDict[tuple[Any, ...], Any] = OrderedDict()


class GrpcMissing(MissingPackage):
    """The grpc module is not installed."""


def load_grpc() -> Any:
    """The grpc module (with grpc.aio), or GrpcMissing naming the Debian package."""
    try:
        grpc = importlib.import_module("grpc")
        importlib.import_module("grpc.aio")
    except ImportError as e:
        raise GrpcMissing(MISSING) from e
    return grpc


def encode_request(service: str) -> bytes:
    """HealthCheckRequest{service}: field 1, wire type 2 (tag 0x0a), varint length, UTF-8."""
    if not service:
        return b""  # proto3 leaves a default-valued field out
    data = service.encode("utf-8")
    return b"\x0a" + _varint(len(data)) + data


def decode_response(data: bytes) -> int:
    """HealthCheckResponse.status (field 1, varint); ValueError if `data` is not one.

    Unknown fields are skipped as protobuf does; a missing status is 0 (UNKNOWN);
    the last status field wins."""
    status = 0
    pos = 0
    while pos < len(data):
        tag, pos = _read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _read_varint(data, pos)
            if number == 1:
                status = value
            continue
        if number == 1:
            raise ValueError(f"status with wire type {wire}")
        if wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            pos += length
        else:  # 3, 4: groups (not in proto3), 6, 7: invalid
            raise ValueError(f"wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
    return status


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value >> 64:
                raise ValueError("varint over 64 bits")
            return value, pos
    raise ValueError("varint over 10 bytes")


@dataclass(frozen=True, slots=True)
class GrpcCheck:
    service: str = ""  # "" asks about the whole server
    tls: bool = False
    ca_file: str | None = None  # PEM roots for TLS; None: the system's (gRPC's bundled) roots
    server_name: str | None = None  # TLS: the name to verify and send as SNI; None: the address

    async def check(self, target: Target, timeout: float) -> Result:
        start = time.monotonic()
        try:
            # gRPC enforces the deadline; this is the net under it.
            async with asyncio.timeout(timeout + _GRACE):
                result = await self._check(target, timeout, start + timeout)
        except TimeoutError:
            result = Result.down(f"timeout after {timeout:g}s")
        except OSError as e:
            result = os_error_result(e)
        return Result(result.ok, result.reason, result.weight, time.monotonic() - start, result.ran)

    async def _check(self, target: Target, timeout: float, deadline: float) -> Result:
        try:
            grpc = load_grpc()
        except GrpcMissing as e:
            return Result.down(str(e))
        credentials = None
        if self.tls:
            roots = None
            if self.ca_file is not None:
                try:
                    with open(self.ca_file, "rb") as f:
                        roots = f.read()
                except OSError as e:
                    return Result.down(f"cannot read ca_file {self.ca_file}: {describe_os_error(e)}")
            credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        host = _host(target.address)
        authority = f"{host}:{target.port}"
        options: list[tuple[str, Any]] = [
            ("grpc.enable_http_proxy", 0),  # never through $http_proxy / $grpc_proxy
            ("grpc.enable_retries", 0),
            ("grpc.use_local_subchannel_pool", 1),  # a connection of this check's own
            ("grpc.max_receive_message_length", _MAX_RESPONSE),
            ("grpc.primary_user_agent", "ipvsmgr-healthcheck"),
            ("grpc.default_authority", authority),
        ]
        if self.tls:
            options.append(("grpc.ssl_target_name_override", self.server_name or target.address))
        options += [
            # a kept channel whose server comes back is usable again within a second
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", _RECONNECT_MAX_MS),
        ]
        relay: _Relay | None = None
        try:
            if target.source:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    relay = await _Relay.open(target)
                channel = _new_channel(grpc, f"unix:{relay.path}", credentials, options)
            else:
                channel_target = f"ipv6:{authority}" if ":" in host else f"ipv4:{authority}"
                key = (asyncio.get_running_loop(), channel_target, self.tls, self.ca_file, self.server_name)
                channel = _kept_channel(key, lambda: _new_channel(grpc, channel_target, credentials, options))
            call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
            try:
                left = max(0.001, deadline - time.monotonic())
                data = await call(encode_request(self.service), timeout=left)
            except grpc.aio.AioRpcError as e:
                return _rpc_error(e.code(), e.details(), timeout)
            finally:
                if relay is not None:
                    await channel.close()
        finally:
            if relay is not None:
                await relay.close()
        if not isinstance(data, bytes):
            return Result.down("garbage response")
        try:
            status = decode_response(data)
        except ValueError:
            return Result.down("garbage response")
        if status == SERVING:
            return Result.up()
        return Result.down(f"status {STATUS_NAMES.get(status, status)}")


def _new_channel(grpc: Any, target: str, credentials: Any, options: list[tuple[str, Any]]) -> Any:
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)


def _kept_channel(key: tuple[Any, ...], make: Any) -> Any:
    """The channel kept for `key`, made on first use; the least recently used
    one beyond _MAX_CHANNELS is closed."""
    channel = _CHANNELS.get(key)
    if channel is not None:
        _CHANNELS.move_to_end(key)
        return channel
    channel = _CHANNELS[key] = make()
    while len(_CHANNELS) > _MAX_CHANNELS:
        (loop, *_), old = _CHANNELS.popitem(last=False)
        if not loop.is_closed():
            loop.create_task(old.close())
    return channel


def _rpc_error(code: Any, details: str | None, timeout: float) -> Result:
    name = getattr(code, "name", str(code))
    if name == "DEADLINE_EXCEEDED":
        return Result.down(f"timeout after {timeout:g}s")
    if name == "NOT_FOUND":
        # Health/Check's answer for a service it does not know (SERVICE_UNKNOWN is Watch's).
        return Result.down("status SERVICE_UNKNOWN")
    text = " ".join((details or "").split())
    if name == "UNAVAILABLE" and text in ("", "OK"):
        # what gRPC core says when the peer answered but not in HTTP/2 (an HTTP/1 server)
        return Result.down("grpc UNAVAILABLE: no gRPC answer (the server does not speak HTTP/2?)")
    # "failed to connect to all addresses; last error: UNKNOWN: ipv4:192.0.2.1:50051: Failed
    # to connect to remote host: ...": the last error is the news, without the address.
    m = _LAST_ERROR.search(text)
    if m:
        text = m.group(1)
    return Result.down(f"grpc {name}: {text[:DETAILS_MAX]}" if text else f"grpc {name}")


_LAST_ERROR = re.compile(r"last error: (?:[A-Z_]+: )?(?:(?:ipv4|ipv6|unix):\S+?: )?(.+)$")


def _host(address: str) -> str:
    """The address as it goes in an authority: IPv6 in brackets."""
    return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address


class _Relay:
    """One TCP connection, made here from `target.source`, offered to gRPC as a
    Unix socket in a private directory; the first connection gets it, later
    ones are refused."""

    def __init__(self, sock: socket.socket, directory: str) -> None:
        self._sock: socket.socket | None = sock
        self._dir = directory
        self.path = os.path.join(directory, "relay")
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(cls, target: Target) -> _Relay:
        assert target.source is not None
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ipaddress.ip_address(target.address).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.bind((target.source, 0))
            await loop.sock_connect(sock, (target.address, target.port))
            directory = tempfile.mkdtemp(prefix="ipvsmgr-grpc-")  # mode 0700
        except BaseException:
            sock.close()
            raise
        relay = cls(sock, directory)
        try:
            relay._server = await asyncio.start_unix_server(relay._accept, relay.path)
        except BaseException:
            await relay.close()
            raise
        return relay

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            tcp_reader, tcp_writer = await asyncio.open_connection(sock=sock)
            try:
                await asyncio.gather(_pump(reader, tcp_writer), _pump(tcp_reader, writer))
            finally:
                tcp_writer.close()
        except OSError:
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        shutil.rmtree(self._dir, ignore_errors=True)


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(_RELAY_CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except OSError:
        dst.close()
