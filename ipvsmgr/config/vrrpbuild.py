"""The `vrrp:` section: schema-valid data to instances, with the cross-field rules.

Rules a schema cannot say: one family per instance (VIPs, peers, source),
v2 is IPv4 with whole-second intervals, v3 intervals are centiseconds up to
40.95 s, names are unique, a VRID is used once per interface and family,
sync groups name existing instances (each in one group at most), tracked
virtual servers exist.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from ipvsmgr.config.durations import parse_duration
from ipvsmgr.config.errors import Path
from ipvsmgr.config.model import VrrpConfig
from vrrp.instance import Garp, InstanceConfig, TrackFile, TrackInterface, TrackScript, TrackVirtualServer
from vrrp.machine import Params

Error = Callable[[Path, str], None]
Locate = Callable[[Path], int]  # the line a path is on


def build_vrrp(data: Any, error: Error, line_of: Locate, vs_names: set[str]) -> VrrpConfig:
    if not isinstance(data, dict):
        return VrrpConfig()
    instances: list[InstanceConfig] = []
    names: dict[str, Path] = {}
    vrids: dict[tuple[str, int, int], Path] = {}
    macvlans: dict[str, Path] = {}
    interfaces = {str(d.get("interface")) for d in data.get("instances") or () if isinstance(d, dict)}
    for i, d in enumerate(data.get("instances") or ()):
        path: Path = ("vrrp", "instances", i)
        inst = _instance(d, path, error, vs_names)
        if inst is None:
            continue
        if inst.name in names:
            error(
                path + ("name",),
                f"instance name {inst.name!r} is already used on line {line_of(names[inst.name])}",
            )
            continue
        key = (inst.interface, inst.family, inst.params.vrid)
        if key in vrids:
            error(
                path + ("vrid",),
                f"VRID {inst.params.vrid} is already used for IPv{inst.family} on {inst.interface} "
                f"(line {line_of(vrids[key])})",
            )
            continue
        if inst.virtual_mac is not None:
            where = path + (("virtual_mac_interface",) if "virtual_mac_interface" in d else ("virtual_mac",))
            if inst.virtual_mac in macvlans:
                error(
                    where,
                    f"the virtual MAC interface {inst.virtual_mac} is already used on line "
                    f"{line_of(macvlans[inst.virtual_mac])}: set virtual_mac_interface to another name",
                )
                continue
            if inst.virtual_mac in interfaces:
                error(
                    where,
                    f"the virtual MAC interface {inst.virtual_mac} is the name of an instance's interface",
                )
                continue
            macvlans[inst.virtual_mac] = where
        names[inst.name] = path
        vrids[key] = path + ("vrid",)
        instances.append(inst)
    groups: list[tuple[str, tuple[str, ...]]] = []
    member_of: dict[str, str] = {}
    for g, d in enumerate(data.get("sync_groups") or ()):
        path = ("vrrp", "sync_groups", g)
        ok = True
        for j, member in enumerate(d["instances"]):
            if member not in names:
                known = ", ".join(sorted(names)) or "none"
                error(path + ("instances", j), f"no VRRP instance named {member!r} (instances: {known})")
                ok = False
            elif member in member_of:
                error(
                    path + ("instances", j),
                    f"instance {member!r} is already in sync group {member_of[member]!r}",
                )
                ok = False
        if ok:
            for member in d["instances"]:
                member_of[member] = d["name"]
            groups.append((d["name"], tuple(d["instances"])))
    return VrrpConfig(tuple(instances), tuple(groups))


def _instance(d: dict[str, Any], path: Path, error: Error, vs_names: set[str]) -> InstanceConfig | None:
    ok = True

    def bad(sub: tuple[str | int, ...], message: str) -> None:
        nonlocal ok
        ok = False
        error(path + sub, message)

    vips = tuple(ipaddress.ip_interface(v) for v in d["virtual_addresses"])
    family = vips[0].version
    for j, v in enumerate(vips):
        if v.version != family:
            bad(
                ("virtual_addresses", j),
                f"{d['virtual_addresses'][j]} is IPv{v.version} but the first VIP is IPv{family}: "
                "one family per instance",
            )
    version = d.get("version", 3)
    if version == 2 and family != 4:
        bad(("version",), "VRRP version 2 is IPv4 only: use version 3 for IPv6")
    interval = parse_duration(d.get("advert_interval", 1))
    cs = round(interval * 100)
    if version == 2:
        if interval != int(interval) or not 1 <= interval <= 255:
            bad(
                ("advert_interval",),
                f"VRRPv2 advert_interval must be whole seconds, 1s-255s (got {interval:g}s)",
            )
            cs = 100
    elif abs(cs - interval * 100) > 1e-6 or not 1 <= cs <= 4095:
        bad(
            ("advert_interval",),
            f"VRRPv3 advert_interval must be 10ms-40.95s in steps of 10ms (got {interval:g}s)",
        )
        cs = 100
    peers = tuple(ipaddress.ip_address(p) for p in d.get("unicast_peers") or ())
    for j, p in enumerate(peers):
        if p.version != family:
            bad(("unicast_peers", j), f"peer {p} is IPv{p.version} but the VIPs are IPv{family}")
    source = ipaddress.ip_address(d["source_address"]) if "source_address" in d else None
    if source is not None and source.version != family:
        bad(("source_address",), f"source {source} is IPv{source.version} but the VIPs are IPv{family}")
    if family == 6 and source is not None and not source.is_link_local and not peers:
        bad(
            ("source_address",),
            "IPv6 VRRP adverts to the multicast group must come from a link-local address",
        )
    vmac: str | None = None
    if d.get("virtual_mac"):
        vmac = d.get("virtual_mac_interface") or f"vrrp{family}.{d['vrid']}"
        if peers:
            bad(
                ("virtual_mac",),
                "virtual_mac needs a shared layer-2 segment and the multicast group: not with unicast_peers",
            )
    elif "virtual_mac_interface" in d:
        bad(("virtual_mac_interface",), "virtual_mac_interface is set but virtual_mac is not true")
    g = d.get("garp") or {}
    garp = Garp(
        count=g.get("count", 5),
        interval=parse_duration(g.get("interval", 0)),
        refresh=parse_duration(g.get("refresh", 0)),
    )
    t = d.get("track") or {}
    tracked_vs = []
    for j, tv in enumerate(t.get("virtual_servers") or ()):
        if tv["name"] not in vs_names:
            known = ", ".join(sorted(vs_names)) or "none"
            bad(
                ("track", "virtual_servers", j, "name"),
                f"no virtual server named {tv['name']!r} (virtual servers: {known})",
            )
        tracked_vs.append(TrackVirtualServer(tv["name"], tv.get("weight", 0)))
    scripts = []
    for j, sc in enumerate(t.get("scripts") or ()):
        interval_s = parse_duration(sc.get("interval", 2))
        timeout_s = parse_duration(sc.get("timeout", 2))
        if interval_s <= 0 or timeout_s <= 0:
            bad(("track", "scripts", j), "a tracking script needs an interval and a timeout above 0")
            continue
        scripts.append(
            TrackScript(
                tuple(sc["argv"]),
                interval_s,
                timeout_s,
                sc.get("weight", 0),
                sc.get("rise", 1),
                sc.get("fall", 1),
                sc.get("user"),
            )  # fmt: skip
        )
    priority = d.get("priority", 100)
    if not ok:
        return None
    return InstanceConfig(
        name=d["name"],
        interface=d["interface"],
        params=Params(
            vrid=d["vrid"], priority=priority, interval_cs=cs, version=version,
            preempt=d.get("preempt", True), preempt_delay=parse_duration(d.get("preempt_delay", 0)),
        ),
        vips=vips,
        unicast_peers=peers,
        source=source,
        accept=d.get("accept", True),
        garp=garp,
        track_interfaces=tuple(
            TrackInterface(x["name"], x.get("weight", 0)) for x in t.get("interfaces") or ()
        ),
        track_files=tuple(TrackFile(x["path"], x.get("weight", 1)) for x in t.get("files") or ()),
        track_scripts=tuple(scripts),
        track_virtual_servers=tuple(tracked_vs),
        notify=tuple(d.get("notify") or ()),
        virtual_mac=vmac,
    )  # fmt: skip
