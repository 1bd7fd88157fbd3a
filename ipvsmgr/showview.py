"""`ipvsmgr show`: the kernel's IPVS table with rates, named by the configuration.

What `ipvsadm -Ln --rate` shows, plus each service's name from the file,
each real's health when a daemon answers, and the services ipvsmgr does not
own marked as such. Pure: the CLI reads the kernel, the file and the daemon.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ipvsmgr.ipvs.model import FWD_NAMES, TUN_NAMES, DestKey, ServiceKey, Table
from ipvsmgr.statusview import _rate, _table

Health = Mapping[tuple[str, str], str]  # (service, real) as text -> up / down / ...
Origins = Mapping[tuple[str, str], str]  # (service, real) as text -> file / runtime / a source


def rows(
    table: Table, names: Mapping[ServiceKey, str], health: Health | None, origins: Origins | None = None
) -> list[dict[str, Any]]:
    """One dict per kernel service (ours first, in the file's order), reals inside."""
    order = {k: i for i, k in enumerate(names)}
    out = []
    for key in sorted(table.services, key=lambda k: (k not in order, order.get(k, 0), k)):
        svc = table.services[key]
        st = svc.stats
        reals = []
        for dkey, d in sorted(table.dests.get(key, {}).items(), key=lambda kv: _dest_order(kv[0])):
            ds = d.stats
            fwd = FWD_NAMES.get(d.fwd, str(d.fwd))
            if fwd == "tunnel":  # ipip is type 0
                fwd = f"tunnel {TUN_NAMES.get(d.tun_type, d.tun_type)}"
            reals.append(
                {
                    "address": str(dkey),
                    "forwarding": fwd,
                    "weight": d.weight,
                    "active_connections": d.active_conns,
                    "inactive_connections": d.inact_conns,
                    "cps": ds.cps if ds else 0,
                    "in_packets_per_s": ds.inpps if ds else 0,
                    "out_packets_per_s": ds.outpps if ds else 0,
                    "in_bytes_per_s": ds.inbps if ds else 0,
                    "out_bytes_per_s": ds.outbps if ds else 0,
                    "health": None if health is None else health.get((str(key), str(dkey)), "-"),
                    "origin": None if origins is None else origins.get((str(key), str(dkey))),
                }
            )
        out.append(
            {
                "name": names.get(key),
                "service": str(key),
                "scheduler": svc.scheduler,
                "persistence_s": svc.timeout or None,
                "cps": st.cps if st else 0,
                "in_packets_per_s": st.inpps if st else 0,
                "out_packets_per_s": st.outpps if st else 0,
                "in_bytes_per_s": st.inbps if st else 0,
                "out_bytes_per_s": st.outbps if st else 0,
                "connections_total": st.conns if st else 0,
                "reals": reals,
            }
        )
    return out


def _dest_order(k: DestKey) -> tuple[int, str, int]:
    return (k.af, k.addr, k.port)


def render(services: list[dict[str, Any]], notes: list[str]) -> str:
    lines = list(notes)
    if not services:
        lines.append("no IPVS services in this network namespace")
    for s in services:
        name = s["name"] or "(not in the file: not ipvsmgr's)"
        persist = f"  persistent {s['persistence_s']}s" if s["persistence_s"] else ""
        if lines:
            lines.append("")
        lines.append(
            f"{name}  {s['service']}  {s['scheduler']}{persist}  conns {s['connections_total']}  "
            f"{s['cps']} cps  in {s['in_packets_per_s']} pps {_rate(s['in_bytes_per_s'])}B/s  "
            f"out {s['out_packets_per_s']} pps {_rate(s['out_bytes_per_s'])}B/s"
        )
        if not s["reals"]:
            lines.append("  (no reals)")
            continue
        table = [
            ["REAL", "FORWARD", "WEIGHT", "ACTIVE", "INACTIVE", "CPS", "IN PPS", "OUT PPS", "IN/s", "OUT/s"]
        ]
        with_health = any(r["health"] is not None for r in s["reals"])
        if with_health:
            table[0].append("HEALTH")
        for r in s["reals"]:
            row = [
                r["address"], r["forwarding"], str(r["weight"]), str(r["active_connections"]),
                str(r["inactive_connections"]), str(r["cps"]), str(r["in_packets_per_s"]),
                str(r["out_packets_per_s"]), _rate(r["in_bytes_per_s"]), _rate(r["out_bytes_per_s"]),
            ]  # fmt: skip
            if with_health:
                origin = r.get("origin")
                tag = "" if origin in (None, "file", "sorry_server") else f" ({origin})"  # runtime: real add
                row.append((r["health"] or "-") + tag)
            table.append(row)
        lines.extend(_table(table))
    return "\n".join(lines)
