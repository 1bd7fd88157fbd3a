"""Health applied to the desired state: pure, fed the checks' verdicts.

A real that is down gets weight 0 (`on_failure: inhibit`) or is left out
(`remove`); a real not checked yet is in its `start` state; an up real that
reports a dynamic weight (script checks) uses it; one that came up within the
service's `slow_start` has its weight ramped from 1. A virtual server with a
quorum is up while enough reals (and weight) are up; once lost it comes back
only at min + hysteresis, and while it is lost its sorry server is added.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from ipvsmgr.config.model import Config, Quorum, VirtualServer
from ipvsmgr.ipvs.model import Destination, DestKey, ServiceKey
from ipvsmgr.reconcile.desired import Desired, destination, service, service_key
from ipvsmgr.reconcile.overrides import Overrides

RealId = tuple[ServiceKey, DestKey]
HASHING = frozenset({"mh", "sh"})  # schedulers whose table keeps a weight-0 real's slots


@dataclass(frozen=True, slots=True)
class RealHealth:
    up: bool
    weight: int | None = None  # a dynamic weight reported by the check, while up
    reason: str = ""
    since: float | None = None  # time.monotonic() it came up; None: up from the start (no slow start)


@dataclass(frozen=True, slots=True)
class QuorumState:
    up: bool
    reals_up: int
    weight_up: int


def real_id(vs: VirtualServer, dest: Destination) -> RealId:
    return (service_key(vs), dest.key)


RAMP_STEPS = 20  # a slow start moves the weight at most this many times ...
RAMP_STEP_MIN = 0.5  # ... and at most every this many seconds


def ramp(weight: int, elapsed: float, window: float) -> int:
    """A weight `elapsed` seconds into a slow start of `window`: from 1, linear, to `weight`."""
    if elapsed >= window:
        return weight
    return max(1, min(weight, int(weight * max(elapsed, 0.0) / window)))


def _quorum_up(q: Quorum, count: int, weight: int, before: bool | None) -> bool:
    extra = q.hysteresis if before is False else 0  # regaining needs the margin
    # min_up 0: weight alone decides, hysteresis included (keepalived's quorum and hysteresis)
    return (q.min_up == 0 or count >= q.min_up + extra) and weight >= q.min_weight + extra


def healthy_state(
    config: Config,
    health: Mapping[RealId, RealHealth],
    quorum_before: Mapping[ServiceKey, bool] | None = None,
    overrides: Overrides | None = None,
    now: float | None = None,
) -> tuple[Desired, dict[ServiceKey, QuorumState]]:
    """The desired kernel state given each real's health, and each quorum.

    The operator's overrides come last: a drained real, and every real of a
    disabled virtual server, is kept at weight 0 (existing connections go on,
    new ones go elsewhere) and does not count towards the quorum."""
    before = quorum_before or {}
    ov = overrides or Overrides()
    out = Desired(timeouts=config.timeouts, sysctls=dict(config.sysctls))
    quorums: dict[ServiceKey, QuorumState] = {}
    for vs in config.virtual_servers:
        svc = service(vs)
        key = svc.key
        out.services[key] = svc
        out.names[key] = vs.name
        dests: dict[DestKey, Destination] = {}
        count = weight = 0
        disabled = key in ov.disabled
        for r in vs.reals:
            d = destination(r)
            if r.health is None:
                up, dynamic, h = True, None, None
            else:
                h = health.get((key, d.key))
                up = h.up if h is not None else r.health.start_up
                dynamic = h.weight if h is not None and h.up else None
            if d.weight and vs.scheduler in HASHING:
                out.table_weights[(key, d.key)] = d.weight
            if disabled or (key, d.key) in ov.drained:
                if up or r.health is None or r.health.on_failure == "inhibit":
                    dests[d.key] = replace(d, weight=0) if d.weight else d
            elif up:
                if dynamic is not None and dynamic != d.weight:
                    d = replace(d, weight=dynamic)
                count += 1
                weight += d.weight  # the quorum counts the full weight: the real is up
                if vs.slow_start and d.weight > 1 and h is not None and h.since is not None:
                    t = time.monotonic() if now is None else now
                    ramped = ramp(d.weight, t - h.since, vs.slow_start)
                    if ramped < d.weight:
                        d = replace(d, weight=ramped)
                        step = t + max(RAMP_STEP_MIN, vs.slow_start / RAMP_STEPS)
                        out.next_step = step if out.next_step is None else min(out.next_step, step)
                dests[d.key] = d
            elif r.health is not None and r.health.on_failure == "inhibit":
                dests[d.key] = replace(d, weight=0) if d.weight else d
        q_up = True
        if vs.quorum is not None:
            q_up = _quorum_up(vs.quorum, count, weight, before.get(key))
            if not q_up and vs.sorry is not None and not disabled:
                sorry = destination(vs.sorry)
                dests[sorry.key] = sorry
        quorums[key] = QuorumState(q_up, count, weight)
        out.dests[key] = dests
    return out, quorums
