"""What the control commands (commands.py) may see and do of a running daemon.

A Protocol, so that commands.py depends on this page and not on the Daemon
class (runtime.py imports commands.py to serve them: no import circle).
runtime.Daemon satisfies it; mypy checks that where the daemon hands itself
to commands.run.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

from ipvsmgr.config import Config
from ipvsmgr.fresh import Fresh
from ipvsmgr.ipvs.model import ServiceKey
from ipvsmgr.reconcile.overrides import Overrides

if TYPE_CHECKING:  # only for their types: none is imported at run time here
    from ipvsmgr.parts.bgp import BgpPart
    from ipvsmgr.parts.connsync import SyncPart
    from ipvsmgr.parts.discovery import DiscoveryPart
    from ipvsmgr.parts.fleet import FleetPart
    from ipvsmgr.parts.health import HealthPart
    from ipvsmgr.parts.ipvs import IpvsPart
    from ipvsmgr.parts.listeners import ControlPart, MetricsPart
    from ipvsmgr.parts.vrrp import VrrpPart
    from ipvsmgr.parts.xdp import XdpPart


class Controlled(Protocol):
    config: Config | None
    file_config: Config | None
    config_path: str
    started: float
    quorum: dict[ServiceKey, bool]
    last_reload: dict[str, Any] | None
    status_cache: Fresh[dict[str, Any]]
    ipvs: IpvsPart
    checks: HealthPart
    vrrp: VrrpPart
    bgp: BgpPart
    xdp: XdpPart
    sync: SyncPart
    discovery: DiscoveryPart
    fleet: FleetPart | None
    control: ControlPart | None
    metrics: MetricsPart | None

    @property
    def overrides(self) -> Overrides: ...

    @property
    def counters(self) -> Counter[str]: ...

    def set_overrides(self, new: Overrides) -> None: ...

    async def set_dynamic(self, new: Overrides) -> None: ...

    async def reload(self, force: bool = False) -> dict[str, Any]: ...
