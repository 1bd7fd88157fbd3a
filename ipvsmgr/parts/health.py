"""The health part: one scheduled check per distinct check, and each real's verdict.

Reals that share a check (the same checker, target and timing: a real in
several virtual servers, as a keepalived virtual_server_group imports) share
one scheduled check and its verdict, as keepalived checks a group's real once.

A verdict change is an event (RealChanged) and wakes the reconcile loop. A
reload keeps the state of every check whose settings did not change. A real
the kernel already served at start (IpvsPart.adopted) starts up instead of
waiting for `rise` passes, so a restart is hitless.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from healthchecks.hysteresis import Transition
from healthchecks.result import Result, Target
from healthchecks.scheduler import RECONFIGURED, CheckState, ScheduledCheck, Scheduler
from ipvsmgr import fdlimit
from ipvsmgr.events import RealChanged
from ipvsmgr.parts.base import Hub
from ipvsmgr.reconcile.desired import destination, service_key
from ipvsmgr.reconcile.health import RealHealth, RealId

if TYPE_CHECKING:
    from ipvsmgr.config import Config
    from ipvsmgr.metrics import Snapshot


FD_SAMPLE = 1.0  # seconds between samples of the open descriptors (their high-water mark)


def checked_reals(config: Config) -> Iterator[tuple[RealId, ScheduledCheck]]:
    for vs in config.virtual_servers:
        skey = service_key(vs)
        for r in vs.reals:
            h = r.health
            if h is None:
                continue
            key = (skey, destination(r).key)
            target = Target(h.address or r.address, h.port or r.port, h.source)
            spec = ScheduledCheck(
                key=key, checker=h.checker, target=target, interval=h.interval, timeout=h.timeout,
                rise=h.rise, fall=h.fall, jitter=h.jitter, retries=h.retries,
                retry_delay=h.retry_delay, initially_up=h.start_up,
            )  # fmt: skip
            yield key, spec


CheckId = tuple[Any, ...]


def check_id(spec: ScheduledCheck) -> CheckId:
    """What makes two reals' checks the same check (repr: checker options need not be hashable)."""
    return (
        type(spec.checker).__name__, repr(spec.checker), spec.target, spec.interval, spec.timeout,
        spec.rise, spec.fall, spec.jitter, spec.retries, spec.retry_delay,
    )  # fmt: skip


def shared_checks(config: Config) -> dict[CheckId, tuple[ScheduledCheck, list[RealId]]]:
    """Each distinct check once, with every real it decides for."""
    out: dict[CheckId, tuple[ScheduledCheck, list[RealId]]] = {}
    for rid, spec in checked_reals(config):
        cid = check_id(spec)
        if cid in out:
            out[cid][1].append(rid)
        else:
            out[cid] = (spec, [rid])
    return out


class HealthPart:
    name = "health"

    def __init__(self, hub: Hub, adopted: Callable[[], set[RealId]]) -> None:
        self.hub = hub
        self._adopted = adopted  # what the kernel served at start (IpvsPart.adopted)
        self.health: dict[RealId, RealHealth] = {}
        self.flips: Counter[RealId] = Counter()  # up <-> down changes per real (the flapping alert's counter)
        self.initially_up: dict[RealId, bool] = {}
        self.members: dict[CheckId, list[RealId]] = {}  # the reals each scheduled check decides for
        self.check_of: dict[RealId, CheckId] = {}
        self.scheduler = Scheduler()
        self.scheduler.subscribe(self._on_transition)
        self.fd_limit: fdlimit.FdLimit | None = None
        self.fds_max = 0  # the most descriptors seen open (sampled every FD_SAMPLE s)
        self._sampler: asyncio.TimerHandle | None = None

    def _on_transition(self, key: object, t: Transition, result: Result) -> None:
        reason = t.reason or result.reason
        now = time.monotonic()
        for rid in self.members.get(cast(CheckId, key), ()):
            before = self.health.get(rid)
            # a slow start runs from coming up, not from a dynamic weight's change while up
            since = (before.since if before is not None and before.up else now) if t.up else None
            was_up = before.up if before is not None else self.initially_up.get(rid, True)
            if before is not None and before.up != t.up:
                self.flips[rid] += 1
            self.health[rid] = RealHealth(t.up, t.weight, reason, since)
            self.hub.events.emit(RealChanged(rid[0], rid[1], t.up, reason, t.weight, was_up != t.up))
        self.hub.changed()

    def _schedule(self, config: Config, kernel_up: set[RealId]) -> None:
        specs = []
        shared = shared_checks(config)
        members: dict[CheckId, list[RealId]] = {}
        for cid, (spec, rids) in shared.items():
            for rid in rids:
                if rid not in self.initially_up:  # decided once per real, so reloads keep the spec equal
                    self.initially_up[rid] = spec.initially_up or rid in kernel_up
            up = any(self.initially_up[rid] for rid in rids)
            specs.append(dataclasses.replace(spec, key=cid, initially_up=up))
            members[cid] = rids
        summary = self.scheduler.update(specs)
        wanted = {rid for rids in members.values() for rid in rids}
        for rid in [r for r in self.check_of if r not in wanted]:
            self.health.pop(rid, None)
            self.initially_up.pop(rid, None)
            self.flips.pop(rid, None)  # reals come and go with discovery: no counter outlives its real
        before = self.check_of
        self.members = members
        self.check_of = {rid: cid for cid, rids in members.items() for rid in rids}
        added = set(summary.added)
        for cid, rids in members.items():
            state = self.scheduler.state(cid)
            for rid in rids:
                old_cid = before.get(rid)
                if old_cid == cid or state is None:
                    continue  # the same check as before: its state goes on
                if old_cid is None and cid in added:  # a new real with a new check
                    if self.initially_up.get(rid):
                        self.health[rid] = RealHealth(True, None, "in the kernel at start")
                    continue
                # its check's settings changed (a new check), or it joined another real's running
                # check: it takes that check's verdict from now on
                why = RECONFIGURED if cid in added else "shares a running check"
                new = RealHealth(state.up, state.weight, "" if state.up else why)
                old = self.health.get(rid)
                self.health[rid] = new
                if old is None or old.up != new.up:
                    self.hub.events.emit(RealChanged(rid[0], rid[1], new.up, why, new.weight))

    def _limit_fds(self, config: Config) -> None:
        checks = [spec for _, spec in checked_reals(config)]
        scripts = sum(1 for spec in checks if type(spec.checker).__name__ == "ScriptCheck")
        self.fd_limit = fdlimit.raise_for(fdlimit.needed(len(checks), scripts))
        self.scheduler.set_budget(self.fd_limit.budget)

    def _sample_fds(self) -> None:
        self.fds_max = max(self.fds_max, fdlimit.open_fds())
        loop = asyncio.get_running_loop()
        self._sampler = loop.call_later(FD_SAMPLE, self._sample_fds)

    async def start(self, config: Config) -> None:
        self._limit_fds(config)
        self._schedule(config, self._adopted())
        self._sample_fds()

    async def reload(self, new: Config, old: Config) -> None:
        self._limit_fds(new)
        self._schedule(new, set())

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        await self.scheduler.close()

    def checks(self) -> int:
        return len(self.scheduler.keys())

    def state(self, rid: RealId) -> CheckState | None:
        cid = self.check_of.get(rid)
        return None if cid is None else self.scheduler.state(cid)

    def status(self) -> dict[str, Any]:
        down = sum(1 for h in self.health.values() if not h.up)
        cs = self.scheduler.snapshot()
        limit = self.fd_limit
        return {
            "checks": self.checks(), "down": down, "not_run": cs.not_run,
            "not_run_by": [{"type": k, "reason": r, "runs": n} for k, r, n in cs.not_run_by],
            "in_flight_max": cs.in_flight_max, "open_fds": fdlimit.open_fds(), "open_fds_max": self.fds_max,
            "fd_limit": limit.soft if limit else None, "fd_need": limit.need if limit else None,
            "check_budget": limit.budget if limit else None,
        }  # fmt: skip

    def metrics(self, snap: Snapshot) -> None:
        cs = self.scheduler.snapshot()
        limit = self.fd_limit
        snap.checks = {
            "runs": cs.runs, "failures": cs.failures, "skipped": cs.skipped,
            "lag_p50": cs.lag_p50, "lag_p99": cs.lag_p99,
            "in_flight_max": cs.in_flight_max, "open_fds": fdlimit.open_fds(), "open_fds_max": self.fds_max,
            "fd_limit": limit.soft if limit else 0,
        }  # fmt: skip
        snap.checks_not_run = cs.not_run_by
