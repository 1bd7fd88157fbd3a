"""One reconcile round: read the kernel, diff, optionally apply, remember ownership."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import overload

from ipvsmgr.config.model import Config
from ipvsmgr.ipvs import sysctl
from ipvsmgr.ipvs.client import Failure, IPVSClient, Request
from ipvsmgr.ipvs.model import Table
from ipvsmgr.reconcile.desired import Desired, desired_state
from ipvsmgr.reconcile.diff import Plan, diff
from ipvsmgr.reconcile.operations import Operation, SetSysctl
from ipvsmgr.reconcile.state import State, StateStore


@dataclass(slots=True)
class Round:
    plan: Plan
    kernel: Table
    desired: Desired
    failures: list[tuple[Operation, Failure | SysctlFailure]] = field(default_factory=list)
    writes: int = 0


def plan(config: Config, client: IPVSClient, store: StateStore, now: float | None = None) -> Round:
    return plan_desired(desired_state(config), config.drain_timeout, client, store, now)


def plan_desired(
    desired: Desired, drain_timeout: float, client: IPVSClient, store: StateStore, now: float | None = None
) -> Round:
    """Read the kernel (only services we own or want) and diff it against `desired`."""
    state = store.load()
    # Reals that already match are stored as the desired objects themselves,
    # so an unchanged 100,000-real table costs no second copy.
    kernel = client.table(only=desired.services.keys() | state.owned, stats=False, reuse=desired.dests)
    kernel.sysctls = sysctl.read(desired.sysctls)
    when = time.time() if now is None else now
    p = diff(desired, kernel, state.owned, state.drain_started, when, drain_timeout)
    return Round(p, kernel, desired)


class _Requests(Sequence[Request]):
    """Requests encoded batch by batch as they are sent, not all up front:
    a 100,000-real apply would otherwise hold every message in memory at once."""

    def __init__(self, ops: list[Operation]) -> None:
        self.ops = ops

    def __len__(self) -> int:
        return len(self.ops)

    @overload
    def __getitem__(self, i: int) -> Request: ...
    @overload
    def __getitem__(self, i: slice) -> list[Request]: ...
    def __getitem__(self, i: int | slice) -> Request | list[Request]:
        if isinstance(i, slice):
            return [op.request() for op in self.ops[i]]
        return self.ops[i].request()


@dataclass(frozen=True, slots=True)
class SysctlFailure:
    path: str
    error: str

    def __str__(self) -> str:
        return f"writing {self.path}: {self.error}"


def apply(rnd: Round, client: IPVSClient, store: StateStore) -> Round:
    ops: list[Operation] = [op for op in rnd.plan.operations if not isinstance(op, SetSysctl)]
    for op in rnd.plan.operations:
        if isinstance(op, SetSysctl):
            try:
                sysctl.write(op.name, op.new)
            except (OSError, ValueError) as e:
                rnd.failures.append((op, SysctlFailure(sysctl.path(op.name), str(e))))
    before = client.write_requests
    if ops:
        failures = client.execute(_Requests(ops))
        rnd.failures += [(ops[f.index], f) for f in failures]
    rnd.writes = client.write_requests - before
    # Record ownership even after partial failure: what was created is ours.
    store.save(State(owned=rnd.plan.owned, drain_started=rnd.plan.drain_started))
    return rnd
