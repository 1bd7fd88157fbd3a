"""The fleet part: follow the configuration key in etcd, apply each new revision that passes the
checks, and report under a lease what this node runs (ipvsmgr/fleet.py has the keys).

The revision applied is kept in fleet.json in the state directory: a restart
does not apply an older revision again, and goes on from the newest.
etcd going away changes nothing here: the node runs on what it runs and
reports again once etcd is back (a new lease, the same report).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ipvsmgr import statefile
from ipvsmgr.config import Config
from ipvsmgr.etcdclient import Client, Compacted, EtcdError, KeyValue
from ipvsmgr.fleet import FleetSpec, report

if TYPE_CHECKING:
    from ipvsmgr.metrics import Snapshot
    from ipvsmgr.parts.base import Hub

log = logging.getLogger("ipvsmgr.fleet")
STATE_FILE = "fleet.json"
RETRY_MIN, RETRY_MAX = 0.5, 10.0

# (text, revision) -> (applied, problems): the daemon validates and reloads
Apply = Callable[[str, int], Awaitable[tuple[bool, list[str]]]]


class FleetPart:
    name = "fleet"

    def __init__(self, hub: Hub, spec: FleetSpec, apply: Apply, status_line: Callable[[], str]) -> None:
        self.hub = hub
        self.spec = spec
        self.apply = apply
        self.status_line = status_line
        self.client = Client(spec.endpoints)
        self.path = str(Path(hub.state_dir) / STATE_FILE)
        self.applied = self._load()
        self.refused = 0
        self.problems: list[str] = []
        self.connected = False
        self.error = ""
        self.changed = asyncio.Event()  # the report to write changed
        self._tasks: list[asyncio.Task[None]] = []

    def _load(self) -> int:
        try:
            raw = statefile.read_json(self.path)
        except statefile.StateFileError as e:
            log.warning("ignoring %s: %s", self.path, e)
            return 0
        value = raw.get("applied", 0) if isinstance(raw, dict) else 0
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    def _save(self) -> None:
        try:
            os.makedirs(self.hub.state_dir, mode=0o750, exist_ok=True)
            statefile.write_json(self.path, {"version": 1, "applied": self.applied})
        except OSError as e:
            log.error("cannot write %s: %s", self.path, e)

    async def start(self, config: Config) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow(), name="fleet follow"),
                       loop.create_task(self._report(), name="fleet report")]  # fmt: skip

    async def reload(self, new: Config, old: Config) -> None:
        self.changed.set()  # the status line in the report

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def take(self, kv: KeyValue) -> None:
        """A revision of the configuration key: applied when newer and valid, else refused."""
        rev = kv.mod_revision
        if rev <= max(self.applied, self.refused):
            return
        try:
            text = kv.value.decode("utf-8")
        except UnicodeDecodeError:
            ok, problems = False, [f"{self.spec.label(rev)}:1:1: the configuration is not UTF-8"]
        else:
            try:
                ok, problems = await self.apply(text, rev)
            except Exception:  # a bug must not end the following of the key
                log.exception("fleet: applying revision %d failed", rev)
                ok, problems = False, [f"{self.spec.label(rev)}:1:1: internal error (in the node's log)"]
        if ok:
            self.applied, self.refused, self.problems = rev, 0, []
            self._save()
            log.info("fleet: revision %d of %s applied", rev, self.spec.config_key)
        else:
            self.refused, self.problems = rev, problems
            log.error("fleet: revision %d of %s refused (%d problem%s); still running revision %s",
                      rev, self.spec.config_key, len(problems), "" if len(problems) == 1 else "s",
                      self.applied or "from the local file")  # fmt: skip
        self.changed.set()

    async def _follow(self) -> None:
        delay = RETRY_MIN
        revision = 0
        while True:
            try:
                if not revision:
                    kvs, revision = await self.client.range(self.spec.config_key)
                    self._up()
                    if kvs:
                        await self.take(kvs[0])
                async for events, rev in self.client.watch(self.spec.config_key, revision + 1):
                    delay = RETRY_MIN
                    self._up()
                    for ev in events:
                        if not ev.deleted:
                            await self.take(ev.kv)
                    revision = max(revision, rev)
            except Compacted:
                revision = 0
            except (OSError, EtcdError, TimeoutError, ValueError, KeyError) as e:
                self._down(str(e))
                self.client.rotate()
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)

    async def _report(self) -> None:
        """This node's report under a lease: written when it changes, the lease renewed meanwhile."""
        lease, delay = 0, RETRY_MIN
        every = max(1.0, self.spec.lease_ttl / 3)
        while True:
            try:
                if not lease:
                    lease = await self.client.grant(self.spec.lease_ttl)
                    self.changed.set()
                if self.changed.is_set():
                    self.changed.clear()
                    value = report(self.spec, self.applied, self.refused, self.problems, self.status_line())
                    await self.client.put(self.spec.node_key, value, lease)
                elif not await self.client.keepalive(lease):
                    lease = 0  # it ran out while etcd was away: a new one, and the report again
                    continue
                delay = RETRY_MIN
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), every)
            except (OSError, EtcdError, TimeoutError, ValueError, KeyError) as e:
                self._down(str(e))
                lease = 0
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)

    def _up(self) -> None:
        if not self.connected and self.error:
            log.info("fleet: etcd %s answers again", self.client.member)
        self.connected, self.error = True, ""

    def _down(self, why: str) -> None:
        if self.connected or not self.error:
            log.warning("fleet: %s; running on revision %s", why, self.applied or "from the local file")
        self.connected, self.error = False, why

    def status(self) -> dict[str, Any]:
        return {"key": self.spec.config_key, "node": self.spec.node, "applied": self.applied,
                "refused": self.refused or None, "problems": self.problems, "connected": self.connected,
                "error": self.error}  # fmt: skip

    def metrics(self, snap: Snapshot) -> None:
        snap.fleet = self.status()
