"""The `bgp:` section: schema-valid data to a BgpConfig, with the cross-field rules.

Rules a schema cannot say: hold times are 0 or 3-65535 whole seconds (RFC
4271), a peer is listed once and its local address is of its family, a
prefix has no host bits and is announced once, `healthy` names virtual
servers that exist (or finds them by address), `vrrp-master` names an
instance, and every prefix has a peer of its family to go to.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from ipvsmgr.config.durations import parse_duration
from ipvsmgr.config.errors import Path
from ipvsmgr.config.model import BgpAnnouncement, BgpConfig, BgpPeer, VirtualServer
from ipvsmgr.config.schema import Checked, Names

Error = Callable[[Path, str], None]
Locate = Callable[[Path], str]  # the line a path is on (Report.line_of: filled in with the positions)

DEFAULT_HOLD_TIME = 9
DEFAULT_WITHDRAW_GRACE = 5.0
FAMILY_TEXT = {2: "IPv4", 10: "IPv6"}


def _hold_time(value: Any, path: Path, error: Error) -> int:
    s = parse_duration(value)
    if s != int(s) or not (s == 0 or 3 <= s <= 65535):
        error(path, f"a hold time is 0 or 3s to 65535s in whole seconds (RFC 4271), not {value!r}")
        return DEFAULT_HOLD_TIME
    return int(s)


def _family(address: str) -> int:
    return 10 if ":" in address else 2


def build_bgp(
    data: Any,
    error: Error,
    line_of: Locate,
    servers: Sequence[VirtualServer],
    instances: Names,
    vs_names: Names,
    unbuilt: Sequence[str | None],
    checked: Checked,
) -> BgpConfig | None:
    """The section; `vs_names` and `instances` name every virtual server and VRRP instance (built or
    not), `unbuilt` the addresses of the virtual servers not built (None: unknown)."""
    if not isinstance(data, dict):
        return None
    default_hold = DEFAULT_HOLD_TIME
    if "hold_time" in data:
        default_hold = _hold_time(data["hold_time"], ("bgp", "hold_time"), error)
    peers: list[BgpPeer] = []
    seen: dict[str, Path] = {}
    families: set[int] = set()
    families_known = True
    for i, p in enumerate(data.get("peers") or ()):
        path: Path = ("bgp", "peers", i)
        if path in checked.refused:
            try:
                families.add(_family(str(ipaddress.ip_address(p.get("address")))))
            except (AttributeError, ValueError):
                families_known = False
            continue
        address = str(ipaddress.ip_address(p["address"]))
        local = str(ipaddress.ip_address(p["local_address"]))
        families.add(_family(address))
        if address in seen:
            error(path + ("address",), f"peer {address} is already listed on line {line_of(seen[address])}")
            continue
        if _family(address) != _family(local):
            error(
                path + ("local_address",),
                f"local_address {local} is {FAMILY_TEXT[_family(local)]} but the peer {address} is "
                f"{FAMILY_TEXT[_family(address)]}",
            )
            continue
        hold = _hold_time(p["hold_time"], path + ("hold_time",), error) if "hold_time" in p else default_hold
        seen[address] = path + ("address",)
        peers.append(BgpPeer(address, int(p["as"]), local, hold, p.get("password"), p.get("multihop")))
    by_name = {v.name: v for v in servers}
    announcements: list[BgpAnnouncement] = []
    prefixes: dict[str, Path] = {}
    for i, a in enumerate(data.get("announce") or ()):
        path = ("bgp", "announce", i)
        if path in checked.refused:
            continue
        ann = _announcement(a, path, error, by_name, servers, instances, vs_names, unbuilt, checked)
        if ann is None:
            continue
        if ann.prefix in prefixes:
            line = line_of(prefixes[ann.prefix])
            error(path + ("prefix",), f"{ann.prefix} is already announced on line {line}")
            continue
        if families and families_known and ann.family not in families:
            error(
                path + ("prefix",),
                f"no {FAMILY_TEXT[ann.family]} peer to announce {ann.prefix} to "
                "(a prefix goes to the peers of its own family)",
            )
            continue
        prefixes[ann.prefix] = path
        announcements.append(ann)
    if ("bgp",) in checked.refused:
        return None  # local_as, router_id or peers refused: checked as far as it goes
    grace = parse_duration(data.get("withdraw_grace", DEFAULT_WITHDRAW_GRACE))
    exabgp = tuple(data.get("exabgp") or ("exabgp",))
    return BgpConfig(
        int(data["local_as"]), data["router_id"], tuple(peers), tuple(announcements), grace, exabgp,
        data.get("vip_interface", "lo"),
    )  # fmt: skip


def _announcement(
    a: dict[str, Any],
    path: Path,
    error: Error,
    by_name: dict[str, VirtualServer],
    servers: Sequence[VirtualServer],
    instances: Names,
    vs_names: Names,
    unbuilt: Sequence[str | None],
    checked: Checked,
) -> BgpAnnouncement | None:
    raw = a["prefix"]
    try:
        net = ipaddress.ip_network(raw, strict=True)
    except ValueError:
        fixed = ipaddress.ip_network(raw, strict=False)
        error(path + ("prefix",), f"{raw} has host bits set: the prefix is {fixed}")
        return None
    prefix = str(net)
    when_raw = a.get("when", "healthy")
    when, instance = (when_raw, "") if isinstance(when_raw, str) else ("vrrp-master", when_raw["vrrp-master"])
    names: tuple[str, ...] = ()
    if not checked.ok(path + ("when",)):
        return None  # the condition was refused
    if when == "vrrp-master" and instance not in instances:
        if instances.complete:
            listed = instances.listing()
            error(
                path + ("when", "vrrp-master"), f"no VRRP instance named {instance!r} (instances: {listed})"
            )
        return None
    if "virtual_servers" in a and when != "healthy":
        error(path + ("virtual_servers",), f"virtual_servers only applies to when: healthy, not {when}")
        return None
    if when == "healthy":
        if "virtual_servers" in a:
            ok = True
            for j, name in enumerate(a["virtual_servers"]):
                if vs_names.missing(name):
                    listed = vs_names.listing()
                    error(
                        path + ("virtual_servers", j), f"no virtual server named {name!r} (names: {listed})"
                    )
                    ok = False
                elif name not in by_name:
                    ok = False  # refused by the schema: reported there
            if not ok:
                return None
            names = tuple(dict.fromkeys(a["virtual_servers"]))
        elif checked.ok(path + ("virtual_servers",)):
            names = tuple(
                v.name
                for v in servers
                if v.address and v.family == _family(prefix) and ipaddress.ip_address(v.address) in net
            )
            if not names:
                if any(address is None or _inside(address, net) for address in unbuilt):
                    return None  # a virtual server the schema refused may be the one
                error(
                    path + ("prefix",),
                    f"no virtual server has an address in {prefix}: name the ones whose health decides "
                    "with `virtual_servers`, or use when: always",
                )
                return None
        else:
            return None
    watermarks = None
    if "watermarks" in a:
        w = a["watermarks"]
        if when != "healthy":
            error(path + ("watermarks",), f"watermarks only apply to when: healthy, not {when}")
            return None
        if w["low"] > w["high"]:
            error(path + ("watermarks", "low"), f"low {w['low']:g} is above high {w['high']:g}")
            return None
        watermarks = (float(w["low"]), float(w["high"]))
    next_hop = a.get("next_hop", "self")
    if next_hop != "self":
        next_hop = str(ipaddress.ip_address(next_hop))
        if _family(next_hop) != _family(prefix):
            error(path + ("next_hop",), f"next hop {next_hop} is not of the prefix's family")
            return None
    for key, limit in (("communities", 0xFFFF), ("large_communities", 0xFFFFFFFF)):
        for j, c in enumerate(a.get(key, ())):
            if any(int(x) > limit for x in c.split(":")):
                error(path + (key, j), f"{c}: each part of a {key[:-3]}y is at most {limit}")
                return None
    return BgpAnnouncement(
        prefix=prefix, when=when, vrrp_instance=instance, virtual_servers=names, next_hop=next_hop,
        med=a.get("med"), local_preference=a.get("local_preference"),
        communities=tuple(a.get("communities", ())), large_communities=tuple(a.get("large_communities", ())),
        path=path, watermarks=watermarks,
    )  # fmt: skip


def _inside(address: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return bool(address) and ipaddress.ip_address(address) in net
