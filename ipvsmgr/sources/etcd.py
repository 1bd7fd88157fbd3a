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
import ipaddress
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ipvsmgr.etcdclient import Client, Compacted, EtcdError
from ipvsmgr.sources.gate import Endpoint

log = logging.getLogger("ipvsmgr.discovery")
RETRY_MIN, RETRY_MAX = 0.5, 10.0


@dataclass(frozen=True, slots=True)
class EtcdSpec:
    endpoints: tuple[tuple[str, int], ...]  # (host, port) of the members, tried in turn
    prefix: str
    timeout: float = 2.0  # to connect, and for a range


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
        self.client = Client(spec.endpoints, spec.timeout)
        self.revision = 0  # the last revision seen: a watch goes on from the next
        self.kvs: dict[str, Endpoint] = {}
        self.bad: set[str] = set()  # keys said to be bad (once each)
        self.bad_count = 0
        self.ranges = 0  # reads of the whole prefix: once, and again only after a compaction

    def describe(self) -> str:
        return f"etcd {self.spec.prefix}"

    def found(self) -> list[Endpoint]:
        return sorted(set(self.kvs.values()))

    def _put(self, key: str, value: bytes | None) -> None:
        if value is None:  # a delete (a lease ran out, or the key was removed)
            self.kvs.pop(key, None)
            self.bad.discard(key)
            return
        try:
            self.kvs[key] = endpoint(key, value)
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
                    kvs, self.revision = await self.client.range(self.spec.prefix, prefix=True)
                    self.ranges += 1
                    self.kvs.clear()
                    for kv in kvs:
                        self._put(kv.key, kv.value)
                    answer(self.found())
                async for events, rev in self.client.watch(self.spec.prefix, self.revision + 1, prefix=True):
                    delay = RETRY_MIN
                    for ev in events:
                        self._put(ev.kv.key, None if ev.deleted else ev.kv.value)
                    self.revision = max(self.revision, rev)
                    if events:
                        answer(self.found())
            except Compacted:
                log.info("etcd %s: revision %d was compacted: reading the prefix again", self.spec.prefix,
                         self.revision + 1)  # fmt: skip
                self.revision = 0
            except (OSError, EtcdError, TimeoutError, ValueError, KeyError) as e:
                fail(
                    str(e)
                    if isinstance(e, EtcdError)
                    else f"etcd {self.client.member}: {e or type(e).__name__}"
                )
                self.client.rotate()
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
