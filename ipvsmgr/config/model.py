"""The validated configuration as typed values (defaults already applied)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ipvsmgr.config.errors import Path
from ipvsmgr.ipvs.model import Timeouts  # plain seconds; 0 leaves the kernel's value


@dataclass(frozen=True, slots=True)
class Tunnel:
    type: str = "ipip"  # ipip | gue | gre
    port: int = 0  # GUE only
    checksum: str = "none"  # none | csum | remcsum


@dataclass(frozen=True, slots=True)
class RealServer:
    address: str  # canonical text form
    port: int
    weight: int
    forwarding: str  # nat | dr | tunnel
    tunnel: Tunnel | None
    upper_threshold: int = 0
    lower_threshold: int = 0
    family: int = 0  # socket.AF_INET or AF_INET6


@dataclass(frozen=True, slots=True)
class Persistence:
    timeout: int  # seconds
    prefix: int  # client netmask as prefix length


@dataclass(frozen=True, slots=True)
class VirtualServer:
    name: str
    family: int
    protocol: str  # tcp | udp | sctp, "" for fwmark
    address: str  # "" for fwmark
    port: int
    fwmark: int
    scheduler: str
    scheduler_flags: tuple[str, ...]
    persistence: Persistence | None
    one_packet: bool
    reals: tuple[RealServer, ...]
    path: Path = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    virtual_servers: tuple[VirtualServer, ...]
    timeouts: Timeouts = field(default_factory=Timeouts)
    drain_timeout: float = 300.0
