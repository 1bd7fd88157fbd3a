"""The connection-sync part: the kernel's IPVS sync daemons follow one VRRP instance's role.

Owns the kernel's sync daemons (master on the VRRP master, backup elsewhere,
syncd.py plans the change). Each change of role is applied on the IPVS
part's kernel thread; a role that changes again meanwhile is converged on
before the task ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ipvsmgr import syncd
from ipvsmgr.events import VrrpChanged
from ipvsmgr.parts.base import Hub
from ipvsmgr.parts.ipvs import IpvsPart

if TYPE_CHECKING:
    from ipvsmgr.config import Config
    from ipvsmgr.config.model import ConnectionSync
    from ipvsmgr.metrics import Snapshot

log = logging.getLogger("ipvsmgr")


class SyncPart:
    name = "connection-sync"

    def __init__(self, hub: Hub, ipvs: IpvsPart, vrrp_state: Callable[[str], str | None]) -> None:
        self.hub = hub
        self.ipvs = ipvs
        self._vrrp_state = vrrp_state
        self.config: ConnectionSync | None = None
        self.role: str | None = None  # the role wanted now
        self.daemons: list[str] = []  # as last applied, for status
        self._task: asyncio.Task[None] | None = None
        hub.events.subscribe(self._on_event)

    def _on_event(self, event: object) -> None:
        cfg = self.config
        if isinstance(event, VrrpChanged) and cfg is not None and event.instance == cfg.follow:
            self._want(syncd.role_for(event.new))

    async def start(self, config: Config) -> None:
        self.config = config.connection_sync
        if self.config is not None:
            self._want("backup")  # until the instance it follows says master

    async def reload(self, new: Config, old: Config) -> None:
        if new.connection_sync == old.connection_sync:
            return
        self.config = new.connection_sync
        if self.config is None:
            self._want(None)
            return
        state = self._vrrp_state(self.config.follow)
        self._want(syncd.role_for(state or "backup"))

    def _want(self, role: str | None) -> None:
        self.role = role
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._apply(), name="connection sync")

    async def _apply(self) -> None:
        """Converge the kernel's sync daemons on the role wanted (again, if it changed meanwhile)."""
        while True:
            role, cfg = self.role, self.config
            try:
                done = await self.ipvs.kernel(self._once, role, cfg)
            except OSError as e:
                log.error("connection sync: %s", e)
                return
            if done == (role, cfg) and self.role == role:
                return

    def _once(self, role: str | None, cfg: ConnectionSync | None) -> tuple[str | None, Any]:
        client = self.ipvs.client
        assert client is not None
        requests = syncd.plan(role, client.daemons(), cfg)
        for failure in client.execute(requests):
            log.error("connection sync: kernel refused %s", failure)
        for r in requests:
            log.info("connection sync: %s", r.what)
        self.daemons = [
            f"{'master' if d.state == syncd.ROLES['master'] else 'backup'} on {d.interface} id {d.sync_id}"
            for d in client.daemons()
        ]
        return role, cfg

    async def stop(self) -> None:
        if self._task is None and not self.daemons:
            return
        self.role = None
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self.ipvs.client is not None:
            with contextlib.suppress(OSError):
                await self.ipvs.kernel(self._once, None, None)

    def status(self) -> dict[str, Any] | None:
        if self.config is None:
            return None
        return {"follow": self.config.follow, "role": self.role, "kernel_daemons": self.daemons}

    def metrics(self, snap: Snapshot) -> None:
        pass  # the role is in status; the kernel's daemons in the IPVS dump
