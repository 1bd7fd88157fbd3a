"""The configuration expressed as the IPVS objects it asks the kernel for."""

from __future__ import annotations

from dataclasses import dataclass, field

from ipvsmgr.config.model import Config, RealServer, VirtualServer
from ipvsmgr.ipvs import constants as c
from ipvsmgr.ipvs.model import (
    FWD_NUMBERS,
    PROTOCOL_NUMBERS,
    TUN_NUMBERS,
    Destination,
    DestKey,
    Service,
    ServiceKey,
    Timeouts,
)

SCHED_FLAG_BITS = {
    "sh-fallback": c.IP_VS_SVC_F_SCHED1,
    "sh-port": c.IP_VS_SVC_F_SCHED2,
    "mh-fallback": c.IP_VS_SVC_F_SCHED1,
    "mh-port": c.IP_VS_SVC_F_SCHED2,
}
CHECKSUM_FLAGS = {
    "none": c.IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM,
    "csum": c.IP_VS_TUNNEL_ENCAP_FLAG_CSUM,
    "remcsum": c.IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM,
}


@dataclass(slots=True)
class Desired:
    services: dict[ServiceKey, Service] = field(default_factory=dict)
    dests: dict[ServiceKey, dict[DestKey, Destination]] = field(default_factory=dict)
    timeouts: Timeouts = field(default_factory=Timeouts)
    names: dict[ServiceKey, str] = field(default_factory=dict)
    sysctls: dict[str, int] = field(default_factory=dict)  # net.ipv4.vs.*
    # Hashing schedulers (mh, sh): the configured weight of a real wanted at weight 0.
    # IPVS sizes a real's share of the table by its last non-zero weight, so such a
    # real is added at this weight and quiesced at once: every node then builds the
    # same table whatever the real's health history.
    table_weights: dict[tuple[ServiceKey, DestKey], int] = field(default_factory=dict)
    # While a real ramps up (slow_start): when its weight next steps (time.monotonic()).
    next_step: float | None = None


def service_key(vs: VirtualServer) -> ServiceKey:
    if vs.fwmark:
        return ServiceKey(vs.family, 0, "", 0, vs.fwmark)
    return ServiceKey(vs.family, PROTOCOL_NUMBERS[vs.protocol], vs.address, vs.port)


def service(vs: VirtualServer) -> Service:
    flags = 0
    for f in vs.scheduler_flags:
        flags |= SCHED_FLAG_BITS[f]
    if vs.one_packet:
        flags |= c.IP_VS_SVC_F_ONEPACKET
    host = 32 if vs.family == c.AF_INET else 128
    timeout, prefix, engine = 0, host, ""
    if vs.persistence is not None:
        flags |= c.IP_VS_SVC_F_PERSISTENT
        timeout, prefix, engine = vs.persistence.timeout, vs.persistence.prefix, vs.persistence.engine
    return Service(service_key(vs), vs.scheduler, flags, timeout, prefix, engine)


def destination(r: RealServer) -> Destination:
    tun_type = tun_port = tun_flags = 0
    if r.tunnel is not None:
        tun_type = TUN_NUMBERS[r.tunnel.type]
        tun_port = r.tunnel.port
        tun_flags = CHECKSUM_FLAGS[r.tunnel.checksum]
    return Destination(
        DestKey(r.family, r.address, r.port),
        FWD_NUMBERS[r.forwarding],
        r.weight,
        r.upper_threshold,
        r.lower_threshold,
        tun_type,
        tun_port,
        tun_flags,
    )


def desired_state(config: Config) -> Desired:
    d = Desired(timeouts=config.timeouts, sysctls=dict(config.sysctls))
    for vs in config.virtual_servers:
        svc = service(vs)
        d.services[svc.key] = svc
        d.names[svc.key] = vs.name
        d.dests[svc.key] = {dest.key: dest for dest in map(destination, vs.reals)}
    return d
