"""What the control commands (commands.py) may see and do of a running daemon.

A Protocol, so that commands.py depends on this page and not on the Daemon
class (runtime.py imports commands.py to serve them: no import circle).
runtime.Daemon satisfies it; mypy checks that where the daemon hands itself
to commands.run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ipvsmgr.config import Config
from ipvsmgr.fresh import Fresh
from ipvsmgr.ipvs.client import IPVSClient
from ipvsmgr.ipvs.model import ServiceKey
from ipvsmgr.reconcile.health import RealHealth, RealId
from ipvsmgr.reconcile.overrides import Overrides

if TYPE_CHECKING:  # only for their types: neither is imported at run time here
    from ipvsmgr.control import ControlServer
    from ipvsmgr.metrics import MetricsServer
    from ipvsmgr.xdpshield import XdpShield
    from vrrp.remote import VrrpProcess

T = TypeVar("T")


class Controlled(Protocol):
    config: Config | None
    config_path: str
    started: float
    overrides: Overrides
    vrrp: VrrpProcess | None
    xdp: XdpShield
    metrics: MetricsServer | None
    control: ControlServer | None
    client: IPVSClient | None
    health: dict[RealId, RealHealth]
    quorum: dict[ServiceKey, bool]
    counters: Counter[str]
    last_reload: dict[str, Any] | None
    last_round: dict[str, Any]
    sync_role: str | None
    sync_daemons: list[str]
    status_cache: Fresh[dict[str, Any]]

    def set_overrides(self, new: Overrides) -> None: ...

    def update_bgp(self) -> None: ...

    def bgp_announced(self) -> list[str]: ...

    def bgp_status(self) -> dict[str, Any] | None: ...

    def sync_xdp(self) -> None: ...

    async def kernel(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def reload(self, force: bool = False) -> dict[str, Any]: ...
