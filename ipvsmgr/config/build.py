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
from ipvsmgr.config.errors import Path, Report
from ipvsmgr.config.health import BLOCKS, build_check, merge
from ipvsmgr.config.model import (
    Config,
    ConnectionSync,
    Discovery,
    HealthCheck,
    Persistence,
    Quorum,
    RealServer,
    Tunnel,
    VirtualServer,
)
from ipvsmgr.config.schema import Checked, Names
from ipvsmgr.config.vrrpbuild import build_vrrp
from ipvsmgr.config.xdpbuild import build_xdp
from ipvsmgr.ipvs.model import Timeouts
from ipvsmgr.sources.dns import DnsSpec
from ipvsmgr.sources.etcd import EtcdSpec
from vrrp.packet import IPAddress

DEFAULT_SCHEDULER = "wlc"
DEFAULT_PERSISTENCE = 300
DEFAULT_DRAIN_TIMEOUT = 300.0
FAMILIES: dict[str, int] = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
FAMILY_TEXT: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}


def _address(text: str) -> tuple[int, str]:
    """Family and canonical text; inet_ntop's form, as decoded from the kernel
    (it differs from ipaddress's for IPv4-mapped IPv6 addresses)."""
    af = socket.AF_INET6 if ":" in text else socket.AF_INET
    try:
        packed = socket.inet_pton(af, text)
    except ValueError as e:  # a NUL inside ("\0" in YAML): no address either, as inet_pton's OSError says
        raise OSError(str(e)) from None
    canonical = socket.inet_ntop(af, packed)
    return int(af), text if canonical == text else canonical  # share the string: 100,000 reals


def default_name(family: int, protocol: str, address: str, port: int, fwmark: int) -> str:
    if fwmark:
        return f"fwmark:{fwmark}" + ("" if family == socket.AF_INET else ":ipv6")
    host = f"[{address}]" if family == socket.AF_INET6 else address
    return f"{protocol}:{host}:{port}"


_DEFAULT_NAME_FROM = ("address", "port", "protocol", "fwmark", "family")


def _known_address(raw: dict[str, Any]) -> str | None:
    """The address of a virtual server the schema refused: "" for fwmark, None when unreadable."""
    if "fwmark" in raw:
        return ""
    address = raw.get("address")
    try:
        return _address(address)[1] if isinstance(address, str) else None
    except OSError:
        return None


def _known_name(raw: dict[str, Any]) -> str | None:
    """The name a virtual server the schema refused would have had (references to it stay quiet)."""
    name = raw.get("name")
    if isinstance(name, str):
        return name
    address, port, fwmark = _known_address(raw), raw.get("port"), raw.get("fwmark")
    family = FAMILIES.get(raw.get("family", "ipv4"), socket.AF_INET)
    if isinstance(fwmark, int) and fwmark > 0:
        return default_name(family, "", "", 0, fwmark)
    if address and isinstance(port, int) and not isinstance(port, bool):
        af = socket.AF_INET6 if ":" in address else socket.AF_INET
        return default_name(af, str(raw.get("protocol", "tcp")), address, port, 0)
    return None


class _Builder:
    def __init__(self, source: str, checked: Checked, report: Report) -> None:
        self.source = source
        self.checked = checked
        self.report = report
        self.line_of = report.line_of

    def error(self, path: Path, message: str, key: bool = False) -> None:
        self.report.add(path, message, key)

    def warn(self, path: Path, message: str) -> None:
        self.report.warn(path, message)

    def clean(self, path: Path) -> bool:
        """Nothing at or under `path` was refused by the schema (so no default stands in for it)."""
        return self.checked.ok(path)

    def seconds(self, value: Any, path: Path, what: str, minimum: int = 1) -> int:
        s = parse_duration(value)
        if s != int(s) or s < minimum:
            self.error(path, f"{what} must be a whole number of seconds, at least {minimum}s (got {value!r})")
            return minimum
        return int(s)

    def tunnel(self, raw: dict[str, Any] | None, base: Tunnel | None, path: Path, known: bool) -> Tunnel:
        t = base or Tunnel()
        if raw is None:
            return t
        t = Tunnel(
            type=raw.get("type", t.type),
            port=int(raw.get("port", t.port)),  # the schema's "integer" admits 6080.0
            checksum=raw.get("checksum", t.checksum),
        )
        if not known or not self.clean(path):
            return t  # a refused type or port: the rules below would judge a default
        inherited = base is not None and base.type == "gue" and not base.port  # reported on the server
        if t.type == "gue" and not t.port and not inherited:
            self.error(path, "a gue tunnel needs `port:` (the GUE UDP port the reals listen on, e.g. 6080)")
        if t.type != "gue" and "port" in raw:
            self.error(path + ("port",), f"`port` only applies to gue tunnels, not {t.type}")
        if t.type == "ipip" and "checksum" in raw and t.checksum != "none":
            self.error(path + ("checksum",), "ipip tunnels carry no checksum; use gue or gre for `checksum`")
        return t

    def real(
        self,
        vs: dict[str, Any],
        v: VirtualServer,
        r: dict[str, Any],
        path: Path,
        vs_tunnel: Tunnel | None,
        vs_path: Path,
        vs_clean: bool,
    ) -> RealServer | None:
        family, address = _address(r["address"])
        forwarding = r.get("forwarding", vs.get("forwarding", "nat"))
        clean = vs_clean and self.clean(path)  # the common case: nothing refused, every value as written
        # the forwarding (and the tunnel) this real really has, when the schema refused none of it
        if clean:
            known = known_family = True
        else:
            if "forwarding" in r or path + ("forwarding",) in self.checked.dropped:
                known = self.clean(path + ("forwarding",))
            else:
                known = self.clean(vs_path + ("forwarding",))
            known_family = v.fwmark == 0 or self.clean(vs_path + ("family",))
        ok = True
        if "tunnel" in r and forwarding != "tunnel" and known:
            self.error(
                path + ("tunnel",),
                f"`tunnel` settings need `forwarding: tunnel` (this real uses {forwarding})",
                key=True,
            )
            ok = False
        tunnel_known = known and (clean or self.clean(vs_path + ("tunnel",)))
        tunnel = (
            self.tunnel(r.get("tunnel"), vs_tunnel, path + ("tunnel",), tunnel_known)
            if forwarding == "tunnel"
            else None
        )
        if family != v.family and forwarding != "tunnel" and known and known_family:
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
            if port != v.port and known:
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
        thresholds = clean or (
            self.clean(path + ("upper_threshold",)) and self.clean(path + ("lower_threshold",))
        )
        if lower and not upper and thresholds:
            self.error(path + ("lower_threshold",), "lower_threshold needs an upper_threshold")
            ok = False
        elif upper and lower > upper and thresholds:
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
            notify_up=tuple(r.get("notify_up") or ()),
            notify_down=tuple(r.get("notify_down") or ()),
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
        vs_clean = self.clean(path)
        scheduler_known = vs_clean or self.clean(path + ("scheduler",))
        flags = tuple(d.get("scheduler_flags", ()))
        for i, flag in enumerate(flags):
            owner = flag.split("-", 1)[0]
            if owner != scheduler and scheduler_known:
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
            engine = str(p.get("engine", ""))
            if engine and d.get("protocol", "tcp") != "udp":
                self.error(pp + ("engine",), "the sip engine reads SIP over UDP: set protocol: udp", key=True)
            persistence = Persistence(timeout, prefix, engine)
        if not fwmark and port == 0 and persistence is None and self.clean(path + ("persistence",)):
            self.error(path + ("port",), "port 0 (all ports) needs `persistence:`, as in ipvsadm -p")
        one_packet = bool(d.get("one_packet", False))
        if one_packet and protocol in ("tcp", "sctp") and self.clean(path + ("protocol",)):
            self.error(
                path + ("one_packet",), f"one_packet only applies to udp (or fwmark) services, not {protocol}"
            )
        vs_forwarding = d.get("forwarding", "nat")
        vs_tunnel = None
        if "tunnel" in d:
            if vs_forwarding != "tunnel":
                if self.clean(path + ("forwarding",)):
                    self.error(
                        path + ("tunnel",),
                        "`tunnel` settings need `forwarding: tunnel` on the virtual server "
                        "(or put them on the reals that tunnel)",
                        key=True,
                    )
            else:
                vs_tunnel = self.tunnel(d["tunnel"], None, path + ("tunnel",), True)
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
        default_raw = d.get("health_check")
        default_check = self.health(default_raw, None, path, path) if default_raw else None
        raw_reals = d.get("reals", ())
        all_built = True  # every real listed was built (so their weights are known)
        for i, r in enumerate(raw_reals):
            rp = path + ("reals", i)
            if rp in self.checked.refused:
                all_built = False
                continue
            real = self.real(d, v, r, rp, vs_tunnel, path, vs_clean)
            if real is None:
                all_built = False
                continue
            override = r.get("health_check")
            if override is None and not vs_clean and not self.clean(rp + ("health_check",)):
                real = replace(real, health=None)  # its own check was refused: not the default either
            elif override is False:
                real = replace(real, health=None)
            elif override:
                real = replace(real, health=self.health(default_raw, override, path, rp))
            elif default_check is not None:
                real = replace(real, health=default_check)  # shared by every real without an override
            h = real.health
            if (
                h is not None
                and not real.port
                and h.port is None
                and h.type not in ("icmp", "script", "file")
                and self.clean(path + ("health_check", "port"))
                and self.clean(rp + ("health_check", "port"))
                and self.clean(rp + ("port",))
            ):
                self.error(
                    rp, f"this real has no port to check (fwmark service): set the {h.type} check's `port`"
                )
            rk = (real.family, real.address, real.port)
            if rk in seen:
                line = self.line_of(seen[rk])
                self.error(
                    rp, f"real server {real.address} port {real.port} is listed twice (first on line {line})"
                )
                continue
            seen[rk] = rp
            reals.append(real)
        discovery = (
            self.discovery(d["discovery"], path + ("discovery",), family, vs_forwarding)
            if "discovery" in d
            else None
        )
        slow_start = parse_duration(d.get("slow_start", 0))
        if slow_start and scheduler in ("mh", "sh") and scheduler_known:
            self.error(
                path + ("slow_start",),
                f"slow_start cannot ramp a real of the {scheduler} scheduler: its weight sizes the real's "
                "share of the hash table, so each step would move connections between reals",
            )
        fallback = f"{scheduler}-fallback"
        inhibited = any(r.health is not None and r.health.on_failure == "inhibit" for r in reals)
        if (
            scheduler in ("mh", "sh")
            and inhibited
            and fallback not in flags
            and scheduler_known
            and self.clean(path + ("scheduler_flags",))
        ):
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
            sorry = self.real(d, v, {"weight": 1, **d["sorry_server"]}, sp, vs_tunnel, path, vs_clean)
            if sorry is not None and (sorry.family, sorry.address, sorry.port) in seen:
                self.error(sp, "the sorry server is also one of the reals: use a separate server")
        quorum = None
        if "quorum" in d or sorry is not None:
            q = d.get("quorum") or {}
            quorum = Quorum(
                int(q.get("min_up", 1)),
                int(q.get("min_weight", 0)),
                int(q.get("hysteresis", 0)),
                tuple(q.get("up_command") or ()),
                tuple(q.get("down_command") or ()),
                bool(q.get("down_on_stop", False)),
            )
            found_later = "discovery" in d  # a quorum of reals a source finds cannot be judged from the list
            if (
                "quorum" in d
                and not found_later
                and self.clean(path + ("quorum",))
                and self.clean(path + ("reals",))
            ):
                weights_known = all_built and self.clean(path + ("weight",))
                self.reachable(
                    quorum, path + ("quorum",), q, len(raw_reals), reals if weights_known else None
                )
        template = RealServer(
            address="", port=0 if fwmark else port, weight=int(d.get("weight", 1)), forwarding=vs_forwarding,
            tunnel=vs_tunnel if vs_forwarding == "tunnel" else None, family=family, health=default_check,
        )  # fmt: skip
        return VirtualServer(
            name=v.name, family=v.family, protocol=v.protocol, address=v.address, port=v.port,
            fwmark=v.fwmark, scheduler=v.scheduler, scheduler_flags=v.scheduler_flags,
            persistence=v.persistence, one_packet=v.one_packet, reals=tuple(reals), path=path,
            quorum=quorum, sorry=sorry, template=template, discovery=discovery, slow_start=slow_start,
        )  # fmt: skip

    def discovery(self, raw: dict[str, Any], path: Path, family: int, forwarding: str) -> Discovery | None:
        if ("dns" in raw) == ("etcd" in raw):
            if self.clean(path + ("dns",)) and self.clean(path + ("etcd",)):
                self.error(path, "discovery needs one source: `dns:` or `etcd:`")
            return None
        debounce, removed = parse_duration(raw.get("debounce", 1)), float(raw.get("max_removed", 0.5))
        if "etcd" in raw:
            e = raw["etcd"]
            if not isinstance(e, dict) or "endpoints" not in e or "prefix" not in e:
                return None  # the schema said why
            members = []
            for i, url in enumerate(e["endpoints"]):
                host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
                if not 0 < int(port) < 65536:
                    self.error(path + ("etcd", "endpoints", i), f"{url}: port {port} is out of range")
                    continue
                members.append((host.strip("[]"), int(port)))
            members_spec = EtcdSpec(tuple(members), e["prefix"], parse_duration(e.get("timeout", 2)))
            return Discovery(etcd=members_spec, debounce=debounce, max_removed=removed)
        dns = raw.get("dns")
        if not isinstance(dns, dict) or "name" not in dns:
            return None  # the schema said why
        import importlib.util

        if importlib.util.find_spec("dns") is None:
            missing = "DNS discovery needs dnspython (Debian package python3-dnspython)"
            self.error(path + ("dns",), missing, key=True)
        rtype = dns.get("type", "AAAA" if family == socket.AF_INET6 else "A")
        gives = socket.AF_INET6 if rtype == "AAAA" else socket.AF_INET if rtype == "A" else family
        dp = path + ("dns",)
        if gives != family and forwarding != "tunnel" and self.clean(dp + ("type",)):
            self.error(
                dp + ("type",),
                f"{rtype} records give {FAMILY_TEXT[gives]} reals, and this is an {FAMILY_TEXT[family]} "
                "virtual server: only tunnel forwarding crosses address families",
            )
        servers = []
        for i, text in enumerate(dns.get("nameservers", ())):
            host, _, port = (
                text.rpartition(":") if text.count(":") == 1 or text.startswith("[") else (text, "", "")
            )
            host = host.strip("[]") if host else text
            try:
                ip = ipaddress.ip_address(host)
                number = int(port) if port else 53
                if not 0 < number < 65536:
                    raise ValueError
            except ValueError:
                self.error(dp + ("nameservers", i), f"{text!r} is not ADDRESS, ADDRESS:PORT or [IPv6]:PORT")
                continue
            servers.append((str(ip), number))
        if len({p for _, p in servers}) > 1:
            self.error(dp + ("nameservers",), "the name servers must share one port (all are asked on one)")
        spec = DnsSpec(
            name=dns["name"], type=rtype, port=dns.get("port"), nameservers=tuple(servers),
            timeout=parse_duration(dns.get("timeout", 2)), min_ttl=parse_duration(dns.get("min_ttl", 1)),
            max_ttl=parse_duration(dns.get("max_ttl", 300)),
        )  # fmt: skip
        if spec.min_ttl > spec.max_ttl:
            self.error(dp + ("min_ttl",), f"min_ttl {spec.min_ttl:g}s is above max_ttl {spec.max_ttl:g}s")
        return Discovery(dns=spec, debounce=debounce, max_removed=removed)

    def reachable(
        self, q: Quorum, path: Path, raw: dict[str, Any], count: int, reals: list[RealServer] | None
    ) -> None:
        """A quorum that no set of the listed reals can reach, or regain once lost (reconcile/health.py:
        up while at least min_up reals and min_weight of weight are up; back at both + hysteresis)."""
        listed = f"there {'is' if count == 1 else 'are'} {count or 'none'}"
        if q.min_up > count:
            self.error(
                path + ("min_up",) if "min_up" in raw else path,
                f"min_up {q.min_up} needs {q.min_up} real{'s' if q.min_up > 1 else ''} up, and {listed}: "
                "the quorum can never be reached",
            )
            return
        if q.hysteresis and q.min_up and q.min_up + q.hysteresis > count:
            self.error(
                path + ("hysteresis",),
                f"min_up {q.min_up} + hysteresis {q.hysteresis} needs {q.min_up + q.hysteresis} reals up to "
                f"come back, and {listed}: once lost the quorum never comes back",
            )
            return
        if reals is None:
            return  # a real's weight is unknown
        # a script check's exit status 2-255 sets the weight to status - 2 while up
        top = sum(max(r.weight, 253) if r.health and r.health.type == "script" else r.weight for r in reals)
        if q.min_weight > top:
            self.error(
                path + ("min_weight",),
                f"min_weight {q.min_weight} is more than the weight of all the reals together ({top}): "
                "the quorum can never be reached",
            )
        elif q.hysteresis and q.min_weight + q.hysteresis > top:
            self.error(
                path + ("hysteresis",),
                f"min_weight {q.min_weight} + hysteresis {q.hysteresis} is more than the weight of all the "
                f"reals together ({top}): once lost the quorum never comes back",
            )

    def health(
        self, default: dict[str, Any] | None, override: dict[str, Any] | None, vs_path: Path, path: Path
    ) -> HealthCheck | None:
        merged = merge(default, override)
        own, base = path + ("health_check",), vs_path + ("health_check",)
        # the keys whose value the schema refused: the real's own, or the default's it did not replace
        unknown = self.checked.taken(own) if override is not None else set()
        unknown |= {k for k in self.checked.taken(base) if override is None or k not in override}
        if base in self.checked.dropped:  # the default was refused (or misspelt): all of it is unknown
            unknown |= {k for k in ("type", "interval", "timeout", *BLOCKS) if k not in (override or ())}
        if override and "type" in override and "type" in self.checked.taken(base):
            # the default's options blocks are for a type that was refused: not for this one
            merged = {k: v for k, v in merged.items() if k not in BLOCKS or k in override}

        def error(sub: tuple[str, ...], message: str) -> None:
            # point at the real's own setting when it made it, else at the default
            where = path if override is not None and (not sub or sub[0] in override) else vs_path
            self.error(where + ("health_check", *sub), message, key=bool(sub) and sub[0] in BLOCKS)

        return build_check(merged, error, unknown)

    def config(self, data: dict[str, Any]) -> Config:
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
        unbuilt: list[str | None] = []  # the addresses of virtual servers not built ("" fwmark, None unknown)
        vs_names = Names()  # every name a reference may use, built or not
        if ("virtual_servers",) in self.checked.dropped:  # refused (or misspelt): unknown ones
            vs_names.complete = False
            unbuilt.append(None)
        for i, d in enumerate(data.get("virtual_servers") or ()):
            path: Path = ("virtual_servers", i)
            # its name is known when the schema refused nothing the name comes from
            named = (
                isinstance(d, dict)
                and self.clean(path + ("name",))
                and ("name" in d or all(self.clean(path + (k,)) for k in _DEFAULT_NAME_FROM))
            )
            if path in self.checked.refused:
                vs_names.add(_known_name(d) if named else None)
                unbuilt.append(_known_address(d) if isinstance(d, dict) else None)
                continue
            v = self.virtual_server(d, path)
            if v is None:
                continue
            vs_names.add(v.name if named else None)
            key = (v.family, v.protocol, v.address, v.port, v.fwmark)
            same_key = self.clean(path + ("protocol",)) and self.clean(path + ("family",))
            if key in keys and same_key:
                line = self.line_of(keys[key])
                self.error(path, f"virtual server {v.name} is defined twice (first on line {line})")
                continue
            if v.name in names and named:
                line = self.line_of(names[v.name])
                self.error(path + ("name",), f"name {v.name!r} is already used on line {line}")
                continue
            if same_key:
                keys[key] = path
            if named:
                names[v.name] = path
            servers.append(v)
        bgp_data = data.get("bgp")
        vrrp, instance_names, vips_known = build_vrrp(
            data.get("vrrp"), self.error, self.line_of, vs_names, self.checked, _local_addresses(bgp_data)
        )
        bgp = build_bgp(
            bgp_data, self.error, self.line_of, servers, instance_names, vs_names, unbuilt, self.checked
        )
        sysctls = tuple((k, int(v)) for k, v in (ipvs.get("sysctl") or {}).items())
        xdp = build_xdp(data.get("xdp"), self.error, self.line_of, servers, unbuilt, self.checked)
        if vips_known is not None:
            self.vips_without_vrrp(servers, vips_known, bgp_data)
        return Config(
            xdp=xdp,
            sysctls=sysctls,
            bgp=bgp,
            source=self.source,
            virtual_servers=tuple(servers),
            timeouts=timeouts,
            drain_timeout=drain,
            vrrp=vrrp,
            connection_sync=self.connection_sync(ipvs.get("connection_sync"), instance_names),
            max_removed_reals=float(ipvs.get("max_removed_reals", 0.5)),
        )

    def vips_without_vrrp(self, servers: list[VirtualServer], vips: set[IPAddress], bgp: Any) -> None:
        """Warn about a virtual address that VRRP does not move while VRRP moves the others: after a
        failover its traffic goes to a node that no longer holds it (or to none)."""
        if not vips:
            return
        announced = []
        for a in (bgp.get("announce") or ()) if isinstance(bgp, dict) else ():
            try:
                announced.append(ipaddress.ip_network(a["prefix"], strict=False))
            except (TypeError, KeyError, ValueError):
                return  # an announcement the schema refused might cover it
        for v in servers:
            if not v.address:
                continue
            ip = ipaddress.ip_address(v.address)
            if ip in vips or any(ip in net for net in announced):
                continue  # BGP announces it
            self.warn(
                v.path + ("address",),
                f"{v.address} is in no VRRP instance's virtual_addresses: the VRRP master does not take it "
                "along, so after a failover its clients reach a node that does not hold it; add it to the "
                "instance that carries this service's traffic",
            )

    def connection_sync(self, raw: dict[str, Any] | None, instances: Names) -> ConnectionSync | None:
        if not raw:
            return None
        path: Path = ("ipvs", "connection_sync")
        follow = raw.get("follow")
        if path + ("follow",) in self.checked.dropped:
            return None
        if follow is None:
            if instances.count != 1:
                n = instances.count
                why = "there are none" if not n else f"there are {n}: {instances.listing()}"
                self.error(path, f"connection_sync follows a VRRP instance: name it with `follow` ({why})")
                return None
            if not instances.known:
                return None  # the only instance's name was refused
            follow = next(iter(instances.known))
        elif instances.missing(follow):
            self.error(
                path + ("follow",), f"no VRRP instance named {follow!r} (instances: {instances.listing()})"
            )
            return None
        return ConnectionSync(raw["interface"], raw.get("sync_id", 0), follow)


def _local_addresses(bgp: Any) -> dict[str, Path]:
    """This node's addresses that the bgp: section names (each peer's local_address)."""
    out: dict[str, Path] = {}
    for i, p in enumerate((bgp.get("peers") or ()) if isinstance(bgp, dict) else ()):
        local = p.get("local_address") if isinstance(p, dict) else None
        try:
            if isinstance(local, str):
                out.setdefault(str(ipaddress.ip_address(local)), ("bgp", "peers", i, "local_address"))
        except ValueError:
            continue
    return out


def build(source: str, checked: Checked, report: Report) -> Config:
    """The typed configuration, its problems and warnings into `report`; refused parts are skipped."""
    data = checked.data if isinstance(checked.data, dict) else {}
    return _Builder(source, checked, report).config(data)
