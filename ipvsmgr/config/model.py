"""The validated configuration as typed values (defaults already applied)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ipvsmgr.config.errors import Path, Problem
from ipvsmgr.groupnotify import GroupNotify
from ipvsmgr.ipvs.model import Timeouts  # plain seconds; 0 leaves the kernel's value
from ipvsmgr.sources.dns import DnsSpec
from ipvsmgr.sources.etcd import EtcdSpec
from vrrp.instance import InstanceConfig


@dataclass(frozen=True, slots=True)
class Tunnel:
    type: str = "ipip"  # ipip | gue | gre
    port: int = 0  # GUE only
    checksum: str = "none"  # none | csum | remcsum


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """A resolved health check: scheduling, hysteresis and the checker itself."""

    type: str
    checker: Any  # a healthchecks.checkers.* options object with async check()
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    jitter: float = 0.1
    retries: int = 0
    retry_delay: float = 0.1
    address: str | None = None  # override of the real's address
    port: int | None = None  # override of the real's port
    source: str | None = None
    on_failure: str = "inhibit"  # inhibit | remove
    start_up: bool = False  # state before the first verdict


@dataclass(frozen=True, slots=True)
class Quorum:
    min_up: int = 1
    min_weight: int = 0
    hysteresis: int = 0
    up_command: tuple[str, ...] = ()  # run as written when the quorum returns (keepalived's quorum_up)
    down_command: tuple[str, ...] = ()  # ... and when it is lost (quorum_down)
    down_on_stop: bool = False  # run down_command as the daemon stops with the quorum up (keepalived's omega)


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
    health: HealthCheck | None = None  # None: always up
    # where it came from: "" the file; "runtime" `ipvsmgr real add`; else a discovery source.
    # Not compared: the same real moving from the API into the file changes nothing in the kernel.
    origin: str = field(default="", compare=False)
    # run as written when the check brings it up / takes it down (keepalived's notify_up/down);
    # nothing the kernel sees
    notify_up: tuple[str, ...] = field(default=(), compare=False)
    notify_down: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Persistence:
    timeout: int  # seconds
    prefix: int  # client netmask as prefix length
    engine: str = ""  # IPVS persistence engine: "sip" (Call-ID), or "" for the client address


@dataclass(frozen=True, slots=True)
class Discovery:
    """Where a virtual server finds reals besides its list (ipvsmgr/sources/)."""

    dns: DnsSpec | None = None
    etcd: EtcdSpec | None = None  # one of the two
    debounce: float = 1.0
    max_removed: float = 0.5  # share of the found reals that may leave per minute

    @property
    def name(self) -> str:
        """The origin its reals carry: `dns:NAME` or `etcd:PREFIX`."""
        return (
            f"dns:{self.dns.name}"
            if self.dns is not None
            else f"etcd:{self.etcd.prefix if self.etcd else ''}"
        )


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
    quorum: Quorum | None = None
    sorry: RealServer | None = None  # takes the traffic while the quorum is lost
    # A real as the file would build one from an address alone (the service's forwarding,
    # tunnel, weight and default check): what reals added at run time are made from.
    template: RealServer | None = field(default=None, compare=False)
    discovery: Discovery | None = None
    slow_start: float = 0.0  # seconds a real that comes up takes to reach its weight (IPVS has no such)


REALTIME_PRIORITY = 10  # SCHED_RR priority of the VRRP process unless the file says otherwise


@dataclass(frozen=True, slots=True)
class VrrpConfig:
    instances: tuple[InstanceConfig, ...] = ()
    sync_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (name, member instance names)
    realtime_priority: int = REALTIME_PRIORITY  # of the VRRP process (vrrp/realtime.py); 0: normal
    group_notify: tuple[tuple[str, GroupNotify], ...] = ()  # the sync groups' commands (run by the daemon)


@dataclass(frozen=True, slots=True)
class ConnectionSync:
    interface: str
    sync_id: int = 0
    follow: str = ""  # the VRRP instance whose MASTER/other state picks master/backup sync


@dataclass(frozen=True, slots=True)
class BgpPeer:
    address: str
    asn: int
    local_address: str
    hold_time: int  # seconds: 0 or 3..65535
    password: str | None = None  # TCP MD5
    multihop: int | None = None  # outgoing TTL

    @property
    def family(self) -> int:
        return 10 if ":" in self.address else 2  # AF_INET6 / AF_INET


@dataclass(frozen=True, slots=True)
class BgpAnnouncement:
    prefix: str  # canonical network text, e.g. 198.18.100.1/32
    when: str  # healthy | always | vrrp-master
    vrrp_instance: str = ""  # for vrrp-master
    virtual_servers: tuple[str, ...] = ()  # for healthy: the names that must be healthy
    next_hop: str = "self"
    med: int | None = None
    local_preference: int | None = None
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    path: Path = field(default=(), compare=False)
    watermarks: tuple[float, float] | None = None  # (low, high) shares of reals up; when: healthy

    @property
    def family(self) -> int:
        return 10 if ":" in self.prefix else 2


@dataclass(frozen=True, slots=True)
class BgpConfig:
    local_as: int
    router_id: str
    peers: tuple[BgpPeer, ...]
    announcements: tuple[BgpAnnouncement, ...] = ()
    withdraw_grace: float = 5.0
    exabgp: tuple[str, ...] = ("exabgp",)
    vip_interface: str = "lo"  # "" leaves the VIP addresses to the operator


@dataclass(frozen=True, slots=True)
class XdpConfig:
    interfaces: tuple[str, ...]
    protect: tuple[tuple[str, int, str], ...] = ()  # (address, port, protocol) besides the virtual servers'
    mode: str = "auto"  # auto | native | generic
    object: str | None = None  # the compiled program; None: the default places
    pin_path: str = "/sys/fs/bpf/ipvsmgr"
    syn_rate_per_source: int = 0  # SYN/s, 0: no limit
    syn_burst_per_source: int = 0
    attack_syn_rate: int = 0  # SYN/s per VIP, 0: never under attack
    attack_hold: float = 10.0
    challenge: str = "retransmit"  # retransmit | rst-cookie | off
    verified_ttl: float = 600.0
    verified_syn_rate: int = 50  # SYN/s a verified source may send under attack, 0: no budget
    verified_syn_burst: int = 100
    allowlist: tuple[str, ...] = ()  # canonical prefixes
    blocklist: tuple[tuple[str, str], ...] = ()  # (prefix, drop | tarpit)
    drop_sample_every: int = 64


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    virtual_servers: tuple[VirtualServer, ...]
    timeouts: Timeouts = field(default_factory=Timeouts)
    drain_timeout: float = 300.0
    vrrp: VrrpConfig = field(default_factory=VrrpConfig)
    connection_sync: ConnectionSync | None = None
    bgp: BgpConfig | None = None
    sysctls: tuple[tuple[str, int], ...] = ()  # net.ipv4.vs.NAME = value, in config order
    xdp: XdpConfig | None = None
    max_removed_reals: float = 0.5  # the removal guard's share (reconcile/guard.py)
    empty: bool = False  # the file held no settings at all: never replaces a running configuration
    # valid, but worth a look (`ipvsmgr check` prints them): FILE:LINE:COL: warning: ...
    warnings: tuple[Problem, ...] = field(default=(), compare=False)
