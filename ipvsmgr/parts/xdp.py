"""The XDP part: the guard (xdpshield.py) attached, its maps following the
configuration and the run-time lists.

Owns the XDP program, its attachments and its pinned maps. It starts right
after the IPVS part (which only opens its socket and reads the kernel), so
the VIPs are guarded before anything announces them, and on stop it only
lets go: the program stays attached with its maps, and the next start
adopts it. With `xdp.protect` and no virtual servers it is all the daemon
runs (a guard-only node), and needs no IPVS.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ipvsmgr.parts.base import Hub
from ipvsmgr.xdpshield import XdpShield, tables_for

if TYPE_CHECKING:
    from bpf_offload.tables import Tables
    from ipvsmgr.config import Config
    from ipvsmgr.metrics import Snapshot

log = logging.getLogger("ipvsmgr")


class XdpPart:
    name = "xdp"

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.shield = XdpShield()
        self.config: Config | None = None

    @property
    def configured(self) -> bool:
        return self.config is not None and self.config.xdp is not None

    @property
    def state(self) -> str:
        return self.shield.state

    def _tables(self, config: Config) -> Tables:
        o = self.hub.overrides
        return tables_for(config, o.xdp_allow, dict(o.xdp_block))

    async def start(self, config: Config) -> None:
        self.config = config
        if config.xdp is not None:
            self.shield.start(config, self._tables(config))

    async def reload(self, new: Config, old: Config) -> None:
        self.config = new
        if new.xdp is None:
            if old.xdp is not None:
                log.info("xdp: section removed: detaching the guard")
                self.shield.remove()
            return
        if old.xdp is None:
            self.shield.start(new, self._tables(new))
        else:
            self.shield.reload(new, self._tables(new))

    def sync(self) -> None:
        """The maps follow the configuration and the run-time lists (after an override changed)."""
        if self.config is not None and self.config.xdp is not None:
            try:
                self.shield.sync(self._tables(self.config))
            except OSError as e:
                self.hub.counters["xdp_sync_errors"] += 1
                log.error("xdp: updating the guard's maps failed: %s", e)

    async def stop(self) -> None:
        self.shield.close()  # stays attached with its maps: a restart adopts it

    def status(self, detail: bool = False) -> dict[str, Any] | None:
        return self.shield.status(detail=detail) if self.configured else None

    def metrics(self, snap: Snapshot) -> None:
        snap.xdp = self.status()
