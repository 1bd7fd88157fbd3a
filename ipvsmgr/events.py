"""Health and VRRP events that other parts subscribe to (VRRP tracking, BGP, metrics)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ipvsmgr.ipvs.model import DestKey, ServiceKey

log = logging.getLogger("ipvsmgr")


@dataclass(frozen=True, slots=True)
class RealChanged:
    """A real server went up or down; `reason` says why (`connect refused`, `passed 2 checks`)."""

    service: ServiceKey
    real: DestKey
    up: bool
    reason: str
    weight: int | None = None  # a dynamic weight reported with an up
    flipped: bool = False  # a check changed it (not a reload or a dynamic weight): notify_up/down run


@dataclass(frozen=True, slots=True)
class QuorumChanged:
    """A virtual server gained or lost its quorum."""

    service: ServiceKey
    name: str
    up: bool
    reals_up: int
    reason: str


@dataclass(frozen=True, slots=True)
class VrrpChanged:
    """A VRRP instance changed state (init, backup, master, fault)."""

    instance: str
    old: str
    new: str
    reason: str


Event = RealChanged | QuorumChanged | VrrpChanged
Listener = Callable[[Event], object]


class EventBus:
    """Synchronous fan-out; a listener that raises is logged, never fatal."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, fn: Listener) -> Callable[[], None]:
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn)

    def emit(self, event: Event) -> None:
        for fn in list(self._listeners):
            try:
                fn(event)
            except Exception:
                log.exception("event listener %r failed on %r", fn, event)


def describe(event: Event) -> str:
    if isinstance(event, RealChanged):
        state = "UP" if event.up else "DOWN"
        return f"real {event.real} of {event.service} {state}: {event.reason}"
    if isinstance(event, VrrpChanged):
        return f"VRRP instance {event.instance} {event.old.upper()} -> {event.new.upper()}: {event.reason}"
    state = "UP" if event.up else "LOST"
    return f"virtual server {event.name} ({event.service}) quorum {state}: {event.reason}"
