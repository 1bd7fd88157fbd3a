"""The `vrrp:` section: schema-valid data to instances, with the cross-field rules.

Rules a schema cannot say: one family per instance (VIPs, peers, source),
v2 is IPv4 with whole-second intervals, v3 intervals are centiseconds up to
40.95 s, names are unique, a VRID is used once per interface and family,
an address is a VIP of one instance, a unicast peer is not one of this node's
own addresses, sync groups name existing instances (each in one group at
most), tracked virtual servers exist.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from ipvsmgr.config.durations import parse_duration
from ipvsmgr.config.errors import Path
from ipvsmgr.config.model import REALTIME_PRIORITY, VrrpConfig
from ipvsmgr.config.schema import Checked, Names
from ipvsmgr.groupnotify import GroupNotify
from vrrp.instance import (
    Garp,
    InstanceConfig,
    TrackFile,
    TrackInterface,
    TrackScript,
    TrackVirtualServer,
    VipOptions,
    VipOptionsFor,
)
from vrrp.machine import Params
from vrrp.packet import IPAddress

Error = Callable[[Path, str], None]
Locate = Callable[[Path], str]  # the line a path is on (Report.line_of: filled in with the positions)


def build_vrrp(
    data: Any,
    error: Error,
    line_of: Locate,
    vs_names: Names,
    checked: Checked,
    local: dict[str, Path] | None = None,
) -> tuple[VrrpConfig, Names, set[IPAddress] | None]:
    """The section, the names of every instance (built or not: references to them stay quiet),
    and every VIP (None when an instance's VIPs are unknown)."""
    known = Names()
    # the section or its list refused (or misspelt): there are instances, by names unknown
    known.complete = ("vrrp",) not in checked.dropped and ("vrrp", "instances") not in checked.dropped
    if not isinstance(data, dict):
        return VrrpConfig(), known, set() if known.complete else None
    raw = data.get("instances") or []
    instances: list[InstanceConfig] = []
    for i, d in enumerate(raw):
        named = isinstance(d, dict) and checked.ok(("vrrp", "instances", i, "name"))
        known.add(d.get("name") if named else None)
    names: dict[str, Path] = {}
    vrids: dict[tuple[str, int, int], Path] = {}
    macvlans: dict[str, Path] = {}
    vip_owner: dict[IPAddress, tuple[str, Path]] = {}
    vips_known: set[IPAddress] | None = set() if known.complete else None
    interfaces = {str(d.get("interface")) for d in raw if isinstance(d, dict)}
    mine = _own_addresses(raw, checked, local or {})
    for i, d in enumerate(raw):
        path: Path = ("vrrp", "instances", i)
        refused = path in checked.refused
        d = checked.partial.get(path, d) if refused else d
        if not isinstance(d, dict):
            continue
        if not checked.ok(path + ("virtual_addresses",)):
            vips_known = None
        elif vips_known is not None:
            vips_known.update(v.ip for v in _vips(d))
        inst = _instance(d, path, error, vs_names, checked, mine)
        name = d.get("name")
        if isinstance(name, str) and not refused:
            if name in names:
                error(
                    path + ("name",), f"instance name {name!r} is already used on line {line_of(names[name])}"
                )
                continue
            names[name] = path
        for j, vip in enumerate(_vips(d)):
            where = path + ("virtual_addresses", j)
            if vip.ip in vip_owner and vip_owner[vip.ip][1][:3] == path:
                continue  # listed twice in one instance: advertised twice, added once
            if vip.ip in vip_owner:
                owner, first = vip_owner[vip.ip]
                error(
                    where,
                    f"{vip.ip} is already a virtual address of instance {owner!r} (line {line_of(first)}): "
                    "an address is moved by one instance",
                )
            else:
                vip_owner[vip.ip] = (str(name), where)
        vrid, interface, family = d.get("vrid"), d.get("interface"), _family(d)
        if isinstance(vrid, (int, float)) and isinstance(interface, str) and family is not None:
            key = (interface, family, int(vrid))
            if key in vrids:
                line = line_of(vrids[key])
                error(
                    path + ("vrid",),
                    f"VRID {vrid} is already used for IPv{family} on {interface} (line {line})",
                )
                continue
            vrids[key] = path + ("vrid",)
        if inst is None or refused:
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
        instances.append(inst)
    groups: list[tuple[str, tuple[str, ...]]] = []
    notify: list[tuple[str, GroupNotify]] = []
    member_of: dict[str, tuple[str, Path]] = {}
    group_names: dict[str, Path] = {}
    built = {i.name for i in instances}
    for g, d in enumerate(data.get("sync_groups") or ()):
        path = ("vrrp", "sync_groups", g)
        if path in checked.refused:
            continue
        if d["name"] in group_names:
            line = line_of(group_names[d["name"]])
            error(path + ("name",), f"sync group name {d['name']!r} is already used on line {line}")
            continue
        group_names[d["name"]] = path + ("name",)
        ok = True
        for j, member in enumerate(d["instances"]):
            if member not in known:
                if known.complete:
                    listed = known.listing()
                    error(path + ("instances", j), f"no VRRP instance named {member!r} (instances: {listed})")
                ok = False
            elif member in member_of:
                group, first = member_of[member]
                error(
                    path + ("instances", j),
                    f"instance {member!r} is already in sync group {group!r} (line {line_of(first)})",
                )
                ok = False
        if ok:
            for j, member in enumerate(d["instances"]):
                member_of[member] = (d["name"], path + ("instances", j))
            if all(m in built for m in d["instances"]):
                groups.append((d["name"], tuple(d["instances"])))
                n = _group_notify(d)
                if n != GroupNotify():
                    notify.append((d["name"], n))
    realtime = data.get("realtime_priority", REALTIME_PRIORITY)
    return VrrpConfig(tuple(instances), tuple(groups), realtime, tuple(notify)), known, vips_known


def _group_notify(d: dict[str, Any]) -> GroupNotify:
    return GroupNotify(
        on=tuple(
            (when, tuple(d[f"notify_{when}"]))
            for when in ("master", "backup", "fault", "stop")
            if d.get(f"notify_{when}")
        ),
        notify=tuple(d.get("notify") or ()),
        notify_keepalived=tuple(d.get("notify_keepalived") or ()),
    )


def _vips(d: dict[str, Any]) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The instance's VIPs, as far as they are readable (an entry is an address or {address, ...})."""
    out = []
    for v in d.get("virtual_addresses") or ():
        try:
            out.append(ipaddress.ip_interface(v["address"] if isinstance(v, dict) else v))
        except (ValueError, KeyError, TypeError):
            continue
    return out


_SCOPES = {"global": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}  # rtnetlink's RT_SCOPE_*


def _vip_options(
    d: dict[str, Any], bad: Callable[[tuple[str | int, ...], str], None]
) -> tuple[VipOptionsFor, ...]:
    """Label and scope of the VIPs that set them. Of an address listed twice the first entry is the
    one added (as keepalived: the second add finds it there), so a label on the repeat is unused."""
    out: dict[str, VipOptionsFor | None] = {}
    for j, v in enumerate(d.get("virtual_addresses") or ()):
        try:
            vip = ipaddress.ip_interface(v["address"] if isinstance(v, dict) else v)
        except (ValueError, KeyError, TypeError):
            continue
        if not isinstance(v, dict) or not ("label" in v or "scope" in v):
            out.setdefault(str(vip), None)
            continue
        if "label" in v and vip.version == 6:
            bad(("virtual_addresses", j, "label"), "labels are IPv4 only (the kernel keeps none for IPv6)")
            continue
        out.setdefault(str(vip), (vip, VipOptions(v.get("label"), _SCOPES[v.get("scope", "global")])))
    return tuple(o for o in out.values() if o is not None)


def _family(d: dict[str, Any]) -> int | None:
    vips = _vips(d)
    return vips[0].version if vips else None


def _own_addresses(
    raw: list[Any], checked: Checked, local: dict[str, Path]
) -> dict[IPAddress, tuple[str, Path]]:
    """This node's addresses in the file, each with what makes it ours (for a unicast peer's message)
    and where (a link-local address is only ours on its own link)."""
    out = {
        ipaddress.ip_address(text): ("this node's BGP local_address", where) for text, where in local.items()
    }
    for i, d in enumerate(raw):
        path: Path = ("vrrp", "instances", i)
        d = checked.partial.get(path, d)
        if not isinstance(d, dict):
            continue
        for vip in _vips(d):
            out.setdefault(vip.ip, (f"a virtual address of instance {d.get('name')!r}", path))
        source = d.get("source_address")
        try:
            if isinstance(source, str):
                out[ipaddress.ip_address(source)] = (
                    f"this node's source_address (in instance {d.get('name')!r})",
                    path,
                )
        except ValueError:
            continue
    return out


def _instance(
    d: dict[str, Any],
    path: Path,
    error: Error,
    vs_names: Names,
    checked: Checked,
    mine: dict[IPAddress, tuple[str, Path]],
) -> InstanceConfig | None:
    """The instance, or None after reporting its problems; `d` may lack what the schema refused."""
    ok = all(k in d for k in ("name", "interface", "vrid", "virtual_addresses"))

    def bad(sub: tuple[str | int, ...], message: str) -> None:
        nonlocal ok
        ok = False
        error(path + sub, message)

    def known(*sub: str) -> bool:
        return checked.ok(path + sub)

    vips = tuple(_vips(d)) if "virtual_addresses" in d else ()
    family = vips[0].version if vips else None
    for j, v in enumerate(vips):
        if v.version != family:
            bad(
                ("virtual_addresses", j),
                f"{d['virtual_addresses'][j]} is IPv{v.version} but the first VIP is IPv{family}: "
                "one family per instance",
            )
    vip_options = _vip_options(d, bad)
    version = d.get("version", 3)
    if version == 2 and family == 6:
        bad(("version",), "VRRP version 2 is IPv4 only: use version 3 for IPv6")
    interval = parse_duration(d.get("advert_interval", 1))
    cs = round(interval * 100)
    if not known("version") or not known("advert_interval"):
        cs = 100
    elif version == 2:
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
        if family is not None and p.version != family:
            bad(("unicast_peers", j), f"peer {p} is IPv{p.version} but the VIPs are IPv{family}")
        elif p in mine and (not p.is_link_local or mine[p][1] == path):
            bad(
                ("unicast_peers", j),
                f"unicast peer {p} is {mine[p][0]}: list the other node's own address (adverts sent to "
                "this node never reach the peer)",
            )
    source = ipaddress.ip_address(d["source_address"]) if "source_address" in d else None
    if source is not None and family is not None and source.version != family:
        bad(("source_address",), f"source {source} is IPv{source.version} but the VIPs are IPv{family}")
    if (
        family == 6
        and source is not None
        and not source.is_link_local
        and not peers
        and known("unicast_peers")
    ):
        bad(
            ("source_address",),
            "IPv6 VRRP adverts to the multicast group must come from a link-local address",
        )
    auth = d.get("authentication")
    password = None
    if isinstance(auth, dict) and known("authentication"):
        password = str(auth.get("password", "")).encode()
        if version != 2:
            bad(("authentication",), "authentication is VRRPv2's (RFC 5798 removed it): set version: 2")
        elif len(password) > 8:
            bad(("authentication", "password"), "the password is at most 8 bytes (RFC 2338), as UTF-8")
    vmac: str | None = None
    if d.get("virtual_mac"):
        vmac = d.get("virtual_mac_interface") or f"vrrp{family}.{d.get('vrid')}"
        if peers:
            bad(
                ("virtual_mac",),
                "virtual_mac needs a shared layer-2 segment and the multicast group: not with unicast_peers",
            )
    elif "virtual_mac_interface" in d and known("virtual_mac"):
        bad(("virtual_mac_interface",), "virtual_mac_interface is set but virtual_mac is not true")
    g = d.get("garp") or {}
    garp = Garp(
        count=g.get("count", 5),
        interval=parse_duration(g.get("interval", 0)),
        refresh=parse_duration(g.get("refresh", 0)),
    )
    t = d.get("track") or {}
    tp = path + ("track",)
    tracked_vs = []
    for j, tv in enumerate(t.get("virtual_servers") or ()):
        if tp + ("virtual_servers", j) in checked.refused:
            ok = False
            continue
        if vs_names.missing(tv["name"]):
            bad(
                ("track", "virtual_servers", j, "name"),
                f"no virtual server named {tv['name']!r} (virtual servers: {vs_names.listing()})",
            )
        tracked_vs.append(TrackVirtualServer(tv["name"], tv.get("weight", 0)))
    scripts = []
    for j, sc in enumerate(t.get("scripts") or ()):
        if tp + ("scripts", j) in checked.refused:
            ok = False
            continue
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
                sc.get("start", "up") == "up",
            )  # fmt: skip
        )
    refused_tracks = any(
        tp + (kind, j) in checked.refused
        for kind in ("interfaces", "files")
        for j in range(len(t.get(kind) or ()))
    )
    priority = d.get("priority", 100)
    if not ok or refused_tracks:
        return None
    return InstanceConfig(
        name=d["name"],
        interface=d["interface"],
        params=Params(
            vrid=d["vrid"], priority=priority, interval_cs=cs, version=version,
            preempt=d.get("preempt", True), preempt_delay=parse_duration(d.get("preempt_delay", 0)),
        ),
        vips=vips,
        vip_options=vip_options,
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
        notify_keepalived=tuple(d.get("notify_keepalived") or ()),
        notify_on=tuple(
            (when, tuple(d[f"notify_{when}"]))
            for when in ("master", "backup", "fault", "stop")
            if d.get(f"notify_{when}")
        ),
        virtual_mac=vmac,
        password=password,
    )  # fmt: skip
