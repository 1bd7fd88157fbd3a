"""What stands between a discovery source and a service's reals: pure, fed the time.

A source answers with lists of endpoints, or fails. The gate decides what
the service runs:

- **Last good list.** A failure (a timeout, NXDOMAIN, an empty answer, an
  unreachable etcd) changes nothing; the gate is *stale* from then until the
  next good answer, and says why.
- **Debounce.** A new list is taken once the source has said nothing new for
  `debounce` seconds, so a burst of changes (a rolling deploy registering
  one real after another) is applied once.
- **Churn limit.** At most `max_removed` of the service's reals (a fraction,
  at least one) leave per minute. A source that suddenly answers with a
  fraction of the list cannot empty a service: the rest leave over the next
  minutes, as long as the source keeps saying so.

Additions are never held back by the churn limit: more capacity is safe.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

WINDOW = 60.0  # seconds over which the churn limit counts removals


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    address: str  # canonical text
    port: int | None  # None: the service's
    weight: int | None = None  # None: the service's


@dataclass(slots=True)
class Gate:
    debounce: float = 1.0
    max_removed: float = 0.5  # of the reals, per minute
    current: tuple[Endpoint, ...] | None = None  # what the service runs; None: no good answer yet
    pending: tuple[Endpoint, ...] | None = None  # the newest answer, not yet taken
    pending_since: float = 0.0
    error: str = ""  # the last failure, while stale
    error_since: float | None = None
    answered: float | None = None  # time of the last good answer
    removed: deque[float] = field(default_factory=deque)  # when each removal within WINDOW happened
    held: int = 0  # removals the churn limit is holding back now
    counts: dict[str, int] = field(default_factory=dict)  # answers, failures, changes, held

    @property
    def stale(self) -> bool:
        return self.error_since is not None

    def _count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def answer(self, endpoints: list[Endpoint], now: float) -> None:
        """A good answer (a non-empty list: an empty one is a failure, see `fail`)."""
        self._count("answers")
        self.answered = now
        self.error, self.error_since = "", None
        new = tuple(sorted(set(endpoints)))
        if new == self.pending:
            return
        if new == self.current:
            self.pending = None
            return
        self.pending, self.pending_since = new, now

    def fail(self, why: str, now: float) -> None:
        self._count("failures")
        if self.error_since is None:
            self.error_since = now
        self.error = why

    def next_due(self) -> float | None:
        """When `step` may change something, if it may."""
        if self.pending is None:
            return None
        due = self.pending_since + self.debounce
        if self.held and self.removed:
            due = max(due, self.removed[0] + WINDOW)
        return due

    def step(self, now: float) -> tuple[Endpoint, ...] | None:
        """The list the service takes now, when it changes; else None."""
        if self.pending is None or now < self.pending_since + self.debounce:
            return None
        want = self.pending
        if self.current is None:  # the first answer: nothing to remove yet
            self.current, self.pending = want, None
            self._count("changes")
            return self.current
        while self.removed and self.removed[0] <= now - WINDOW:
            self.removed.popleft()
        keep_keys = {(e.address, e.port) for e in want}
        leaving = [e for e in self.current if (e.address, e.port) not in keep_keys]
        budget = max(1, math.floor(self.max_removed * len(self.current))) - len(self.removed)
        allowed = leaving[: max(0, budget)]
        self.held = len(leaving) - len(allowed)
        if self.held:
            self._count("held", self.held)
        gone = {(e.address, e.port) for e in allowed}
        staying = [
            e
            for e in self.current
            if (e.address, e.port) not in keep_keys and (e.address, e.port) not in gone
        ]
        new = tuple(sorted({*want, *staying}))
        self.removed.extend([now] * len(allowed))
        if not self.held:
            self.pending = None
        if new == self.current:
            return None
        self.current = new
        self._count("changes")
        return new
