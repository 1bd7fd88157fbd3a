"""Real-time scheduling for the VRRP process (keepalived's vrrp_rt_priority).

A process of its own keeps adverts off the daemon's loop, but not off its
CPUs: on a loaded two-core machine (10,000 health checks, a reload worker, a
reconcile) a SCHED_OTHER process waits its turn and measured advert gaps
reached 2-3 intervals at 100 ms. SCHED_RR runs it ahead of all of that.

A runaway real-time process would starve the machine, so RLIMIT_RTTIME
bounds how long it may run without sleeping (BUDGET): past it the kernel
sends SIGXCPU, and the handler (a plain signal handler: it runs between
bytecodes even if the loop never yields) puts every thread back to
SCHED_OTHER; the ticker promotes them again after COOLDOWN. The hard limit
(SIGKILL) is a backstop the daemon's restart covers. Forked children (notify
scripts) start as SCHED_OTHER (SCHED_RESET_ON_FORK); threads made after a
promotion do too, so `promote()` is called again once they exist.

Without CAP_SYS_NICE (or under systemd's RestrictRealtime=yes) the process
runs as SCHED_OTHER and says so once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import time
from types import FrameType

log = logging.getLogger("ipvsmgr.vrrp")
BUDGET = 0.2  # seconds of CPU without a blocking call before SIGXCPU (RLIMIT_RTTIME soft limit)
BACKSTOP = 2.0  # seconds more before the kernel's SIGKILL (hard limit)
COOLDOWN = 5.0  # seconds as SCHED_OTHER after the budget ran out


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


class Realtime:
    """The VRRP process's scheduling: SCHED_RR at `priority` (1-99), or normal (0)."""

    def __init__(self) -> None:
        self.priority = 0
        self.active = False  # every thread SCHED_RR right now
        self.demotions = 0  # times the budget ran out
        self.error = ""  # why real-time scheduling is not in use, when asked for
        self._demoted_at: float | None = None
        self._handler_installed = False

    def set(self, priority: int) -> None:
        """Ask for `priority` (0: normal scheduling); applied at once."""
        if priority == self.priority and (self.active or not priority):
            return
        self.priority = priority
        self._demoted_at = None
        if priority:
            self._limit()
            self.promote()
        else:
            self._policy(os.SCHED_OTHER, 0)
            self.active = False
            self.error = ""

    def promote(self) -> None:
        """Every thread of this process to SCHED_RR (again: after a demotion, or a new thread)."""
        if not self.priority or self._demoted_at is not None:
            return
        try:
            self._policy(os.SCHED_RR | os.SCHED_RESET_ON_FORK, self.priority)
        except OSError as e:
            self.active = False
            if not self.error:
                log.warning(
                    "VRRP: cannot use real-time scheduling (%s): adverts may be late on a busy machine "
                    "(needs CAP_SYS_NICE, and RestrictRealtime=no under systemd)",
                    os.strerror(e.errno or 0) if e.errno else e,
                )
            self.error = os.strerror(e.errno) if e.errno else str(e)
            return
        if not self.active:
            log.info("VRRP: real-time scheduling, SCHED_RR priority %d", self.priority)
        self.active, self.error = True, ""

    def tick(self, now: float | None = None) -> None:
        """Called about once a second: promote again once the cooldown is over."""
        if self._demoted_at is None:
            return
        now = time.monotonic() if now is None else now
        if now - self._demoted_at >= COOLDOWN:
            self._demoted_at = None
            self.promote()

    def demote(self) -> None:
        """The budget ran out (SIGXCPU): every thread back to SCHED_OTHER for COOLDOWN."""
        self.demotions += 1
        self._demoted_at = time.monotonic()
        with contextlib.suppress(OSError):
            self._policy(os.SCHED_OTHER, 0)
        self.active = False
        log.warning(
            "VRRP: ran %gs without sleeping; normal scheduling for %gs (%d time%s)",
            BUDGET, COOLDOWN, self.demotions, "" if self.demotions == 1 else "s",
        )  # fmt: skip

    def status(self) -> dict[str, object]:
        return {
            "policy": "rr" if self.active else "other",
            "priority": self.priority if self.active else 0,
            "wanted": self.priority,
            "demotions": self.demotions,
            "error": self.error,
        }

    def _limit(self) -> None:
        if not self._handler_installed:
            signal.signal(signal.SIGXCPU, self._on_sigxcpu)
            self._handler_installed = True
        soft = int(BUDGET * 1e6)
        try:
            resource.setrlimit(resource.RLIMIT_RTTIME, (soft, soft + int(BACKSTOP * 1e6)))
        except (OSError, ValueError) as e:  # a lower hard limit set by someone else: keep theirs
            log.debug("VRRP: RLIMIT_RTTIME not set: %s", e)

    def _on_sigxcpu(self, signum: int, frame: FrameType | None) -> None:
        if self.active:
            self.demote()

    @staticmethod
    def _policy(policy: int, priority: int) -> None:
        for tid in _threads():
            try:
                os.sched_setscheduler(tid, policy, os.sched_param(priority))
            except ProcessLookupError:  # the thread has gone
                continue
