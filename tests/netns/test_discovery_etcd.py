"""etcd discovery against a real etcd (Debian's etcd-server 3.4 on loopback): the prefix read
then watched, leases that expire, keys that are not reals, etcd killed (the last good list kept,
stale) and started again (the watch goes on from its revision: what changed meanwhile arrives,
no new read), and a compacted revision (read again). Its effect on IPVS is in
tests/kernel/test_discovery.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from ipvsmgr.sources.etcd import EtcdSource, EtcdSpec
from ipvsmgr.sources.gate import Endpoint
from tests.netns.etcdlab import Etcd, available, etcd

pytestmark = pytest.mark.skipif(not available(), reason="etcd is not installed (scripts/setup.sh)")
PREFIX = "/ipvsmgr/reals/web/"


def real(n: int, **kw: Any) -> dict[str, Any]:
    return {"address": f"198.18.1.{n}", "port": 8080, **kw}


class Follow:
    """An EtcdSource watching in the background; what it said, when."""

    def __init__(self, e: Etcd, source: EtcdSource | None = None) -> None:
        host, port = e.endpoint.split(":")
        self.source = source or EtcdSource(EtcdSpec(((host, int(port)),), PREFIX, timeout=1.0))
        self.lists: list[tuple[float, list[str]]] = []
        self.failures: list[str] = []

    def answer(self, found: list[Endpoint]) -> None:
        self.lists.append((time.monotonic(), [e.address for e in found]))

    def fail(self, why: str) -> None:
        self.failures.append(why)

    async def until(self, what: Any, limit: float = 10.0) -> float:
        t = time.monotonic()
        while not what():
            assert time.monotonic() - t < limit, (self.lists[-3:], self.failures[-3:])
            await asyncio.sleep(0.01)
        return time.monotonic() - t

    def last(self) -> list[str]:
        return self.lists[-1][1] if self.lists else []


def test_read_watch_leases_bad_keys_and_a_killed_etcd(tmp_path: Path) -> None:
    with etcd(tmp_path) as e:
        for n in (1, 2, 3):
            e.put(f"{PREFIX}rs{n}", real(n))
        e.put("/ipvsmgr/reals/webby/rs9", real(9))  # another prefix that starts the same: not ours
        f = Follow(e)

        async def scenario() -> dict[str, Any]:
            task = asyncio.get_running_loop().create_task(f.source.watch(f.answer, f.fail))
            await f.until(lambda: f.last() == ["198.18.1.1", "198.18.1.2", "198.18.1.3"])
            t = time.monotonic()
            e.put(f"{PREFIX}rs4", real(4, weight=3))
            await f.until(lambda: "198.18.1.4" in f.last())
            put_to_list = time.monotonic() - t
            assert Endpoint("198.18.1.4", 8080, 3) in f.source.found()
            # not reals: skipped, counted, said once; the others stand
            e.put(f"{PREFIX}junk", "not json")
            e.put(f"{PREFIX}noaddr", {"port": 80})
            e.put(f"{PREFIX}badport", real(7, port=70000))
            await f.until(lambda: f.source.bad_count == 3)
            assert f.last() == ["198.18.1.1", "198.18.1.2", "198.18.1.3", "198.18.1.4"]
            # a real under a lease it does not renew: gone when the lease runs out
            lease = e.lease(2)
            e.put(f"{PREFIX}leased", real(5), lease=lease)
            await f.until(lambda: "198.18.1.5" in f.last())
            t = time.monotonic()
            await f.until(lambda: "198.18.1.5" not in f.last(), 10)
            lease_gone = time.monotonic() - t
            # kill -9: failures, and the source's list stays what it was
            before = f.last()
            e.kill()
            await f.until(lambda: len(f.failures) >= 2, 10)
            assert f.last() == before and f.source.found() == sorted(set(f.source.kvs.values()))
            revision = f.source.revision
            e.start()  # the same data: changes made now arrive through the resumed watch
            e.put(f"{PREFIX}rs6", real(6))
            e.delete(f"{PREFIX}rs1")
            await f.until(lambda: "198.18.1.6" in f.last() and "198.18.1.1" not in f.last(), 20)
            task.cancel()
            return {"put_to_list_s": put_to_list, "lease_gone_after_s": lease_gone, "revision": revision}

        got = asyncio.run(scenario())
        assert got["put_to_list_s"] < 0.5, got
        assert got["lease_gone_after_s"] < 5, got
        assert f.source.ranges == 1, "the watch resumed from its revision, without reading the prefix again"
        assert f.last() == ["198.18.1.2", "198.18.1.3", "198.18.1.4", "198.18.1.6"]
        assert any("etcd 127.0.0.1" in why for why in f.failures), f.failures
        print(got)


def test_a_compacted_revision_is_read_again(tmp_path: Path) -> None:
    with etcd(tmp_path) as e:
        e.put(f"{PREFIX}rs1", real(1))
        e.put(f"{PREFIX}rs1", real(1, weight=2))
        e.put(f"{PREFIX}rs2", real(2))
        e.compact()
        f = Follow(e)
        f.source.revision = 2  # as if it had stopped watching long ago, at a revision now compacted

        async def scenario() -> None:
            task = asyncio.get_running_loop().create_task(f.source.watch(f.answer, f.fail))
            await f.until(lambda: f.source.ranges == 1 and len(f.lists) >= 1)
            task.cancel()

        asyncio.run(scenario())
        assert (
            f.last() == ["198.18.1.1", "198.18.1.2"] and Endpoint("198.18.1.1", 8080, 2) in f.source.found()
        )
