"""Rise/fall hysteresis for one real server: sans-IO, fed check results.

A real in state DOWN goes UP after `rise` consecutive successes; a real in
state UP goes DOWN after `fall` consecutive failures. A result that agrees
with the current state resets the count, so a server flapping faster than
rise/fall allow never changes state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from healthchecks.result import Result


@dataclass(frozen=True, slots=True)
class Transition:
    up: bool
    reason: str  # the failure that took it down, or "" / "passed N checks"
    weight: int | None = None  # dynamic weight reported with the last success


@dataclass(slots=True)
class Hysteresis:
    rise: int = 2
    fall: int = 3
    up: bool = False  # a new real starts out of rotation until it passes `rise` checks
    streak: int = 0
    last: Result | None = field(default=None)
    weight: int | None = None  # last dynamic weight seen while up
    # False: the state is an assumption, and the first result replaces it outright (keepalived's
    # tracking scripts start at the rise/fall boundary); rise/fall apply from then on
    decided: bool = True

    def feed(self, result: Result) -> Transition | None:
        """Account one result; return the state change it causes, if any."""
        self.last = result
        if not self.decided:
            self.decided = True
            if result.ok != self.up:
                self.up, self.streak = result.ok, 0
                if not result.ok:
                    return Transition(False, result.reason)
                self.weight = result.weight
                return Transition(True, "passed its first check", result.weight)
        if result.ok == self.up:
            self.streak = 0
            if result.ok and result.weight != self.weight:
                self.weight = result.weight
                return Transition(True, "weight changed", result.weight)
            return None
        self.streak += 1
        if self.streak < (self.rise if result.ok else self.fall):
            return None
        self.up = result.ok
        self.streak = 0
        if result.ok:
            self.weight = result.weight
            checks = "check" if self.rise == 1 else "checks"
            return Transition(True, f"passed {self.rise} {checks}", result.weight)
        return Transition(False, result.reason)
