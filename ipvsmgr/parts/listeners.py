"""The control socket and metrics listeners as parts.

Each owns one listening socket. A listener that cannot open its socket at
start stops the start with the reason; a reload leaves both as they are
(their addresses come from the command line, not the file).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ipvsmgr.control import ControlServer, Handler
from ipvsmgr.parts.base import StartupError

if TYPE_CHECKING:
    from ipvsmgr.config import Config
    from ipvsmgr.metrics import MetricsServer, Snapshot

log = logging.getLogger("ipvsmgr")


class ControlPart:
    name = "control"

    def __init__(self, path: str, handler: Handler, group: str | None = None) -> None:
        self.server = ControlServer(path, handler, group)

    async def start(self, config: Config) -> None:
        try:
            await self.server.start()
        except OSError as e:
            raise StartupError(f"cannot open the control socket {self.server.path}: {e}") from e

    async def reload(self, new: Config, old: Config) -> None:
        pass

    async def stop(self) -> None:
        await self.server.close()

    def status(self) -> dict[str, Any]:
        return {"socket": self.server.path, "refused": dict(self.server.refused)}

    def metrics(self, snap: Snapshot) -> None:
        snap.control_requests = dict(self.server.requests)
        snap.control_refused = dict(self.server.refused)


class MetricsPart:
    name = "metrics"

    def __init__(self, server: MetricsServer) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return f"http://{self.server.host}:{self.server.port}/metrics"

    async def start(self, config: Config) -> None:
        try:
            await self.server.start()
        except OSError as e:
            where = f"{self.server.host}:{self.server.port}"
            raise StartupError(f"cannot serve metrics on {where}: {e}") from e
        log.info("metrics on %s", self.url)

    async def reload(self, new: Config, old: Config) -> None:
        pass

    async def stop(self) -> None:
        await self.server.close()

    def status(self) -> dict[str, Any]:
        return {"url": self.url, "scrapes": self.server.scrapes, "refused": dict(self.server.refused)}

    def metrics(self, snap: Snapshot) -> None:
        pass  # the server adds its own refusals to each snapshot it renders
