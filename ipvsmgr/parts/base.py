"""The interface every daemon part has, and the few things parts share.

A part owns one kind of kernel object, child process or listener. The
supervisor (runtime.Daemon) calls start once with the first configuration,
reload with every accepted new one (and the one it replaces), stop once, in
an order of its own; status() is the part's section of `ipvsmgr status`,
metrics() fills its section of one scrape's snapshot.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

from ipvsmgr.events import EventBus
from ipvsmgr.reconcile.overrides import Overrides
from ipvsmgr.sdnotify import Notifier

if TYPE_CHECKING:
    from ipvsmgr.config import Config
    from ipvsmgr.metrics import Snapshot


class StartupError(Exception):
    """The daemon cannot start as configured (the message says why); nothing of it is left running."""


class Part(Protocol):
    name: str

    async def start(self, config: Config) -> None: ...

    async def reload(self, new: Config, old: Config) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> Any: ...

    def metrics(self, snap: Snapshot) -> None: ...


class Hub:
    """What the supervisor shares with its parts: the operator overrides in force,
    the event bus, the counters every part adds to, systemd's notifier, and the
    wake-up for the reconcile loop (a part whose state feeds IPVS calls changed())."""

    def __init__(self, config_path: str, state_dir: str, overrides: Overrides, notifier: Notifier) -> None:
        self.config_path = config_path
        self.state_dir = state_dir
        self.overrides = overrides
        self.notifier = notifier
        self.events = EventBus()
        self.counters: Counter[str] = Counter()
        self.wake = asyncio.Event()
        self.dirty = True  # something changed since the last reconcile (else its operations are drift)

    def changed(self) -> None:
        self.dirty = True
        self.wake.set()
