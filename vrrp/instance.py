"""A configured VRRP instance, and the receive rules that need its configuration."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from vrrp.machine import OWNER, Params
from vrrp.packet import AUTH_NONE, AUTH_PASS, V2_AUTH_LEN, VIP, Advert, Drop, IPAddress


@dataclass(frozen=True, slots=True)
class TrackInterface:
    name: str
    weight: int = 0  # 0: the instance goes to FAULT while the link is down; else added while down


@dataclass(frozen=True, slots=True)
class TrackFile:
    path: str
    weight: int = 1  # priority += weight x the integer in the file (a missing or bad file counts 0)


@dataclass(frozen=True, slots=True)
class TrackScript:
    command: tuple[str, ...]
    interval: float = 2.0
    timeout: float = 2.0
    weight: int = 0  # 0: FAULT while failing; else added while failing
    rise: int = 1
    fall: int = 1
    user: str | None = None
    # counted as passing until its first result, which decides at once (keepalived's); False:
    # failing until then (keepalived's init_fail, and a positive keepalived weight once imported)
    start_ok: bool = True


@dataclass(frozen=True, slots=True)
class TrackVirtualServer:
    name: str
    weight: int = 0  # 0: FAULT while its quorum is lost; else added while lost


@dataclass(frozen=True, slots=True)
class Garp:
    count: int = 5  # gratuitous ARPs / unsolicited NAs on becoming master
    interval: float = 0.0  # seconds between them (0: back to back)
    refresh: float = 0.0  # repeat one round every this many seconds while master (0: never)


@dataclass(frozen=True, slots=True)
class VipOptions:
    label: str | None = None  # IPv4 only: what ifconfig shows as eth0:vip
    scope: int = 0  # RT_SCOPE_*: 0 global, 253 link, 254 host


VipOptionsFor = tuple[VIP, VipOptions]


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    name: str
    interface: str
    params: Params
    # as advertised: an address listed twice is sent twice (keepalived peers count them)
    vips: tuple[VIP, ...]
    vip_options: tuple[VipOptionsFor, ...] = ()  # label and scope of the VIPs that have them
    unicast_peers: tuple[IPAddress, ...] = ()
    source: IPAddress | None = None  # default: the interface's primary (IPv4) / link-local (IPv6)
    accept: bool = True
    garp: Garp = field(default_factory=Garp)
    track_interfaces: tuple[TrackInterface, ...] = ()
    track_files: tuple[TrackFile, ...] = ()
    track_scripts: tuple[TrackScript, ...] = ()
    track_virtual_servers: tuple[TrackVirtualServer, ...] = ()
    notify: tuple[str, ...] = ()  # argv; instance name, state and priority are appended
    # keepalived's: notify_keepalived gets INSTANCE NAME STATE PRIORITY (MASTER/BACKUP/FAULT/STOP);
    # the per-state commands (notify_master, ...) run as written on entering their state
    notify_keepalived: tuple[str, ...] = ()
    notify_on: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (master|backup|fault|stop, argv)
    virtual_mac: str | None = None  # name of the macvlan carrying the RFC virtual MAC, or None
    password: bytes | None = None  # v2 PASS authentication (1-8 bytes), for keepalived peers using it

    @property
    def unique_vips(self) -> tuple[VIP, ...]:
        """The VIPs to add, remove and announce: each once."""
        return tuple(dict.fromkeys(self.vips))

    def vip_options_of(self, vip: VIP) -> VipOptions:
        return next((o for v, o in self.vip_options if v == vip), _NO_OPTIONS)

    @property
    def auth_type(self) -> int:
        return AUTH_PASS if self.password else AUTH_NONE

    @property
    def auth_data(self) -> bytes:
        return (self.password or b"").ljust(V2_AUTH_LEN, b"\0")

    @property
    def virtual_mac_address(self) -> bytes:
        """00:00:5e:00:01:VRID (IPv4) or 00:00:5e:00:02:VRID (IPv6): RFC 5798 7.3."""
        return bytes((0, 0, 0x5E, 0, 1 if self.family == 4 else 2, self.params.vrid))

    @property
    def family(self) -> int:
        return self.vips[0].version

    @property
    def addresses(self) -> tuple[IPAddress, ...]:
        return tuple(v.ip for v in self.vips)


def check_for_instance(advert: Advert, cfg: InstanceConfig) -> Drop | None:
    """RFC 5798 7.1 / RFC 3768 7.1 rules that depend on the instance's configuration."""
    p = cfg.params
    if advert.version != p.version:
        return Drop.VERSION
    if p.version == 2:
        if advert.auth_type != cfg.auth_type:
            return Drop.AUTH
        if advert.auth_type == AUTH_PASS and advert.auth_data != cfg.auth_data:
            return Drop.AUTH_FAIL
        if advert.interval_cs != p.interval_cs:
            return Drop.INTERVAL
    # RFC 5798 7.1 / RFC 3768 7.1: a mismatched address list is dropped unless the
    # *sender* is the address owner (priority 255): an owner's advert always counts,
    # or a backup would become a second master beside it.
    if advert.priority != OWNER and set(advert.addresses) != set(cfg.addresses):
        return Drop.ADDRESSES
    return None


def parse_vip(text: str) -> VIP:
    """198.18.0.100 (/32), 198.18.0.100/24, 2001:db8::1 (/128), 2001:db8::1/64."""
    return ipaddress.ip_interface(text)


_NO_OPTIONS = VipOptions()
