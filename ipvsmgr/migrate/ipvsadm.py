"""`ipvsadm -Sn` output (or the live table) -> ipvsmgr YAML virtual servers.

The rules are ipvsadm's own: -A/-E add a service, -a/-e a real of the
service named on the same line; -t/-u/--sctp-service ADDR:PORT or -f MARK;
-s scheduler, -b flags, -p [timeout] -M netmask for persistence, -o one
packet, --pe engine; reals take -g (DR), -i (tunnel, with --tun-type,
--tun-port and the checksum options), -m (NAT), -w, -x and -y.
"""

from __future__ import annotations

import ipaddress
import shlex
from typing import Any

from ipvsmgr.config.durations import format_duration
from ipvsmgr.ipvs import constants as c
from ipvsmgr.ipvs.model import Table
from ipvsmgr.migrate.findings import Finding
from ipvsmgr.migrate.kaconf import Pos
from ipvsmgr.migrate.keepalived import named_flag

PROTOS = {"-t": "tcp", "--tcp-service": "tcp", "-u": "udp", "--udp-service": "udp",
          "--sctp-service": "sctp"}  # fmt: skip
FWD = {
    "-g": "dr",
    "--gatewaying": "dr",
    "-i": "tunnel",
    "--ipip": "tunnel",
    "-m": "nat",
    "--masquerading": "nat",
}
IPVSADM_DEFAULT_PERSISTENCE = 300  # ipvsadm's -p without a value


def _endpoint(text: str) -> tuple[str, int] | None:
    """198.18.0.1:80 or [2001:db8::1]:80."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.rpartition(":")
    try:
        addr = str(ipaddress.ip_address(host))
    except ValueError:
        return None
    if not port.isdigit() or int(port) > 65535:
        return None
    return addr, int(port)


class _Parser:
    def __init__(self, what: str) -> None:
        self.what = what
        self.findings: list[Finding] = []
        self.services: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.timeouts: dict[str, str] = {}

    def error(self, line: int, message: str) -> None:
        self.findings.append(Finding(Pos(self.what, line), "error", message))

    def note(self, line: int, kind: str, message: str) -> None:
        self.findings.append(Finding(Pos(self.what, line), kind, message))

    def line(self, no: int, text: str) -> None:
        try:
            words = shlex.split(text, comments=True)
        except ValueError as e:
            self.error(no, str(e))
            return
        if not words:
            return
        if words[0] in ("ipvsadm", "/sbin/ipvsadm", "/usr/sbin/ipvsadm"):
            words = words[1:]
        if not words:
            return
        cmd, args = words[0], words[1:]
        if cmd in ("-A", "--add-service", "-E", "--edit-service"):
            self._service(no, args)
        elif cmd in ("-a", "--add-server", "-e", "--edit-server"):
            self._real(no, args)
        elif cmd in ("--set",):
            if len(args) == 3 and all(a.isdigit() for a in args):
                for key, value in zip(("tcp", "tcp_fin", "udp"), args, strict=True):
                    if int(value):
                        self.timeouts[key] = format_duration(float(value))
            else:
                self.error(no, "--set needs three numbers: tcp tcpfin udp")
        elif cmd in ("-C", "--clear", "-Z", "--zero"):
            self.note(no, "note", f"{cmd}: nothing to import")
        else:
            self.error(no, f"unknown ipvsadm command '{cmd}'")

    def _key(self, no: int, args: list[str]) -> tuple[tuple[Any, ...] | None, dict[str, Any], list[str]]:
        """The service key (and its fields) named by -t/-u/--sctp-service/-f; the other words."""
        key: tuple[Any, ...] | None = None
        fields: dict[str, Any] = {}
        rest: list[str] = []
        i = 0
        while i < len(args):
            a = args[i]
            if a in PROTOS or a in ("-f", "--fwmark-service"):
                if i + 1 >= len(args):
                    self.error(no, f"{a} needs a value")
                    return None, fields, rest
                v = args[i + 1]
                if a in PROTOS:
                    ep = _endpoint(v)
                    if ep is None:
                        self.error(no, f"invalid service address '{v}'")
                        return None, fields, rest
                    key = (PROTOS[a], ep[0], ep[1])
                    fields = {"address": ep[0], "port": ep[1], "protocol": PROTOS[a]}
                else:
                    if not v.isdigit() or not 1 <= int(v) <= 0xFFFFFFFF:
                        self.error(no, f"invalid fwmark '{v}'")
                        return None, fields, rest
                    key = ("fwmark", int(v))
                    fields = {"fwmark": int(v)}
                i += 2
            else:
                rest.append(a)
                i += 1
        if key is None:
            self.error(no, "no service given (-t, -u, --sctp-service or -f)")
        return key, fields, rest

    def _service(self, no: int, args: list[str]) -> None:
        key, fields, rest = self._key(no, args)
        if key is None:
            return
        svc = self.services.setdefault(key, {**fields, "_line": no, "reals": []})
        i = 0
        while i < len(rest):
            a = rest[i]
            nxt = rest[i + 1] if i + 1 < len(rest) else None
            if a in ("-s", "--scheduler") and nxt:
                svc["scheduler"] = nxt
                i += 2
            elif a in ("-b", "--sched-flags") and nxt:
                svc["scheduler_flags"] = sorted(set(nxt.split(",")))
                i += 2
            elif a in ("-p", "--persistent"):
                if nxt is not None and nxt.isdigit():
                    svc["persistence"] = {"timeout": format_duration(float(nxt))}
                    i += 2
                else:
                    svc["persistence"] = {"timeout": format_duration(IPVSADM_DEFAULT_PERSISTENCE)}
                    i += 1
            elif a in ("-M", "--netmask") and nxt:
                svc["_netmask"] = nxt
                i += 2
            elif a in ("-o", "--ops"):
                svc["one_packet"] = True
                i += 1
            elif a == "--pe" and nxt:
                if nxt != "sip":
                    self.error(no, f"unknown persistence engine '{nxt}' (IPVS has sip)")
                svc["_engine"] = nxt
                i += 2
            elif a == "-6" or a == "--ipv6":
                svc["family"] = "ipv6"
                i += 1
            else:
                self.error(no, f"unknown option '{a}' for a service")
                i += 1

    def _real(self, no: int, args: list[str]) -> None:
        key, _, rest = self._key(no, args)
        if key is None:
            return
        svc = self.services.get(key)
        if svc is None:
            self.error(no, "a real server for a service not added before it (-A)")
            return
        real: dict[str, Any] = {}
        tunnel: dict[str, Any] = {}
        i = 0
        while i < len(rest):
            a = rest[i]
            nxt = rest[i + 1] if i + 1 < len(rest) else None
            if a in ("-r", "--real-server") and nxt:
                ep = _endpoint(nxt) if ":" in nxt.lstrip("[").rstrip("]") or nxt.startswith("[") else None
                if ep is None:
                    try:
                        ep = (str(ipaddress.ip_address(nxt)), 0)
                    except ValueError:
                        self.error(no, f"invalid real server '{nxt}'")
                        return
                real["address"] = ep[0]
                if ep[1]:
                    real["port"] = ep[1]
                i += 2
            elif a in FWD:
                real["forwarding"] = FWD[a]
                i += 1
            elif a in ("-w", "--weight", "-x", "--u-threshold", "-y", "--l-threshold") and nxt:
                if not nxt.isdigit():
                    self.error(no, f"{a} needs a number")
                    return
                name = {"-w": "weight", "--weight": "weight", "-x": "upper_threshold",
                        "--u-threshold": "upper_threshold"}.get(a, "lower_threshold")  # fmt: skip
                if name == "weight" or int(nxt):
                    real[name] = int(nxt)
                i += 2
            elif a in ("--tun-type", "-T") and nxt in ("ipip", "gue", "gre"):
                tunnel["type"] = nxt
                i += 2
            elif a in ("--tun-port",) and nxt and nxt.isdigit():
                tunnel["port"] = int(nxt)
                i += 2
            elif a in ("--tun-nocsum", "--tun-csum", "--tun-remcsum"):
                tunnel["checksum"] = {"--tun-nocsum": "none", "--tun-csum": "csum"}.get(a, "remcsum")
                i += 1
            else:
                self.error(no, f"unknown option '{a}' for a real server")
                i += 1
        if "address" not in real:
            self.error(no, "a real server needs -r ADDRESS[:PORT]")
            return
        real.setdefault("weight", 1)
        real.setdefault("forwarding", "dr")  # ipvsadm's default for -a is -g
        if tunnel:
            real["tunnel"] = tunnel
        svc["reals"].append(real)


def _finish(p: _Parser) -> dict[str, Any]:
    out = []
    names: set[str] = set()
    for key, svc in p.services.items():
        line = svc.pop("_line")
        mask = svc.pop("_netmask", None)
        engine = svc.pop("_engine", None)
        if engine is not None:
            if "persistence" not in svc:
                p.note(line, "note", f"--pe {engine} without -p: no persistence, engine ignored")
            else:
                svc["persistence"]["engine"] = engine
        if mask is not None:
            if "persistence" not in svc:
                p.note(line, "note", f"-M {mask} without -p: no persistence, netmask ignored")
            elif mask.isdigit():
                svc["persistence"]["prefix"] = int(mask)
            elif mask not in ("255.255.255.255", "128"):
                svc["persistence"]["netmask"] = mask
        svc.setdefault("scheduler", "wlc")  # ipvsadm's default
        if "scheduler_flags" in svc:
            named = [named_flag(svc["scheduler"], f) for f in svc["scheduler_flags"]]
            if None in named:
                p.note(line, "unmapped", f"-b {','.join(svc['scheduler_flags'])}: "
                       f"flags {svc['scheduler']} has no "
                       "use for")  # fmt: skip
            svc["scheduler_flags"] = sorted({f for f in named if f})
            if not svc["scheduler_flags"]:
                del svc["scheduler_flags"]
        base = f"fwmark-{key[1]}" if key[0] == "fwmark" else f"{key[0]}-{key[1]}-{key[2]}".replace(":", "_")
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.add(name)
        entry: dict[str, Any] = {"#": f"from {p.what}:{line}", "name": name}
        entry.update(svc)
        forwarding = {r.get("forwarding") for r in entry["reals"]}
        if len(forwarding) == 1 and entry["reals"]:
            entry["forwarding"] = forwarding.pop()
            for r in entry["reals"]:
                r.pop("forwarding", None)
        entry["reals"] = entry.pop("reals")
        out.append(entry)
    doc: dict[str, Any] = {}
    if p.timeouts:
        doc["ipvs"] = {"timeouts": p.timeouts}
    if out:
        doc["virtual_servers"] = out
    return doc


def convert(text: str, what: str) -> tuple[dict[str, Any], list[Finding]]:
    p = _Parser(what)
    for no, line in enumerate(text.splitlines(), 1):
        p.line(no, line)
    doc = _finish(p)
    return doc, p.findings


def save_lines(table: Table) -> str:
    """The live table in `ipvsadm -Sn` form (what ipvsadm --save prints), to convert like a file."""
    lines = []
    proto = {6: "-t", 17: "-u", 132: "--sctp-service"}
    fwd = {c.IP_VS_CONN_F_MASQ: "-m", c.IP_VS_CONN_F_DROUTE: "-g", c.IP_VS_CONN_F_TUNNEL: "-i"}
    tun = {c.IP_VS_CONN_F_TUNNEL_TYPE_IPIP: "ipip", c.IP_VS_CONN_F_TUNNEL_TYPE_GUE: "gue",
           c.IP_VS_CONN_F_TUNNEL_TYPE_GRE: "gre"}  # fmt: skip
    for key, svc in sorted(table.services.items(), key=lambda kv: str(kv[0])):
        if key.fwmark:
            where = f"-f {key.fwmark}" + (" -6" if key.af == 10 else "")
        else:
            host = f"[{key.addr}]" if key.af == 10 else key.addr
            where = f"{proto.get(key.protocol, '-t')} {host}:{key.port}"
        opts = [f"-s {svc.scheduler}"]
        flags = [n for bit, n in ((c.IP_VS_SVC_F_SCHED1, "flag-1"), (c.IP_VS_SVC_F_SCHED2, "flag-2"),
                                  (c.IP_VS_SVC_F_SCHED3, "flag-3")) if svc.flags & bit]  # fmt: skip
        if flags:
            opts.append("-b " + ",".join(flags))
        if svc.flags & c.IP_VS_SVC_F_PERSISTENT:
            opts.append(f"-p {svc.timeout}")
            full = 128 if key.af == 10 else 32
            if svc.prefix != full:
                opts.append(f"-M {svc.prefix}")
        if svc.flags & c.IP_VS_SVC_F_ONEPACKET:
            opts.append("-o")
        if svc.pe_name:
            opts.append(f"--pe {svc.pe_name}")
        lines.append(f"-A {where} {' '.join(opts)}")
        for dkey, d in sorted(table.dests.get(key, {}).items(), key=lambda kv: str(kv[0])):
            host = f"[{dkey.addr}]" if dkey.af == 10 else dkey.addr
            opt = fwd.get(d.fwd & c.IP_VS_CONN_F_FWD_MASK, "-m")
            real = f"-a {where} -r {host}:{dkey.port} {opt} -w {d.weight}"
            if d.u_thresh:
                real += f" -x {d.u_thresh}"
            if d.l_thresh:
                real += f" -y {d.l_thresh}"
            if opt == "-i" and d.tun_type:
                real += f" --tun-type {tun.get(d.tun_type, 'ipip')}"
                if d.tun_port:
                    real += f" --tun-port {d.tun_port}"
                if d.tun_flags & c.IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM:
                    real += " --tun-remcsum"
                elif d.tun_flags & c.IP_VS_TUNNEL_ENCAP_FLAG_CSUM:
                    real += " --tun-csum"
                else:
                    real += " --tun-nocsum"
            lines.append(real)
    return "\n".join(lines) + "\n"
