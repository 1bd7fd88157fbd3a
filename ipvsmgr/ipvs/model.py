"""Plain values describing IPVS objects; no I/O, no netlink details.

Addresses are canonical strings (``ipaddress`` compressed form): cheap to hash,
readable in plans and logs, and converted with inet_pton only at the wire.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from ipvsmgr.ipvs import constants as c

PROTOCOL_NAMES = {c.IPPROTO_TCP: "tcp", c.IPPROTO_UDP: "udp", c.IPPROTO_SCTP: "sctp"}
PROTOCOL_NUMBERS = {v: k for k, v in PROTOCOL_NAMES.items()}
FWD_NAMES = {
    c.IP_VS_CONN_F_MASQ: "nat",
    c.IP_VS_CONN_F_LOCALNODE: "local",
    c.IP_VS_CONN_F_TUNNEL: "tunnel",
    c.IP_VS_CONN_F_DROUTE: "dr",
    c.IP_VS_CONN_F_BYPASS: "bypass",
}
FWD_NUMBERS = {v: k for k, v in FWD_NAMES.items()}
TUN_NAMES = {
    c.IP_VS_CONN_F_TUNNEL_TYPE_IPIP: "ipip",
    c.IP_VS_CONN_F_TUNNEL_TYPE_GUE: "gue",
    c.IP_VS_CONN_F_TUNNEL_TYPE_GRE: "gre",
}
TUN_NUMBERS = {v: k for k, v in TUN_NAMES.items()}
FAMILY_NAMES: dict[int, str] = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}


def host_prefix(af: int) -> int:
    return 32 if af == socket.AF_INET else 128


def format_endpoint(af: int, addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if af == socket.AF_INET6 else f"{addr}:{port}"


@dataclass(frozen=True, slots=True)
class Stats:
    """IPVS counters (64-bit) and rate estimates as the kernel reports them."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0


@dataclass(frozen=True, slots=True, order=True)
class ServiceKey:
    """What identifies a virtual service in the kernel."""

    af: int
    protocol: int  # 0 for fwmark services
    addr: str  # "" for fwmark services
    port: int
    fwmark: int = 0

    def __str__(self) -> str:
        fam = "" if self.af == socket.AF_INET else " ipv6"
        if self.fwmark:
            return f"fwmark {self.fwmark}{fam}"
        proto = PROTOCOL_NAMES.get(self.protocol, str(self.protocol))
        return f"{proto} {format_endpoint(self.af, self.addr, self.port)}"


@dataclass(frozen=True, slots=True)
class Service:
    """A virtual service: its key and the settings that can be edited in place."""

    key: ServiceKey
    scheduler: str
    flags: int = 0  # user-settable IP_VS_SVC_F_* bits only
    timeout: int = 0  # persistence timeout, seconds
    prefix: int = 32  # persistence netmask as a prefix length
    pe_name: str = ""
    stats: Stats | None = field(default=None, compare=False)

    def settings(self) -> tuple[str, int, int, int, str]:
        return (self.scheduler, self.flags, self.timeout, self.prefix, self.pe_name)


@dataclass(frozen=True, slots=True, order=True)
class DestKey:
    af: int
    addr: str
    port: int

    def __str__(self) -> str:
        return format_endpoint(self.af, self.addr, self.port)


@dataclass(frozen=True, slots=True)
class Destination:
    """A real server of one service."""

    key: DestKey
    fwd: int = c.IP_VS_CONN_F_MASQ
    weight: int = 1
    u_thresh: int = 0
    l_thresh: int = 0
    tun_type: int = 0
    tun_port: int = 0
    tun_flags: int = 0
    active_conns: int = field(default=0, compare=False)
    inact_conns: int = field(default=0, compare=False)
    persist_conns: int = field(default=0, compare=False)
    stats: Stats | None = field(default=None, compare=False)

    def settings(self) -> tuple[int, int, int, int, int, int, int]:
        return (
            self.fwd,
            self.weight,
            self.u_thresh,
            self.l_thresh,
            self.tun_type,
            self.tun_port,
            self.tun_flags,
        )

    @property
    def connections(self) -> int:
        return self.active_conns + self.inact_conns


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Global IPVS protocol timeouts in seconds; 0 means 'leave unchanged'."""

    tcp: int = 0
    tcp_fin: int = 0
    udp: int = 0


@dataclass(frozen=True, slots=True)
class SyncDaemon:
    state: int  # IP_VS_STATE_MASTER or IP_VS_STATE_BACKUP
    interface: str
    sync_id: int = 0


@dataclass(slots=True)
class Table:
    """Everything IPVS holds in one network namespace, as dumped."""

    services: dict[ServiceKey, Service] = field(default_factory=dict)
    dests: dict[ServiceKey, dict[DestKey, Destination]] = field(default_factory=dict)
    timeouts: Timeouts = field(default_factory=Timeouts)
    sysctls: dict[str, int] = field(default_factory=dict)  # only those asked for (read from /proc)
