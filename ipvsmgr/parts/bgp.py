"""The BGP part: ExaBGP (bgp/speaker.py), the VIPs it announces held on an
interface, and each prefix's decision.

Every prefix is announced or withdrawn as health, quorum, the VRRP role and
`drain-node` decide (bgp/routes.py). Until each checked real had its first
verdict, a prefix waits (a restart must not announce what has no verdict
yet, nor withdraw what is about to come up). Stopping withdraws and keeps
serving for the configured grace before ExaBGP goes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ipvsmgr.ipvs.model import ServiceKey
from ipvsmgr.parts.base import Hub
from ipvsmgr.parts.health import checked_reals
from ipvsmgr.reconcile.desired import service_key
from ipvsmgr.reconcile.health import QuorumState, RealHealth, RealId

if TYPE_CHECKING:
    from ipvsmgr.bgp.routes import Decision
    from ipvsmgr.bgp.speaker import Speaker
    from ipvsmgr.bgp.vips import VipHolder
    from ipvsmgr.config import Config
    from ipvsmgr.metrics import Snapshot

log = logging.getLogger("ipvsmgr")


class BgpPart:
    name = "bgp"

    def __init__(self, hub: Hub, vrrp_states: Callable[[], dict[str, str]]) -> None:
        self.hub = hub
        self._vrrp_states = vrrp_states
        self.config: Config | None = None
        self.speaker: Speaker | None = None
        self.vips: VipHolder | None = None
        self.decisions: dict[str, Decision] = {}
        self._settled = False  # every checked real had its first verdict since start
        self._settle_by = 0.0
        self._health: dict[RealId, RealHealth] = {}
        self._quorums: dict[ServiceKey, QuorumState] = {}

    async def start(self, config: Config) -> None:
        self.config = config
        if config.bgp is None:
            return
        from ipvsmgr.bgp.speaker import Speaker

        longest = max(((s.rise * s.interval + s.timeout) for _, s in checked_reals(config)), default=0.0)
        self._settle_by = time.monotonic() + 2 * longest + 5.0
        self.speaker = Speaker(config.bgp, os.path.join(self.hub.state_dir, "bgp"))
        self._sync_vips()
        self.update()  # the routes are in the FIFO before ExaBGP starts
        self.speaker.start()

    def _sync_vips(self) -> None:
        from ipvsmgr.bgp.vips import VipHolder, host_addresses

        cfg = self.config.bgp if self.config is not None else None
        interface = cfg.vip_interface if cfg is not None else ""
        if self.vips is not None and self.vips.interface != interface:
            self.vips.close()
            self.vips = None
        if not interface or cfg is None:
            return
        try:  # vrrp.netlink.Host: every rtnetlink failure is an OSError
            if self.vips is None:
                self.vips = VipHolder(interface)
            self.vips.sync(host_addresses(cfg))
        except OSError as e:
            log.error("VIPs on %s: %s", interface, e)

    async def reload(self, new: Config, old: Config) -> None:
        self.config = new
        if new.bgp == old.bgp:
            return
        if self.speaker is None:
            await self.start(new)  # a bgp: section added by this reload
            return
        if new.bgp is None:
            log.info("bgp: section removed: withdrawing everything and stopping ExaBGP")
            speaker, self.speaker = self.speaker, None
            speaker.set_routes({})
            asyncio.get_running_loop().create_task(self._retire(speaker))
            return
        self.speaker.update_config(new.bgp)
        self._sync_vips()
        self.update()

    async def _retire(self, speaker: Speaker) -> None:
        """The bgp: section left the configuration: withdraw, serve the grace, stop."""
        await asyncio.sleep(speaker.config.withdraw_grace)
        await speaker.stop()
        if self.vips is not None and (self.config is None or self.config.bgp is None):
            self.vips.close()
            self.vips = None

    def update(
        self,
        health: dict[RealId, RealHealth] | None = None,
        quorums: dict[ServiceKey, QuorumState] | None = None,
    ) -> None:
        """Announce or withdraw each prefix as health, VRRP and drain-node decide now
        (with the health and quorums given, or those of the last call)."""
        if health is not None:
            self._health = health
        if quorums is not None:
            self._quorums = quorums
        if self.speaker is None or self.config is None or self.config.bgp is None:
            return
        from ipvsmgr.bgp.routes import Health, desired

        pending: Counter[ServiceKey] = Counter()
        if not self._settled:
            known = self._health.keys()
            for rid, _spec in checked_reals(self.config):
                if rid not in known:
                    pending[rid[0]] += 1
            # Settled for good once every real had a verdict, or after the longest
            # first verdict could take twice over (a check that never answers).
            if not pending or time.monotonic() > self._settle_by:
                self._settled = True
                pending.clear()
        services: dict[str, Health] = {}
        for vs in self.config.virtual_servers:
            skey = service_key(vs)
            q = self._quorums.get(skey)
            if q is not None:
                up, n = q.reals_up, len(vs.reals)
                services[vs.name] = Health(vs.quorum is not None, q.up, up, pending[skey], n)
        node_drained = self.hub.overrides.node_drained
        wanted, decisions = desired(
            self.config.bgp, services, self._vrrp_states(), node_drained, self.decisions
        )
        for prefix, dec in decisions.items():
            before = self.decisions.get(prefix)
            if before is None or before.announce != dec.announce:
                log.info("BGP %s %s: %s", "announce" if dec.announce else "withdraw", prefix, dec.reason)
        self.decisions = decisions
        self.speaker.set_routes(wanted)

    def announced(self) -> list[str]:
        return sorted(self.speaker.wanted) if self.speaker is not None else []

    async def stop(self) -> None:
        """Withdraw, keep serving for the grace period, then stop ExaBGP."""
        if self.speaker is None:
            return
        speaker, self.speaker = self.speaker, None
        grace = speaker.config.withdraw_grace
        if speaker.announced and grace > 0:
            log.info("withdrawing %d BGP routes; serving on for %g s", len(speaker.announced), grace)
            speaker.set_routes({})
            self.hub.notifier.status(f"stopping: routes withdrawn, serving for {grace:g} s")
            await asyncio.sleep(grace)
        await speaker.stop()
        if self.vips is not None:
            self.vips.close()  # after the grace: flows were served until the routers moved
            self.vips = None

    def status(self) -> dict[str, Any] | None:
        if self.speaker is None:
            return None
        return {
            **self.speaker.status(),
            "node_drained": self.hub.overrides.node_drained,
            "prefixes": {
                p: {"announce": d.announce, "reason": d.reason} for p, d in sorted(self.decisions.items())
            },
        }

    def metrics(self, snap: Snapshot) -> None:
        snap.bgp = self.status()
