"""A small etcd v3 client over etcd's JSON gateway, on asyncio and the standard library.

What the discovery source (sources/etcd.py) and the fleet (fleet.py) need:
range, put, leases, and a watch that goes on from a revision. Debian's
etcd 3.4 serves the gateway at /v3/; no etcd client package is needed
(PyPI's etcd3 does not import with current protobuf, and python3-etcd3gw
is synchronous). Plain HTTP: run etcd on loopback or a trusted network.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

MAX_LINE = 4 * 1024 * 1024  # one response object (a range of many keys is one)


class EtcdError(Exception):
    """etcd could not be reached, or refused; the message says which member and why."""


class Compacted(Exception):
    """The revision to watch from is gone: read again."""


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def prefix_end(prefix: str) -> str:
    """etcd's range_end for every key starting with prefix: the prefix with its last byte + 1."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b64("\0")
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    lease: int = 0


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        base64.b64decode(raw["key"]).decode(errors="replace"),
        base64.b64decode(raw.get("value", "")),
        int(raw.get("mod_revision", 0) or 0),
        int(raw.get("lease", 0) or 0),
    )


@dataclass(slots=True)
class Event:
    kv: KeyValue
    deleted: bool


class Client:
    def __init__(self, endpoints: tuple[tuple[str, int], ...], timeout: float = 2.0) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self._member = 0

    @property
    def member(self) -> str:
        host, port = self.endpoints[self._member]
        return f"{host}:{port}"

    def rotate(self) -> None:
        """The next member, after this one failed."""
        self._member = (self._member + 1) % len(self.endpoints)

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One request, one answer."""
        async with asyncio.timeout(self.timeout):
            reader, writer = await self._post(path, body)
            try:
                async for raw in _objects(reader):
                    _error(raw, self.member)
                    return raw
            finally:
                writer.close()
        raise EtcdError(f"etcd {self.member}: no answer to {path}")

    async def range(self, key: str, prefix: bool = False) -> tuple[list[KeyValue], int]:
        """The key (or every key under it) and the store's revision."""
        body = {"key": b64(key)}
        if prefix:
            body["range_end"] = prefix_end(key)
        raw = await self.call("/v3/kv/range", body)
        return [_kv(kv) for kv in raw.get("kvs", [])], int(raw["header"]["revision"])

    async def put(self, key: str, value: str, lease: int = 0) -> int:
        body = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        raw = await self.call("/v3/kv/put", body)
        return int(raw["header"]["revision"])

    async def grant(self, ttl: int) -> int:
        raw = await self.call("/v3/lease/grant", {"TTL": str(ttl)})
        return int(raw["ID"])

    async def keepalive(self, lease: int) -> int:
        """The lease's TTL left after renewing it; 0 when it has run out already."""
        raw = await self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(raw.get("result", {}).get("TTL", 0) or 0)

    async def watch(
        self, key: str, start: int, prefix: bool = False
    ) -> AsyncIterator[tuple[list[Event], int]]:
        """Changes from revision `start` on, with the revision each answer brings us to; for ever,
        until the stream breaks (EtcdError, OSError) or the revision was compacted (Compacted)."""
        body: dict[str, Any] = {"key": b64(key), "start_revision": str(start), "progress_notify": True}
        if prefix:
            body["range_end"] = prefix_end(key)
        async with asyncio.timeout(self.timeout):
            reader, writer = await self._post("/v3/watch", {"create_request": body})
        try:
            async for raw in _objects(reader):
                _error(raw, self.member)
                r = raw.get("result", {})
                if r.get("canceled"):
                    if int(r.get("compact_revision", 0) or 0):
                        raise Compacted()
                    raise EtcdError(f"etcd {self.member}: watch canceled: {r.get('cancel_reason', '')}")
                events = [Event(_kv(ev["kv"]), ev.get("type") == "DELETE") for ev in r.get("events", [])]
                rev = int(r.get("header", {}).get("revision", 0) or 0)
                if events:
                    rev = max(rev, max(e.kv.mod_revision for e in events))
                yield events, rev
        finally:
            writer.close()
        raise EtcdError(f"etcd {self.member}: the watch ended")

    async def _post(
        self, path: str, body: dict[str, Any]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = self.endpoints[self._member]
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_LINE)
        except OSError as e:
            raise EtcdError(f"etcd {self.member}: {e.strerror or e}") from None
        data = json.dumps(body).encode()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Connection: close\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        status = await reader.readline()
        if not status.startswith(b"HTTP/1.1 200"):
            writer.close()
            said = status.decode(errors="replace").strip() or "connection closed"
            raise EtcdError(f"etcd {self.member}: {path}: {said}")
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                chunked = True
        if not chunked:  # one object with a Content-Length, then the server closes
            return reader, writer
        return _dechunk(reader), writer


def _dechunk(reader: asyncio.StreamReader) -> asyncio.StreamReader:
    """The body of a chunked response as a stream of its own (fed as the chunks arrive)."""
    out = asyncio.StreamReader(limit=MAX_LINE)

    async def pump() -> None:
        try:
            while True:
                size_line = await reader.readline()
                if not size_line:
                    break
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    break
                if size > MAX_LINE:
                    raise ValueError(f"a chunk of {size} bytes")
                out.feed_data(await reader.readexactly(size))
                await reader.readexactly(2)
        except (OSError, ValueError, asyncio.IncompleteReadError) as e:
            out.set_exception(EtcdError(f"the stream broke: {e}"))
            return
        out.feed_eof()

    task = asyncio.get_running_loop().create_task(pump())
    out._pump = task  # type: ignore[attr-defined]  # kept alive with the stream
    return out


async def _objects(reader: asyncio.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a body, one per line (the gateway ends each with a newline)."""
    while True:
        try:
            line = await reader.readline()
        except ValueError:
            raise EtcdError(f"a response line longer than {MAX_LINE} bytes") from None
        if not line:
            return
        if line.strip():
            try:
                raw = json.loads(line)
            except ValueError:
                raise EtcdError("a response that is not JSON") from None
            if not isinstance(raw, dict):
                raise EtcdError("a response that is not a JSON object")
            yield raw


def _error(raw: dict[str, Any], member: str) -> None:
    if "error" in raw and "result" not in raw and "header" not in raw:
        err = raw["error"]
        said = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        raise EtcdError(f"etcd {member}: {said}")
