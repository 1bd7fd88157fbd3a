"""One reconcile round: read the kernel, diff, optionally apply, remember ownership."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ipvsmgr.config.model import Config
from ipvsmgr.ipvs.client import Failure, IPVSClient
from ipvsmgr.ipvs.model import Table
from ipvsmgr.reconcile.desired import Desired, desired_state
from ipvsmgr.reconcile.diff import Plan, diff
from ipvsmgr.reconcile.operations import Operation
from ipvsmgr.reconcile.state import State, StateStore


@dataclass(slots=True)
class Round:
    plan: Plan
    kernel: Table
    desired: Desired
    failures: list[tuple[Operation, Failure]] = field(default_factory=list)
    writes: int = 0


def plan(config: Config, client: IPVSClient, store: StateStore, now: float | None = None) -> Round:
    state = store.load()
    desired = desired_state(config)
    kernel = client.table(only=desired.services.keys() | state.owned)
    p = diff(desired, kernel, state.owned, state.drain_started, time.time() if now is None else now,
             config.drain_timeout)  # fmt: skip
    return Round(p, kernel, desired)


def apply(rnd: Round, client: IPVSClient, store: StateStore) -> Round:
    ops = rnd.plan.operations
    before = client.write_requests
    if ops:
        failures = client.execute([op.request() for op in ops])
        rnd.failures = [(ops[f.index], f) for f in failures]
    rnd.writes = client.write_requests - before
    # Record ownership even after partial failure: what was created is ours.
    store.save(State(owned=rnd.plan.owned, drain_started=rnd.plan.drain_started))
    return rnd
