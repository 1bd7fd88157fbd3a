"""The VRRP part: the VRRP process (vrrp/child.py) and the channel to it.

Owns the VIPs and the VRRP sockets, through that process: nothing on this
loop can delay an advert. The quorum of each virtual server flows to it
(tracking); each state change flows back as a VrrpChanged event. A reload
restarts only the instances whose settings changed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ipvsmgr.events import VrrpChanged
from ipvsmgr.groupnotify import GroupNotifier
from ipvsmgr.parts.base import Hub, StartupError
from ipvsmgr.quorumcmd import Commands

if TYPE_CHECKING:
    from ipvsmgr.config import Config
    from ipvsmgr.metrics import Snapshot
    from vrrp.machine import State
    from vrrp.remote import VrrpProcess

log = logging.getLogger("ipvsmgr")


class VrrpPart:
    name = "vrrp"

    def __init__(self, hub: Hub, log_level: str = "info", log_format: str = "text") -> None:
        self.hub = hub
        self._log = (log_level, log_format)  # the VRRP process logs as the daemon does
        self.process: VrrpProcess | None = None
        self._quorum: dict[str, bool] = {}  # virtual server name -> quorum, as last told
        self.groups = GroupNotifier((), {})  # the sync groups' own commands, run here
        self.commands = Commands()

    @property
    def running(self) -> bool:
        return self.process is not None

    async def start(self, config: Config) -> None:
        if not config.vrrp.instances:
            return
        from vrrp.remote import VrrpProcess  # imported only where VRRP runs

        service = VrrpProcess(
            config.vrrp.instances,
            config.vrrp.sync_groups,
            released=self.hub.overrides.released,
            log_level=self._log[0],
            log_format=self._log[1],
            realtime_priority=config.vrrp.realtime_priority,
        )
        emit = self.hub.events.emit
        service.listeners.append(lambda n, old, new, why: emit(VrrpChanged(n, old.value, new.value, why)))
        self.groups.update(config.vrrp.sync_groups, dict(config.vrrp.group_notify))
        service.listeners.append(
            lambda n, _old, new, _why: self._group_commands(self.groups.changed(n, new.value))
        )
        for name, up in self._quorum.items():  # known before start: an instance starts in the right state
            service.set_virtual_server(name, up)
        try:
            await service.start()
        except OSError as e:
            service.close()
            raise StartupError(f"cannot start VRRP: {e}") from e
        self.process = service
        log.info("VRRP runs in process %s", service.pid)

    async def reload(self, new: Config, old: Config) -> None:
        """Unchanged instances keep their state and VIPs; only the changed ones restart."""
        if new.vrrp == old.vrrp:
            return
        if self.process is None:
            try:
                await self.start(new)
            except StartupError as e:
                log.error("VRRP reload failed: %s", e)
            return
        self.groups.update(new.vrrp.sync_groups, dict(new.vrrp.group_notify))
        try:
            added, removed, restarted = await self.process.update(
                new.vrrp.instances, new.vrrp.sync_groups, new.vrrp.realtime_priority
            )
        except OSError as e:
            log.error("VRRP reload failed: %s", e)
            return
        log.info(
            "VRRP reloaded: added %s, removed %s, restarted %s",
            ", ".join(added) or "none", ", ".join(removed) or "none", ", ".join(restarted) or "none",
        )  # fmt: skip

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()
            self.process.close()
            self.process = None
            self._group_commands(self.groups.stopping())
        await self.commands.drain()

    def _group_commands(self, due: list[tuple[str, list[tuple[str, ...]]]]) -> None:
        for group, commands in due:
            self.commands.enqueue(f"sync group {group}", *commands)

    def set_quorums(self, quorum: dict[str, bool]) -> None:
        """Each virtual server's quorum, for the instances that track one."""
        self._quorum = quorum
        if self.process is not None:
            for name, up in quorum.items():
                self.process.set_virtual_server(name, up)

    def states(self) -> dict[str, str]:
        """Instance name -> its state now (init, backup, master, fault)."""
        return {str(i["name"]): str(i["state"]) for i in self.status()}

    def state(self, name: str) -> str | None:
        return self.states().get(name)

    async def release(self, name: str) -> State:
        if self.process is None:
            raise KeyError(name)
        return await self.process.release(name)

    async def reclaim(self, name: str) -> State:
        if self.process is None:
            raise KeyError(name)
        return await self.process.reclaim(name)

    def process_status(self) -> dict[str, Any] | None:
        p = self.process
        return None if p is None else {"pid": p.pid, "restarts": p.restarts, "scheduling": p.scheduling}

    def status(self) -> list[dict[str, object]]:
        return self.process.status() if self.process is not None else []

    def metrics(self, snap: Snapshot) -> None:
        if self.process is not None:
            snap.vrrp = self.process.status()
            snap.vrrp_drops = dict(self.process.drops)
            snap.vrrp_running = self.process.connected
