"""diff(desired, kernel, ownership) -> ordered operations. Pure: no I/O, no clock.

Order: sysctls, timeouts, new services, edited services, reals re-added to
restore their order, new reals, edited reals (including drains), deleted
reals, deleted services, so that a service exists before its reals and a
real never points at a deleted service.

Order matters to the hashing schedulers: mh (Maglev) and sh fill their
lookup tables walking the kernel's list of reals, which holds them in
reverse order of addition (each add goes to the head); contested slots go
to the real met first. Scale-out nodes must pick the same real for a flow,
so their lists must be in one order: the configuration's order of
addition. A real inserted in the middle of the configuration on a reload
would otherwise come first in the kernel's list, so the reals after it are
deleted and added again after it (their connections go on: a deleted real
with connections waits in the kernel's trash and is revived by the add).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ipvsmgr.ipvs.model import Destination, DestKey, ServiceKey, Table, Timeouts
from ipvsmgr.reconcile.desired import Desired
from ipvsmgr.reconcile.operations import (
    AddReal,
    AddService,
    DeleteReal,
    DeleteService,
    EditReal,
    EditService,
    Operation,
    SetSysctl,
    SetTimeouts,
)

ORDERED_SCHEDULERS = frozenset({"mh", "sh"})

DrainKey = tuple[ServiceKey, DestKey]


@dataclass(frozen=True, slots=True)
class Draining:
    """A real server on its way out: weight 0 until idle or out of time."""

    service: ServiceKey
    real: DestKey
    since: float
    connections: int
    deadline: float


@dataclass(slots=True)
class Plan:
    operations: list[Operation] = field(default_factory=list)
    owned: set[ServiceKey] = field(default_factory=set)  # to record after applying
    drain_started: dict[DrainKey, float] = field(default_factory=dict)  # to record after applying
    draining: list[Draining] = field(default_factory=list)  # still waiting after this plan

    @property
    def changes(self) -> bool:
        return bool(self.operations)


def _timeouts(want: Timeouts, have: Timeouts) -> SetTimeouts | None:
    differs = any(
        getattr(want, f) and getattr(want, f) != getattr(have, f) for f in ("tcp", "tcp_fin", "udp")
    )
    return SetTimeouts(have, want) if differs else None


def _add(skey: ServiceKey, d: Destination, table_weight: int) -> list[Operation]:
    """Add a real; one wanted at weight 0 by a hashing scheduler goes in at its
    configured weight and is quiesced in the same batch (see Desired.table_weights)."""
    if d.weight or not table_weight:
        return [AddReal(skey, d)]
    full = replace(d, weight=table_weight)
    return [AddReal(skey, full), EditReal(skey, full, d, "quiesced: its table share kept")]


def _reorder(
    skey: ServiceKey,
    want: dict[DestKey, Destination],
    have: dict[DestKey, Destination],
    table_weights: dict[tuple[ServiceKey, DestKey], int],
) -> tuple[list[Operation], set[DestKey]]:
    """Operations that make the kernel's list of wanted reals follow `want`'s
    order, and the keys they (re-)add. Reals not wanted (draining, weight 0)
    are skipped by the hashing schedulers, so their place does not matter."""
    # IPVS puts a new real at the head of the service's list, so a dump lists
    # the last added first: the order of addition is the dump reversed.
    kernel_order = [k for k in reversed(have) if k in want]
    wanted = list(want)
    i = 0
    while i < len(kernel_order) and kernel_order[i] == wanted[i]:
        i += 1
    if i == len(kernel_order):
        return [], set()  # the kernel holds a prefix of the order: plain appends keep it
    ops: list[Operation] = [
        DeleteReal(skey, k, "re-added to keep the hashing order") for k in kernel_order[i:]
    ]
    for k in wanted[i:]:
        ops += _add(skey, want[k], table_weights.get((skey, k), 0))
    return ops, set(wanted[i:])


def _drain(
    skey: ServiceKey,
    dest: Destination,
    drain_started: dict[DrainKey, float],
    now: float,
    timeout: float,
    plan: Plan,
    edits: list[Operation],
    deletes: list[Operation],
) -> bool:
    """Drain one real no longer wanted; True when it is deleted in this plan."""
    key = (skey, dest.key)
    conns = dest.connections
    if conns == 0:
        deletes.append(DeleteReal(skey, dest.key, "removed from config, no connections"))
        return True
    since = drain_started.get(key, now)
    if now - since >= timeout:
        deletes.append(
            DeleteReal(skey, dest.key, f"drain timeout after {timeout:g}s, {conns} connections left")
        )
        return True
    if dest.weight != 0:
        edits.append(EditReal(skey, dest, replace(dest, weight=0), f"draining, {conns} connections"))
    plan.drain_started[key] = since
    plan.draining.append(Draining(skey, dest.key, since, conns, since + timeout))
    return False


def diff(
    desired: Desired,
    kernel: Table,
    owned: set[ServiceKey],
    drain_started: dict[DrainKey, float],
    now: float,
    drain_timeout: float,
) -> Plan:
    """The operations that turn `kernel` into `desired`, touching only owned services.

    `owned` holds services this ipvsmgr created or adopted earlier (from the
    state file); services in neither `owned` nor `desired` belong to someone
    else and are left alone.
    """
    plan = Plan()
    add_svc: list[Operation] = []
    edit_svc: list[Operation] = []
    add_real: list[Operation] = []
    edit_real: list[Operation] = []
    del_real: list[Operation] = []
    del_svc: list[Operation] = []

    for name, value in desired.sysctls.items():
        if kernel.sysctls.get(name) != value:
            plan.operations.append(SetSysctl(name, kernel.sysctls.get(name), value))
    t = _timeouts(desired.timeouts, kernel.timeouts)
    if t:
        plan.operations.append(t)
    reorder: list[Operation] = []

    for skey, want in desired.services.items():
        plan.owned.add(skey)
        name = desired.names.get(skey, "")
        have = kernel.services.get(skey)
        want_dests = desired.dests.get(skey, {})
        if have is None:
            add_svc.append(AddService(want, name))
            for d in want_dests.values():
                add_real += _add(skey, d, desired.table_weights.get((skey, d.key), 0))
            continue
        if have.settings() != want.settings():
            edit_svc.append(EditService(have, want, name))
        have_dests = kernel.dests.get(skey, {})
        readded: set[DestKey] = set()
        if want.scheduler in ORDERED_SCHEDULERS:
            ops, readded = _reorder(skey, want_dests, have_dests, desired.table_weights)
            reorder += ops
        for dkey, d in want_dests.items():
            if dkey in readded:
                continue
            h = have_dests.get(dkey)
            if h is None:
                add_real += _add(skey, d, desired.table_weights.get((skey, dkey), 0))
            elif h.settings() != d.settings():
                edit_real.append(EditReal(skey, h, d))
        for dkey, h in have_dests.items():
            if dkey not in want_dests:
                _drain(skey, h, drain_started, now, drain_timeout, plan, edit_real, del_real)

    for skey in sorted(owned - desired.services.keys()):
        if skey not in kernel.services:
            continue  # already gone
        real_edits: list[Operation] = []
        real_dels: list[Operation] = []
        waiting = False
        for h in kernel.dests.get(skey, {}).values():
            if not _drain(skey, h, drain_started, now, drain_timeout, plan, real_edits, real_dels):
                waiting = True
        if waiting:
            plan.owned.add(skey)
            edit_real.extend(real_edits)
            del_real.extend(real_dels)
        else:
            # one request removes the service and whatever reals are left
            del_svc.append(DeleteService(skey, "removed from config"))

    plan.operations += add_svc + edit_svc + reorder + add_real + edit_real + del_real + del_svc
    return plan
