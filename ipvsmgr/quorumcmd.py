"""Commands run as things change: keepalived's quorum_up / quorum_down / omega for a virtual
server, and notify_up / notify_down for a real. One at a time per virtual server or real in
the order of the changes, at most a few transitions queued (a flapping real or quorum cannot
pile processes up)."""

from __future__ import annotations

import asyncio
import collections
import logging

from ipvsmgr.config.model import Config, RealServer, VirtualServer
from vrrp.service import NOTIFY_QUEUE, NOTIFY_TIMEOUT, run_command

log = logging.getLogger("ipvsmgr.commands")
Argv = tuple[str, ...]


class Commands:
    def __init__(self) -> None:
        self._queues: dict[str, collections.deque[tuple[Argv, ...]]] = {}  # one entry per change
        self._workers: dict[str, asyncio.Task[None]] = {}
        self.skipped = 0

    def enqueue(self, key: str, *argvs: Argv) -> None:
        """Run one change's commands, in order, after those already queued for key (`virtual
        server web`). A full queue drops whole changes, the oldest first, never half of one."""
        queue = self._queues.setdefault(key, collections.deque())
        queue.append(argvs)
        while len(queue) > NOTIFY_QUEUE:
            queue.popleft()
            self.skipped += 1
        if key not in self._workers:
            self._workers[key] = asyncio.get_running_loop().create_task(self._work(key, queue))

    async def _work(self, key: str, queue: collections.deque[tuple[Argv, ...]]) -> None:
        try:
            while queue:
                for argv in queue.popleft():
                    log.info("%s: running %s", key, argv[0])
                    await run_command(list(argv))
        finally:
            self._workers.pop(key, None)

    def changed(self, vs: VirtualServer, up: bool) -> None:
        """vs gained (up) or lost its quorum."""
        q = vs.quorum
        argv = (q.up_command if up else q.down_command) if q is not None else ()
        if argv:
            self.enqueue(f"virtual server {vs.name}", argv)

    def real_changed(self, vs: VirtualServer, real: RealServer, up: bool) -> None:
        """A check brought real up or took it down."""
        argv = real.notify_up if up else real.notify_down
        if argv:
            port = f":{real.port}" if real.port else ""
            where = f"[{real.address}]{port}" if ":" in real.address and port else real.address + port
            self.enqueue(f"virtual server {vs.name} real {where}", argv)

    async def drain(self) -> None:
        """Let the queued commands finish (each is killed at NOTIFY_TIMEOUT)."""
        if self._workers:
            await asyncio.wait(list(self._workers.values()), timeout=NOTIFY_TIMEOUT)

    async def stop(self, config: Config | None, quorum_up: dict[str, bool]) -> None:
        """Let queued commands finish; then omega: down_command for each virtual server that
        asks for it and still has its quorum."""
        if config is not None:
            for vs in config.virtual_servers:
                q = vs.quorum
                if q is not None and q.down_on_stop and q.down_command and quorum_up.get(vs.name, False):
                    self.changed(vs, False)
        await self.drain()
