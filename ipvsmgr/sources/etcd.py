"""etcd v3 discovery: the keys under a prefix, each a real as JSON, watched from a revision.

    /ipvsmgr/reals/web/rs1 = {"address": "198.18.1.11", "port": 8080, "weight": 2}

A real can register itself under a lease (`etcdctl put --lease`): when it
stops renewing it, etcd deletes the key and the real leaves (through the
gate's churn limit). The source reads the prefix once (a range, at a
revision), then watches from the next revision; when etcd goes away it
fails (the gate keeps the last good list) and, once back, watches on from
the last revision it saw, so nothing in between is missed. A compacted
revision means a new range.

Spoken through etcd's JSON gateway (/v3/kv/range, /v3/watch) with the
standard library: Debian's etcd 3.4 serves it, and no etcd client is needed.
A key that is not a real is skipped, counted and said once.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from ipvsmgr.sources import SourceError
from ipvsmgr.sources.gate import Endpoint

log = logging.getLogger("ipvsmgr.discovery")
MAX_LINE = 4 * 1024 * 1024  # one watch response; a range of many reals is one body
RETRY_MIN, RETRY_MAX = 0.5, 10.0


@dataclass(frozen=True, slots=True)
class EtcdSpec:
    endpoints: tuple[tuple[str, int], ...]  # (host, port) of the members, tried in turn
    prefix: str
    timeout: float = 2.0  # to connect, and for a range


class Compacted(Exception):
    """The revision to watch from is gone: read the prefix again."""


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def prefix_end(prefix: str) -> str:
    """etcd's range_end for every key starting with prefix: the prefix with its last byte + 1."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return "\0"
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


def endpoint(key: str, value: bytes) -> Endpoint:
    """A key's value as a real; ValueError saying why it is not one."""
    try:
        raw = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{key}: not JSON") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("address"), str):
        raise ValueError(f'{key}: expected {{"address": ..., "port": ..., "weight": ...}}')
    try:
        address = str(ipaddress.ip_address(raw["address"]))
    except ValueError:
        raise ValueError(f"{key}: {raw['address']!r} is not an IP address") from None
    port, weight = raw.get("port"), raw.get("weight")
    for name, v, top in (("port", port, 65535), ("weight", weight, 65535)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= top):
            raise ValueError(f"{key}: {name} {v!r} is not 0-{top}")
    return Endpoint(address, port, weight)


class EtcdSource:
    kind = "etcd"

    def __init__(self, spec: EtcdSpec) -> None:
        self.spec = spec
        self.revision = 0  # the last revision seen: a watch goes on from the next
        self.kvs: dict[str, Endpoint] = {}
        self.bad: set[str] = set()  # keys said to be bad (once each)
        self.bad_count = 0
        self.ranges = 0  # reads of the whole prefix: once, and again only after a compaction
        self._member = 0

    def describe(self) -> str:
        return f"etcd {self.spec.prefix}"

    def found(self) -> list[Endpoint]:
        return sorted(set(self.kvs.values()))

    def _put(self, key: str, value_b64: str | None) -> None:
        if value_b64 is None:  # a delete (a lease ran out, or the key was removed)
            self.kvs.pop(key, None)
            self.bad.discard(key)
            return
        try:
            self.kvs[key] = endpoint(key, base64.b64decode(value_b64))
            self.bad.discard(key)
        except ValueError as e:
            self.kvs.pop(key, None)
            self.bad_count += 1
            if key not in self.bad:
                self.bad.add(key)
                log.warning("etcd %s: skipped: %s", self.spec.prefix, e)

    async def watch(self, answer: Callable[[list[Endpoint]], None], fail: Callable[[str], None]) -> None:
        """Read, then follow, the prefix for ever: every change is an answer, every outage a failure."""
        delay = RETRY_MIN
        while True:
            try:
                if not self.revision:
                    await self._range()
                    answer(self.found())
                async for changed in self._watch():
                    delay = RETRY_MIN
                    if changed:
                        answer(self.found())
                raise SourceError("the watch ended")
            except Compacted:
                log.info("etcd %s: revision %d was compacted: reading the prefix again", self.spec.prefix,
                         self.revision + 1)  # fmt: skip
                self.revision = 0
            except (OSError, SourceError, TimeoutError, ValueError) as e:
                host, port = self.spec.endpoints[self._member]
                fail(f"etcd {host}:{port}: {e or type(e).__name__}")
                self._member = (self._member + 1) % len(self.spec.endpoints)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)

    async def _range(self) -> None:
        body = {"key": b64(self.spec.prefix), "range_end": prefix_end(self.spec.prefix)}
        async with asyncio.timeout(self.spec.timeout):
            reader, writer = await self._post("/v3/kv/range", body)
            try:
                raw = await anext(_objects(reader))
            except StopAsyncIteration:
                raise SourceError("no answer to the range") from None
            finally:
                writer.close()
        _error(raw)
        self.ranges += 1
        self.kvs.clear()
        for kv in raw.get("kvs", []):
            self._put(base64.b64decode(kv["key"]).decode(errors="replace"), kv.get("value", ""))
        self.revision = int(raw["header"]["revision"])

    async def _watch(self) -> AsyncIterator[bool]:
        """The watch stream from revision + 1: yields whether each response changed the list."""
        prefix = self.spec.prefix
        start = str(self.revision + 1)
        body = {"create_request": {"key": b64(prefix), "range_end": prefix_end(prefix),
                                   "start_revision": start, "progress_notify": True}}  # fmt: skip
        async with asyncio.timeout(self.spec.timeout):
            reader, writer = await self._post("/v3/watch", body)
        try:
            async for raw in _objects(reader):
                _error(raw)
                r = raw.get("result", {})
                if r.get("canceled"):
                    if int(r.get("compact_revision", 0) or 0):
                        raise Compacted()
                    raise SourceError(f"watch canceled: {r.get('cancel_reason', 'no reason given')}")
                events = r.get("events", [])
                for ev in events:
                    kv = ev["kv"]
                    key = base64.b64decode(kv["key"]).decode(errors="replace")
                    self._put(key, None if ev.get("type") == "DELETE" else kv.get("value", ""))
                rev = int(r.get("header", {}).get("revision", 0) or 0)
                if events:
                    rev = max(rev, max(int(ev["kv"].get("mod_revision", 0) or 0) for ev in events))
                self.revision = max(self.revision, rev)
                yield bool(events)
        finally:
            writer.close()

    async def _post(
        self, path: str, body: dict[str, Any]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = self.spec.endpoints[self._member]
        reader, writer = await asyncio.open_connection(host, port, limit=MAX_LINE)
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
            raise SourceError(f"{path}: {status.decode(errors='replace').strip() or 'connection closed'}")
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                chunked = True
        if not chunked:  # a range's body with a Content-Length: one object, read by _objects
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
            out.set_exception(OSError(f"the stream broke: {e}"))
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
            raise SourceError(f"a response line longer than {MAX_LINE} bytes") from None
        if not line:
            return
        if line.strip():
            raw = json.loads(line)
            if not isinstance(raw, dict):
                raise SourceError("a response that is not a JSON object")
            yield raw


def _error(raw: dict[str, Any]) -> None:
    if "error" in raw and "result" not in raw and "header" not in raw:
        err = raw["error"]
        raise SourceError(err.get("message", str(err)) if isinstance(err, dict) else str(err))
