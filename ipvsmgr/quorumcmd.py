"""keepalived's quorum_up / quorum_down / omega: commands run as a virtual server's quorum
changes, one at a time per virtual server in the order of the changes, at most a few
transitions queued (a flapping quorum cannot pile processes up)."""

from __future__ import annotations

import asyncio
import collections
import logging

from ipvsmgr.config.model import Config, VirtualServer
from vrrp.service import NOTIFY_QUEUE, NOTIFY_TIMEOUT, run_command

log = logging.getLogger("ipvsmgr.quorum")


class QuorumCommands:
    def __init__(self) -> None:
        self._queues: dict[str, collections.deque[tuple[str, ...]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self.skipped = 0

    def changed(self, vs: VirtualServer, up: bool) -> None:
        q = vs.quorum
        argv = (q.up_command if up else q.down_command) if q is not None else ()
        if not argv:
            return
        queue = self._queues.setdefault(vs.name, collections.deque())
        queue.append(argv)
        while len(queue) > NOTIFY_QUEUE:
            queue.popleft()
            self.skipped += 1
        if vs.name not in self._workers:
            self._workers[vs.name] = asyncio.get_running_loop().create_task(self._work(vs.name, queue))

    async def _work(self, name: str, queue: collections.deque[tuple[str, ...]]) -> None:
        try:
            while queue:
                argv = queue.popleft()
                log.info("virtual server %s: running %s", name, argv[0])
                await run_command(list(argv))
        finally:
            self._workers.pop(name, None)

    async def stop(self, config: Config | None, quorum_up: dict[str, bool]) -> None:
        """Let queued commands finish; then omega: down_command for each virtual server that
        asks for it and still has its quorum."""
        if config is not None:
            for vs in config.virtual_servers:
                q = vs.quorum
                if q is not None and q.down_on_stop and q.down_command and quorum_up.get(vs.name, False):
                    self.changed(vs, False)
        if self._workers:
            await asyncio.wait(list(self._workers.values()), timeout=NOTIFY_TIMEOUT)
