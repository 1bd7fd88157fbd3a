"""The operations a plan is made of: each one netlink request, described for humans and JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ipvsmgr.ipvs import client
from ipvsmgr.ipvs import constants as c
from ipvsmgr.ipvs.model import (
    FAMILY_NAMES,
    FWD_NAMES,
    TUN_NAMES,
    Destination,
    DestKey,
    Service,
    ServiceKey,
    Timeouts,
)

CHECKSUM_NAMES = {0: "none", 1: "csum", 2: "remcsum"}


def describe_flags(svc: Service) -> list[str]:
    prefix = svc.scheduler + "-"
    out = []
    if svc.flags & c.IP_VS_SVC_F_SCHED1:
        out.append(prefix + "fallback" if svc.scheduler in ("sh", "mh") else "flag-1")
    if svc.flags & c.IP_VS_SVC_F_SCHED2:
        out.append(prefix + "port" if svc.scheduler in ("sh", "mh") else "flag-2")
    if svc.flags & c.IP_VS_SVC_F_SCHED3:
        out.append("flag-3")
    if svc.flags & c.IP_VS_SVC_F_ONEPACKET:
        out.append("one-packet")
    return out


def service_fields(svc: Service) -> dict[str, Any]:
    out: dict[str, Any] = {"scheduler": svc.scheduler, "flags": describe_flags(svc)}
    if svc.flags & c.IP_VS_SVC_F_PERSISTENT:
        out["persistence"] = {"timeout": svc.timeout, "prefix": svc.prefix}
        if svc.pe_name:
            out["persistence"]["engine"] = svc.pe_name
    return out


def service_text(svc: Service) -> str:
    f = service_fields(svc)
    text = f"scheduler {f['scheduler']}"
    if f["flags"]:
        text += " flags " + ",".join(f["flags"])
    if "persistence" in f:
        text += f" persistent {svc.timeout}s/{svc.prefix}"
        if svc.pe_name:
            text += f" engine {svc.pe_name}"
    return text


def dest_fields(d: Destination) -> dict[str, Any]:
    out: dict[str, Any] = {"forwarding": FWD_NAMES.get(d.fwd, str(d.fwd)), "weight": d.weight}
    if d.fwd == c.IP_VS_CONN_F_TUNNEL:
        out["tunnel"] = {
            "type": TUN_NAMES.get(d.tun_type, str(d.tun_type)),
            "port": d.tun_port,
            "checksum": CHECKSUM_NAMES.get(d.tun_flags, str(d.tun_flags)),
        }
    if d.u_thresh or d.l_thresh:
        out["upper_threshold"] = d.u_thresh
        out["lower_threshold"] = d.l_thresh
    return out


def dest_text(d: Destination) -> str:
    f = dest_fields(d)
    text = str(f["forwarding"])
    if "tunnel" in f:
        t = f["tunnel"]
        text += f" {t['type']}" + (f":{t['port']}" if t["port"] else "") + f" checksum {t['checksum']}"
    text += f" weight {d.weight}"
    if d.u_thresh or d.l_thresh:
        text += f" thresholds {d.l_thresh}-{d.u_thresh}"
    return text


def _changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    keys = list(dict.fromkeys([*old, *new]))
    return {k: {"from": old.get(k), "to": new.get(k)} for k in keys if old.get(k) != new.get(k)}


def _change_text(ch: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v['from']} -> {v['to']}" for k, v in ch.items())


@dataclass(frozen=True, slots=True)
class SetTimeouts:
    old: Timeouts
    new: Timeouts

    def request(self) -> client.Request:
        return client.set_timeouts(self.new)

    def text(self) -> str:
        parts = [
            f"{name} {getattr(self.old, name)}s -> {getattr(self.new, name)}s"
            for name in ("tcp", "tcp_fin", "udp")
            if getattr(self.new, name) and getattr(self.new, name) != getattr(self.old, name)
        ]
        return "~ timeouts " + ", ".join(parts)

    def json(self) -> dict[str, Any]:
        return {"op": "set-timeouts", "tcp": self.new.tcp, "tcp_fin": self.new.tcp_fin, "udp": self.new.udp}


@dataclass(frozen=True, slots=True)
class SetSysctl:
    """net.ipv4.vs.NAME: a file write, not a netlink request (the engine runs these first)."""

    name: str
    old: int | None  # None: the kernel lacks it (it will fail, loudly)
    new: int

    def request(self) -> client.Request:
        raise TypeError("a sysctl is written to /proc, not sent over netlink")

    def text(self) -> str:
        return f"~ sysctl net.ipv4.vs.{self.name} {'-' if self.old is None else self.old} -> {self.new}"

    def json(self) -> dict[str, Any]:
        return {"op": "set-sysctl", "name": f"net.ipv4.vs.{self.name}", "from": self.old, "to": self.new}


def _svc_json(key: ServiceKey) -> dict[str, Any]:
    out: dict[str, Any] = {"family": FAMILY_NAMES.get(key.af, str(key.af))}
    if key.fwmark:
        out["fwmark"] = key.fwmark
    else:
        out.update(protocol=str(key).split()[0], address=key.addr, port=key.port)
    return out


@dataclass(frozen=True, slots=True)
class AddService:
    svc: Service
    name: str = ""

    def request(self) -> client.Request:
        return client.new_service(self.svc)

    def text(self) -> str:
        return f"+ service {self.svc.key} {service_text(self.svc)}"

    def json(self) -> dict[str, Any]:
        return {
            "op": "add-service",
            "name": self.name,
            "service": _svc_json(self.svc.key),
            **service_fields(self.svc),
        }


@dataclass(frozen=True, slots=True)
class EditService:
    old: Service
    new: Service
    name: str = ""

    def request(self) -> client.Request:
        return client.set_service(self.new)

    def text(self) -> str:
        ch = _changes(service_fields(self.old), service_fields(self.new))
        return f"~ service {self.new.key} {_change_text(ch)}"

    def json(self) -> dict[str, Any]:
        ch = _changes(service_fields(self.old), service_fields(self.new))
        return {"op": "edit-service", "name": self.name, "service": _svc_json(self.new.key), "changes": ch}


@dataclass(frozen=True, slots=True)
class DeleteService:
    key: ServiceKey
    reason: str

    def request(self) -> client.Request:
        return client.del_service(self.key)

    def text(self) -> str:
        return f"- service {self.key} ({self.reason})"

    def json(self) -> dict[str, Any]:
        return {"op": "delete-service", "service": _svc_json(self.key), "reason": self.reason}


@dataclass(frozen=True, slots=True)
class AddReal:
    service: ServiceKey
    dest: Destination

    def request(self) -> client.Request:
        return client.new_dest(self.service, self.dest)

    def text(self) -> str:
        return f"+ real {self.dest.key} of {self.service} {dest_text(self.dest)}"

    def json(self) -> dict[str, Any]:
        return {
            "op": "add-real",
            "service": _svc_json(self.service),
            "real": {"address": self.dest.key.addr, "port": self.dest.key.port},
            **dest_fields(self.dest),
        }


@dataclass(frozen=True, slots=True)
class EditReal:
    service: ServiceKey
    old: Destination
    new: Destination
    reason: str = ""

    def request(self) -> client.Request:
        return client.set_dest(self.service, self.new)

    def text(self) -> str:
        ch = _changes(dest_fields(self.old), dest_fields(self.new))
        suffix = f" ({self.reason})" if self.reason else ""
        return f"~ real {self.new.key} of {self.service} {_change_text(ch)}{suffix}"

    def json(self) -> dict[str, Any]:
        return {
            "op": "edit-real",
            "service": _svc_json(self.service),
            "real": {"address": self.new.key.addr, "port": self.new.key.port},
            "changes": _changes(dest_fields(self.old), dest_fields(self.new)),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class DeleteReal:
    service: ServiceKey
    key: DestKey
    reason: str

    def request(self) -> client.Request:
        return client.del_dest(self.service, self.key)

    def text(self) -> str:
        return f"- real {self.key} of {self.service} ({self.reason})"

    def json(self) -> dict[str, Any]:
        return {
            "op": "delete-real",
            "service": _svc_json(self.service),
            "real": {"address": self.key.addr, "port": self.key.port},
            "reason": self.reason,
        }


Operation = (
    SetSysctl | SetTimeouts | AddService | EditService | DeleteService | AddReal | EditReal | DeleteReal
)
