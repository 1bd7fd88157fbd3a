"""The removal guard: a new configuration that would take most of a site down is refused.

A template that rendered empty, a truncated push or a wrong file is still a
valid configuration, and applying it would delete every service and release
every VIP in one step. So a change that removes all owned services, all
VIPs, or more than a set share of the owned reals needs `--force`. Only what
the file removes counts: reals going down on their checks never do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ipvsmgr.config.model import Config
from ipvsmgr.ipvs.model import DestKey, ServiceKey, Table
from ipvsmgr.reconcile.desired import destination, service_key

Reals = Mapping[ServiceKey, Iterable[DestKey]]

DEFAULT_MAX_REMOVED_REALS = 0.5


@dataclass(frozen=True, slots=True)
class Removal:
    services: int  # owned before
    services_removed: int
    reals: int
    reals_removed: int
    vips: int
    vips_removed: int

    def counts(self) -> str:
        return (
            f"{self.services_removed} of {self.services} virtual servers, "
            f"{self.reals_removed} of {self.reals} reals, {self.vips_removed} of {self.vips} VIPs"
        )


def config_reals(config: Config) -> dict[ServiceKey, list[DestKey]]:
    return {service_key(vs): [destination(r).key for r in vs.reals] for vs in config.virtual_servers}


def config_vips(config: Config) -> set[str]:
    return {str(v.ip) for i in config.vrrp.instances for v in i.vips}


def kernel_reals(table: Table, owned: Iterable[ServiceKey]) -> dict[ServiceKey, list[DestKey]]:
    """What the kernel holds of the services we own: the 'before' of a start or an apply."""
    return {k: list(table.dests.get(k, {})) for k in owned if k in table.services}


def removal(old: Reals, new: Reals, old_vips: Iterable[str] = (), new_vips: Iterable[str] = ()) -> Removal:
    reals = removed = 0
    for skey, dests in old.items():
        kept = set(new.get(skey, ()))
        for d in dests:
            reals += 1
            removed += d not in kept
    before_vips = set(old_vips)
    return Removal(
        services=len(old),
        services_removed=sum(1 for k in old if k not in new),
        reals=reals,
        reals_removed=removed,
        vips=len(before_vips),
        vips_removed=len(before_vips - set(new_vips)),
    )


def refusal(r: Removal, max_removed_reals: float) -> str | None:
    """Why this removal needs --force, or None when it may go ahead."""
    if r.services and r.services_removed == r.services:
        why = "it removes every virtual server ipvsmgr owns"
    elif r.vips and r.vips_removed == r.vips:
        why = "it removes every VRRP VIP"
    elif r.reals and r.reals_removed > max_removed_reals * r.reals:
        share, limit = f"{r.reals_removed / r.reals:.0%}", f"{max_removed_reals:.0%}"
        why = f"it removes {share} of the owned reals, more than ipvs.max_removed_reals ({limit})"
    else:
        return None
    return f"{why} ({r.counts()}); if that is meant, run it again with --force"


EMPTY_FILE = (
    "the file holds no settings (empty, or only comments), which would remove everything ipvsmgr runs; "
    "the running configuration stays. To remove everything on purpose, write `virtual_servers: []` "
    "and use --force"
)
