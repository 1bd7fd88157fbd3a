"""Schema-valid data to typed configuration, with the checks a schema cannot express.

Each problem points at the YAML node to fix. Virtual servers that already
failed schema validation are skipped here so one mistake is reported once.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import replace
from typing import Any

from ipvsmgr.config.bgpbuild import build_bgp
from ipvsmgr.config.durations import parse_duration
from ipvsmgr.config.errors import Path, Problem
from ipvsmgr.config.health import BLOCKS, build_check, merge
from ipvsmgr.config.model import (
    Config,
    ConnectionSync,
    HealthCheck,
    Persistence,
    Quorum,
    RealServer,
    Tunnel,
    VirtualServer,
    VrrpConfig,
)
from ipvsmgr.config.vrrpbuild import build_vrrp
from ipvsmgr.config.xdpbuild import build_xdp
from ipvsmgr.config.yamlsource import Document
from ipvsmgr.ipvs.model import Timeouts

DEFAULT_SCHEDULER = "wlc"
DEFAULT_PERSISTENCE = 300
DEFAULT_DRAIN_TIMEOUT = 300.0
FAMILIES: dict[str, int] = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
FAMILY_TEXT: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}


def _address(text: str) -> tuple[int, str]:
    """Family and canonical text; inet_ntop's form, as decoded from the kernel
    (it differs from ipaddress's for IPv4-mapped IPv6 addresses)."""
    af = socket.AF_INET6 if ":" in text else socket.AF_INET
    canonical = socket.inet_ntop(af, socket.inet_pton(af, text))
    return int(af), text if canonical == text else canonical  # share the string: 100,000 reals


def default_name(family: int, protocol: str, address: str, port: int, fwmark: int) -> str:
    if fwmark:
        return f"fwmark:{fwmark}" + ("" if family == socket.AF_INET else ":ipv6")
    host = f"[{address}]" if family == socket.AF_INET6 else address
    return f"{protocol}:{host}:{port}"


class _Builder:
    def __init__(self, doc: Document, skip_reals: dict[int, set[int]]) -> None:
        self.doc = doc
        self.skip_reals = skip_reals
        self.problems: list[Problem] = []

    def error(self, path: Path, message: str, key: bool = False) -> None:
        self.problems.append(self.doc.problem(path, message, key))

    def seconds(self, value: Any, path: Path, what: str, minimum: int = 1) -> int:
        s = parse_duration(value)
        if s != int(s) or s < minimum:
            self.error(path, f"{what} must be a whole number of seconds, at least {minimum}s (got {value!r})")
            return minimum
        return int(s)

    def tunnel(self, raw: dict[str, Any] | None, base: Tunnel | None, path: Path) -> Tunnel:
        t = base or Tunnel()
        if raw is None:
            return t
        t = Tunnel(
            type=raw.get("type", t.type),
            port=int(raw.get("port", t.port)),  # the schema's "integer" admits 6080.0
            checksum=raw.get("checksum", t.checksum),
        )
        if t.type == "gue" and not t.port:
            self.error(path, "a gue tunnel needs `port:` (the GUE UDP port the reals listen on, e.g. 6080)")
        if t.type != "gue" and "port" in raw:
            self.error(path + ("port",), f"`port` only applies to gue tunnels, not {t.type}")
        if t.type == "ipip" and "checksum" in raw and t.checksum != "none":
            self.error(path + ("checksum",), "ipip tunnels carry no checksum; use gue or gre for `checksum`")
        return t

    def real(
        self, vs: dict[str, Any], v: VirtualServer, r: dict[str, Any], path: Path, vs_tunnel: Tunnel | None
    ) -> RealServer | None:
        family, address = _address(r["address"])
        forwarding = r.get("forwarding", vs.get("forwarding", "nat"))
        ok = True
        if "tunnel" in r and forwarding != "tunnel":
            self.error(
                path + ("tunnel",),
                f"`tunnel` settings need `forwarding: tunnel` (this real uses {forwarding})",
                key=True,
            )
            ok = False
        tunnel = (
            self.tunnel(r.get("tunnel"), vs_tunnel, path + ("tunnel",)) if forwarding == "tunnel" else None
        )
        if family != v.family and forwarding != "tunnel":
            self.error(
                path + ("address",),
                f"{FAMILY_TEXT[family]} real server for an {FAMILY_TEXT[v.family]} virtual server: "
                "only tunnel forwarding can cross address families",
            )
            ok = False
        if v.fwmark:
            port = r.get("port", 0)
        elif forwarding in ("dr", "tunnel"):
            port = r.get("port", v.port)
            if port != v.port:
                self.error(
                    path + ("port",),
                    f"{forwarding} forwarding keeps the destination port: the real's port must be "
                    f"the virtual port {v.port} (or be left out); use nat to change ports",
                )
                ok = False
        else:
            port = r.get("port", v.port)
        upper = int(r.get("upper_threshold", 0))
        lower = int(r.get("lower_threshold", 0))
        if lower and not upper:
            self.error(path + ("lower_threshold",), "lower_threshold needs an upper_threshold")
            ok = False
        elif upper and lower > upper:
            self.error(
                path + ("lower_threshold",), f"lower_threshold {lower} is above upper_threshold {upper}"
            )
            ok = False
        if not ok:
            return None
        return RealServer(
            address=address,
            port=int(port),
            weight=int(r.get("weight", vs.get("weight", 1))),
            forwarding=forwarding,
            tunnel=tunnel,
            upper_threshold=int(upper),
            lower_threshold=int(lower),
            family=family,
        )

    def virtual_server(self, d: dict[str, Any], path: Path) -> VirtualServer | None:
        fwmark = int(d.get("fwmark", 0))
        if fwmark:
            family, address, protocol, port = FAMILIES[d.get("family", "ipv4")], "", "", 0
        else:
            family, address = _address(d["address"])
            protocol, port = d.get("protocol", "tcp"), int(d["port"])
            ip = ipaddress.ip_address(address)
            if ip.is_unspecified or ip.is_multicast:
                self.error(
                    path + ("address",), f"{address} cannot be a virtual address (unspecified or multicast)"
                )
        scheduler = d.get("scheduler", DEFAULT_SCHEDULER)
        flags = tuple(d.get("scheduler_flags", ()))
        for i, flag in enumerate(flags):
            owner = flag.split("-", 1)[0]
            if owner != scheduler:
                self.error(
                    path + ("scheduler_flags", i),
                    f"{flag} is a flag of the {owner} scheduler, not of {scheduler}",
                )
        persistence = None
        if "persistence" in d:
            p = d["persistence"] or {}
            pp = path + ("persistence",)
            timeout = self.seconds(
                p.get("timeout", DEFAULT_PERSISTENCE), pp + ("timeout",), "persistence timeout"
            )
            prefix = 32 if family == socket.AF_INET else 128
            if "netmask" in p and "prefix" in p:
                self.error(pp + ("prefix",), "give either netmask or prefix, not both", key=True)
            if "netmask" in p:
                if family != socket.AF_INET:
                    self.error(
                        pp + ("netmask",), "netmask is for IPv4 services; use `prefix:` for IPv6", key=True
                    )
                else:
                    prefix = ipaddress.IPv4Network(f"0.0.0.0/{p['netmask']}").prefixlen
            if "prefix" in p:
                prefix = int(p["prefix"])
                limit = 32 if family == socket.AF_INET else 128
                if prefix > limit:
                    self.error(
                        pp + ("prefix",),
                        f"prefix {prefix} is longer than an {FAMILY_TEXT[family]} address ({limit})",
                    )
            persistence = Persistence(timeout, prefix)
        if not fwmark and port == 0 and persistence is None:
            self.error(path + ("port",), "port 0 (all ports) needs `persistence:`, as in ipvsadm -p")
        one_packet = bool(d.get("one_packet", False))
        if one_packet and protocol in ("tcp", "sctp"):
            self.error(
                path + ("one_packet",), f"one_packet only applies to udp (or fwmark) services, not {protocol}"
            )
        vs_forwarding = d.get("forwarding", "nat")
        vs_tunnel = None
        if "tunnel" in d:
            if vs_forwarding != "tunnel":
                self.error(
                    path + ("tunnel",),
                    "`tunnel` settings need `forwarding: tunnel` on the virtual server "
                    "(or put them on the reals that tunnel)",
                    key=True,
                )
            else:
                vs_tunnel = self.tunnel(d["tunnel"], None, path + ("tunnel",))
        name = d.get("name") or default_name(family, protocol, address, port, fwmark)
        v = VirtualServer(
            name=name,
            family=family,
            protocol=protocol,
            address=address,
            port=port,
            fwmark=fwmark,
            scheduler=scheduler,
            scheduler_flags=flags,
            persistence=persistence,
            one_packet=one_packet,
            reals=(),
            path=path,
        )
        reals: list[RealServer] = []
        seen: dict[tuple[int, str, int], Path] = {}
        skip = self.skip_reals.get(int(path[-1]), set())
        default_raw = d.get("health_check")
        default_check = self.health(default_raw, None, path, path) if default_raw else None
        for i, r in enumerate(d.get("reals", ())):
            if i in skip:
                continue
            rp = path + ("reals", i)
            real = self.real(d, v, r, rp, vs_tunnel)
            if real is None:
                continue
            override = r.get("health_check")
            if override is False:
                real = replace(real, health=None)
            elif override:
                real = replace(real, health=self.health(default_raw, override, path, rp))
            elif default_check is not None:
                real = replace(real, health=default_check)  # shared by every real without an override
            h = real.health
            if h is not None and not real.port and h.port is None and h.type not in ("icmp", "script"):
                self.error(
                    rp, f"this real has no port to check (fwmark service): set the {h.type} check's `port`"
                )
            rk = (real.family, real.address, real.port)
            if rk in seen:
                line = self.doc.locate(seen[rk])[0]
                self.error(
                    rp, f"real server {real.address} port {real.port} is listed twice (first on line {line})"
                )
                continue
            seen[rk] = rp
            reals.append(real)
        fallback = f"{scheduler}-fallback"
        inhibited = any(r.health is not None and r.health.on_failure == "inhibit" for r in reals)
        if scheduler in ("mh", "sh") and inhibited and fallback not in flags:
            self.error(
                path + (("scheduler_flags",) if "scheduler_flags" in d else ("scheduler",)),
                f"add {fallback} to scheduler_flags: {scheduler} keeps the table slots of a real "
                "at weight 0 (failed with on_failure: inhibit, or drained), and without the "
                "fallback the new connections hashed to it are refused instead of going to the "
                "next real (or use on_failure: remove)",
            )
        sorry = None
        if "sorry_server" in d:
            sp = path + ("sorry_server",)
            sorry = self.real(d, v, {"weight": 1, **d["sorry_server"]}, sp, vs_tunnel)
            if sorry is not None and (sorry.family, sorry.address, sorry.port) in seen:
                self.error(sp, "the sorry server is also one of the reals: use a separate server")
        quorum = None
        if "quorum" in d or sorry is not None:
            q = d.get("quorum") or {}
            quorum = Quorum(int(q.get("min_up", 1)), int(q.get("min_weight", 0)), int(q.get("hysteresis", 0)))
        return VirtualServer(
            name=v.name, family=v.family, protocol=v.protocol, address=v.address, port=v.port,
            fwmark=v.fwmark, scheduler=v.scheduler, scheduler_flags=v.scheduler_flags,
            persistence=v.persistence, one_packet=v.one_packet, reals=tuple(reals), path=path,
            quorum=quorum, sorry=sorry,
        )  # fmt: skip

    def health(
        self, default: dict[str, Any] | None, override: dict[str, Any] | None, vs_path: Path, path: Path
    ) -> HealthCheck | None:
        merged = merge(default, override)

        def error(sub: tuple[str, ...], message: str) -> None:
            # point at the real's own setting when it made it, else at the default
            where = path if override is not None and (not sub or sub[0] in override) else vs_path
            self.error(where + ("health_check", *sub), message, key=bool(sub) and sub[0] in BLOCKS)

        return build_check(merged, error)

    def config(self, data: dict[str, Any], valid_vs: list[bool]) -> Config:
        ipvs = data.get("ipvs") or {}
        t = ipvs.get("timeouts") or {}
        tp: Path = ("ipvs", "timeouts")
        timeouts = Timeouts(
            *(
                self.seconds(t[k], tp + (k,), f"the {k} timeout") if k in t else 0
                for k in ("tcp", "tcp_fin", "udp")
            )
        )
        drain = parse_duration(ipvs.get("drain_timeout", DEFAULT_DRAIN_TIMEOUT))
        servers: list[VirtualServer] = []
        keys: dict[tuple[int, str, str, int, int], Path] = {}
        names: dict[str, Path] = {}
        for i, d in enumerate(data.get("virtual_servers") or ()):
            if not valid_vs[i]:
                continue
            path: Path = ("virtual_servers", i)
            v = self.virtual_server(d, path)
            if v is None:
                continue
            key = (v.family, v.protocol, v.address, v.port, v.fwmark)
            if key in keys:
                line = self.doc.locate(keys[key])[0]
                self.error(path, f"virtual server {v.name} is defined twice (first on line {line})")
                continue
            if v.name in names:
                line = self.doc.locate(names[v.name])[0]
                self.error(path + ("name",), f"name {v.name!r} is already used on line {line}")
                continue
            keys[key] = path
            names[v.name] = path
            servers.append(v)
        vrrp = build_vrrp(
            data.get("vrrp"), self.error, lambda p: self.doc.locate(p)[0], {v.name for v in servers}
        )
        bgp = build_bgp(
            data.get("bgp"),
            self.error,
            lambda p: self.doc.locate(p)[0],
            servers,
            {i.name for i in vrrp.instances},
        )
        sysctls = tuple((k, int(v)) for k, v in (ipvs.get("sysctl") or {}).items())
        xdp = build_xdp(data.get("xdp"), self.error, lambda p: self.doc.locate(p)[0], servers)
        return Config(
            xdp=xdp,
            sysctls=sysctls,
            bgp=bgp,
            source=self.doc.filename,
            virtual_servers=tuple(servers),
            timeouts=timeouts,
            drain_timeout=drain,
            vrrp=vrrp,
            connection_sync=self.connection_sync(ipvs.get("connection_sync"), vrrp),
            max_removed_reals=float(ipvs.get("max_removed_reals", 0.5)),
        )

    def connection_sync(self, raw: dict[str, Any] | None, vrrp: VrrpConfig) -> ConnectionSync | None:
        if not raw:
            return None
        path: Path = ("ipvs", "connection_sync")
        names = [i.name for i in vrrp.instances]
        follow = raw.get("follow")
        if follow is None:
            if len(names) != 1:
                why = "there are none" if not names else f"there are {len(names)}: {', '.join(names)}"
                self.error(path, f"connection_sync follows a VRRP instance: name it with `follow` ({why})")
                return None
            follow = names[0]
        elif follow not in names:
            known = ", ".join(names) or "none"
            self.error(path + ("follow",), f"no VRRP instance named {follow!r} (instances: {known})")
            return None
        return ConnectionSync(raw["interface"], raw.get("sync_id", 0), follow)


def build(
    doc: Document, valid_vs: list[bool], skip_reals: dict[int, set[int]] | None = None
) -> tuple[Config, list[Problem]]:
    """The typed configuration and the semantic problems; invalid parts are skipped."""
    b = _Builder(doc, skip_reals or {})
    data = doc.data if isinstance(doc.data, dict) else {}
    cfg = b.config(data, valid_vs)
    return cfg, b.problems
