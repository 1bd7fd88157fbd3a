"""Reals that are not in the file: added at run time (`ipvsmgr real add`) or by a discovery source.

The daemon runs an effective configuration: the file's, with these merged
into their virtual servers (`merge`). Every part sees one configuration, so
a dynamic real is health-checked, drained, counted and shown like a
configured one. A dynamic real is built from its service's template (the
forwarding, tunnel, weight and default check the file gives a real that
says only its address), so it cannot be anything a file real could not.

The file wins: a dynamic real the file now lists is dropped, and a weight
set at run time on a file real lasts until the file changes that real's
weight. Both are said in a log line by the caller (`merge` returns them).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from ipvsmgr.config.model import Config, RealServer, VirtualServer
from ipvsmgr.ipvs.model import DestKey, ServiceKey
from ipvsmgr.reconcile.desired import destination, service_key

RealId = tuple[ServiceKey, DestKey]
RUNTIME = "runtime"  # the origin of reals added through the control socket
MAX_WEIGHT = 65535  # IPVS keeps weights as int; ipvsadm and keepalived stop at 65535


class Refused(ValueError):
    """A dynamic real its virtual server cannot take; the message says why."""


@dataclass(frozen=True, slots=True)
class DynamicReal:
    service: ServiceKey
    address: str  # canonical text
    port: int
    weight: int | None  # None: the service's default
    origin: str = RUNTIME

    @property
    def key(self) -> DestKey:
        af = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        return DestKey(af, self.address, self.port)


@dataclass(frozen=True, slots=True)
class WeightSet:
    """A weight given at run time to a real of the file, and the file's weight then."""

    real: RealId
    weight: int
    file_weight: int


@dataclass(slots=True)
class Merged:
    config: Config
    shadowed: list[DynamicReal] = field(default_factory=list)  # now listed by the file: dropped
    orphaned: list[DynamicReal] = field(default_factory=list)  # their virtual server left the file
    stale_weights: list[WeightSet] = field(default_factory=list)  # the file changed the weight since
    refused: list[tuple[DynamicReal, str]] = field(default_factory=list)  # no longer valid for the service


def check_weight(weight: int) -> int:
    if not 0 <= weight <= MAX_WEIGHT:
        raise Refused(f"weight {weight} is out of range (0-{MAX_WEIGHT})")
    return weight


def endpoint(vs: VirtualServer, address: str, port: int | None) -> tuple[str, int]:
    """The canonical address and the port a real of `vs` at address[:port] has."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise Refused(f"{address!r} is not an IP address") from None
    if ip.is_unspecified or ip.is_multicast:
        raise Refused(f"{ip} cannot be a real server (unspecified or multicast)")
    t = vs.template
    if t is None:
        raise Refused(f"virtual server {vs.name!r} takes no reals at run time")
    if port is None:
        port = t.port
    elif t.forwarding in ("dr", "tunnel") and not vs.fwmark and port != vs.port:
        raise Refused(
            f"{t.forwarding} forwarding keeps the destination port: a real of {vs.name!r} "
            f"has port {vs.port} (or none given)"
        )
    return str(ip), port


def build(vs: VirtualServer, d: DynamicReal) -> RealServer:
    """The real `d` in `vs`, as the file would build it; Refused when the file would refuse it."""
    t = vs.template
    if t is None:
        raise Refused(f"virtual server {vs.name!r} takes no reals at run time")
    address, port = endpoint(vs, d.address, d.port)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    if family != vs.family and t.forwarding != "tunnel" and not vs.fwmark:
        raise Refused(
            f"an IPv{6 if family == socket.AF_INET6 else 4} real for an "
            f"IPv{6 if vs.family == socket.AF_INET6 else 4} virtual server: only tunnel forwarding "
            "crosses address families"
        )
    if (
        t.health is not None
        and not port
        and t.health.port is None
        and t.health.type not in ("icmp", "script", "file")
    ):
        raise Refused(f"a real without a port in {vs.name!r} cannot be checked: give ADDRESS:PORT")
    weight = t.weight if d.weight is None else check_weight(d.weight)
    return replace(t, address=address, port=port, family=family, weight=weight, origin=d.origin)


def merge(file: Config, dynamic: Iterable[DynamicReal], weights: Iterable[WeightSet] = ()) -> Merged:
    """The effective configuration: the file's, with the dynamic reals and run-time weights."""
    by_service: dict[ServiceKey, list[DynamicReal]] = {}
    for d in dynamic:
        by_service.setdefault(d.service, []).append(d)
    set_weights: Mapping[RealId, WeightSet] = {w.real: w for w in weights}
    out = Merged(file)
    services: list[VirtualServer] = []
    known: set[ServiceKey] = set()
    for vs in file.virtual_servers:
        key = service_key(vs)
        known.add(key)
        listed = {destination(r).key for r in vs.reals}
        if vs.sorry is not None:
            listed.add(destination(vs.sorry).key)
        reals = list(vs.reals)
        if set_weights:
            for i, r in enumerate(reals):
                w = set_weights.get((key, destination(r).key))
                if w is None:
                    continue
                if w.file_weight != r.weight:
                    out.stale_weights.append(w)
                elif w.weight != r.weight:
                    reals[i] = replace(r, weight=w.weight)
        added: dict[DestKey, RealServer] = {}
        for d in by_service.get(key, ()):
            if d.key in listed:
                out.shadowed.append(d)
                continue
            try:
                real = build(vs, d)
            except Refused as e:
                out.refused.append((d, str(e)))
                continue
            added.setdefault(destination(real).key, real)  # the first of two sources naming one real
        if added or reals != list(vs.reals):
            vs = replace(vs, reals=tuple(reals) + tuple(added.values()))
        services.append(vs)
    out.orphaned = [d for k, ds in by_service.items() if k not in known for d in ds]
    if any(a is not b for a, b in zip(services, file.virtual_servers, strict=True)):
        out.config = replace(file, virtual_servers=tuple(services))
    return out
