"""`ipvsmgr status` as text: the state of the load balancer at a glance."""

from __future__ import annotations

import time
from typing import Any


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _rate(n: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("k", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _vrrp_process(p: dict[str, Any] | None) -> str:
    """' (process 123, SCHED_RR 10)', or why it is not real-time when asked to be."""
    if not p:
        return ""
    parts = [f"process {p['pid']}"]
    if p.get("restarts"):
        parts.append(f"restarted {p['restarts']}x")
    sched = p.get("scheduling") or {}
    if sched.get("policy") == "rr":
        parts.append(f"SCHED_RR {sched['priority']}")
    elif sched.get("wanted"):
        why = sched.get("error") or f"budget ran out {sched.get('demotions', 0)}x"
        parts.append(f"NOT REAL-TIME ({why})")
    return f" ({', '.join(parts)})"


def render(st: dict[str, Any]) -> str:
    d = st["daemon"]
    lines = [f"ipvsmgr {d['version']}, pid {d['pid']}, up {_age(d['uptime_s'])}, config {d['config']}"]
    lr = d.get("last_reload")
    if lr:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lr["at"]))
        if lr["ok"]:
            verdict = "ok"
        elif lr.get("guarded"):
            verdict = f"REFUSED, previous config kept: {lr['problems'][0] if lr['problems'] else ''}"
        else:
            count = len(lr["problems"])
            verdict = f"REFUSED ({count} problem{'' if count == 1 else 's'}, previous config kept)"
        lines.append(f"last reload {when}: {verdict}")
    if d.get("kernel_error"):
        lines.append(f"cannot read IPVS: {d['kernel_error']}")
    hc = st.get("health_checks") or {}
    if hc.get("checks"):
        line = (
            f"health checks: {hc['checks']}, {hc['down']} down; file descriptors {hc['open_fds']} "
            f"(most {hc['open_fds_max']}) of {hc['fd_limit']}"
        )
        if hc.get("not_run"):
            why = ", ".join(f"{n} {x['type']}: {x['reason']}" for x in hc["not_run_by"] for n in [x["runs"]])
            line += f"; NOT RUN {hc['not_run']} ({why})"
        lines.append(line)
    for vs in st["virtual_servers"]:
        flags = []
        if vs["quorum"] is not None:
            flags.append("quorum " + ("up" if vs["quorum"] else "LOST"))
        if vs["disabled"]:
            flags.append("DISABLED")
        if not vs["in_kernel"]:
            flags.append("NOT IN KERNEL")
        lines.append("")
        lines.append(
            f"{vs['name']}  {vs['service']}  {vs['scheduler']}  conns {vs['connections_total']}  "
            f"{vs['cps']}/s" + ("  " + ", ".join(flags) if flags else "")
        )
        rows = [["REAL", "WEIGHT", "HEALTH", "ACTIVE", "INACTIVE", "CPS", "IN/s", "OUT/s", "NOTE"]]
        for r in vs["reals"]:
            weight = "-" if r["weight"] is None else str(r["weight"])
            note = []
            if r["sorry_server"]:
                note.append("sorry server")
            if r["drained"]:
                note.append("drained")
            origin = r.get("origin", "file")
            if origin not in ("file", "sorry_server"):
                note.append("added at run time" if origin == "runtime" else f"from {origin}")
            if r.get("weight_set") is not None:
                note.append("weight set at run time")
            if r["reason"] and r["health"] != "up":
                note.append(r["reason"])
            rows.append(
                [
                    r["address"],
                    f"{weight}/{r['configured_weight']}",
                    r["health"],
                    str(r["active_connections"]),
                    str(r["inactive_connections"]),
                    str(r["cps"]),
                    _rate(r["in_bytes_per_s"]),
                    _rate(r["out_bytes_per_s"]),
                    "; ".join(note),
                ]  # fmt: skip
            )
        lines.extend(_table(rows))
    fleet = st.get("fleet")
    if fleet:
        lines.append("")
        link = "etcd ok" if fleet["connected"] else f"ETCD DOWN: {fleet['error']}"
        runs = fleet["applied"] or "the local file"
        lines.append(f"FLEET {fleet['key']} as {fleet['node']}: runs revision {runs} ({link})")
        if fleet["refused"]:
            lines.append(f"  REFUSED revision {fleet['refused']}:")
            lines += [f"    {p}" for p in fleet["problems"]]
    if st.get("discovery"):
        lines.append("")
        lines.append("DISCOVERY")
        rows = [["VIRTUAL SERVER", "SOURCE", "REALS", "STATE", "NOTE"]]
        for src in st["discovery"]:
            state = f"STALE {src['stale_for_s']}s" if src["stale"] else "ok"
            note = [src["error"]] if src["stale"] else []
            if src["removals_held"]:
                note.append(f"churn limit holds {src['removals_held']} removal(s)")
            rows.append([src["virtual_server"], src["source"], str(src["reals"]), state, "; ".join(note)])
        lines.extend(_table(rows))
    if st["vrrp"]:
        lines.append("")
        lines.append("VRRP" + _vrrp_process(d.get("vrrp_process")))
        rows = [["INSTANCE", "INTERFACE", "VRID", "STATE", "PRIORITY", "MASTER", "NOTE"]]
        for i in st["vrrp"]:
            note = []
            if i.get("released"):
                note.append("released")
            if i.get("faults"):
                note.append("; ".join(i["faults"].values()))
            if i.get("virtual_mac"):
                note.append(f"vmac {i['virtual_mac']}")
            master = "this node" if i["state"] == "master" else (i["master"] or "-")
            rows.append(
                [
                    i["name"],
                    i["interface"],
                    str(i["vrid"]),
                    i["state"].upper(),
                    f"{i['priority']}/{i['configured_priority']}",
                    master,
                    "; ".join(note),
                ]  # fmt: skip
            )
        lines.extend(_table(rows))
    bgp = st.get("bgp")
    if bgp:
        lines.append("")
        running = "not running" if bgp["exabgp_pid"] is None else f"pid {bgp['exabgp_pid']}"
        drained = ", NODE DRAINED (drain-node): every route withdrawn" if bgp["node_drained"] else ""
        lines.append(f"BGP (ExaBGP {running}){drained}")
        rows = [["PEER", "STATE", "SINCE", "NOTE"]]
        now = time.time()
        for address, n in bgp["neighbors"].items():
            rows.append([address, n["state"].upper(), _age(now - n["since"]), n["reason"]])
        lines.extend(_table(rows))
        rows = [["PREFIX", "ANNOUNCED", "WHY"]]
        for prefix, p in bgp["prefixes"].items():
            rows.append([prefix, "yes" if p["announce"] else "NO", p["reason"]])
        lines.extend(_table(rows))
    xdp = st.get("xdp")
    if xdp:
        lines.append("")
        lines.extend(_xdp_head(xdp))
    return "\n".join(lines)


def _xdp_head(x: dict[str, Any]) -> list[str]:
    if x["state"] == "degraded":
        out = [f"XDP guard: DEGRADED, running without it: {x['error']}"]
        out += [f"  {line}" for line in (x.get("verifier_log_tail") or "").splitlines()]
        return out
    if x["state"] != "active":
        return ["XDP guard: off"]
    where = ", ".join(f"{a['name']} ({a['mode']})" for a in x["interfaces"])
    attacked = [v["address"] for v in x["vips"] if v["under_attack"]]
    dropped = sum(c["packets"] for c in x["counters"].values() if c["verdict"] == "drop")
    head = f"XDP guard: program {x.get('program_id')} on {where}; {dropped} packets dropped"
    return [head + (f"; UNDER ATTACK: {', '.join(attacked)}" if attacked else "")]


def render_xdp(x: dict[str, Any]) -> str:
    """`ipvsmgr xdp status`: the guard's state, counters, VIPs and recent drops."""
    lines = _xdp_head(x)
    if x["state"] != "active":
        return "\n".join(lines)
    rows = [["VERDICT", "REASON", "PACKETS", "BYTES"]]
    for reason, c in x["counters"].items():
        if c["packets"]:
            rows.append([c["verdict"], reason, str(c["packets"]), str(c["bytes"])])
    lines += ["", *_table(rows)]
    rows = [["VIP", "SYN/S", "UNDER ATTACK", "ATTACKS"]]
    for v in x["vips"]:
        rows.append(
            [v["address"], str(v["syn_rate"]), "YES" if v["under_attack"] else "no", str(v["attacks"])]
        )
    lines += ["", *_table(rows)]
    line = f"verified sources (passed the challenge): {x.get('verified_sources', 0)}"
    if x.get("challenge"):
        line += f"; challenge: {x['challenge']}"
    budget = x.get("verified_budget")
    if budget and budget[0]:
        line += f"; budget under attack: {budget[0]} SYN/s, bursts of {budget[1]}"
    lines.append(line)
    if x["drop_samples"]:
        rows = [["AGE", "REASON", "SOURCE", "DESTINATION", "PROTO"]]
        for d in x["drop_samples"]:
            src = f"{d['source']}:{d['sport']}" if d["sport"] else d["source"]
            dst = f"{d['destination']}:{d['dport']}" if d["dport"] else d["destination"]
            rows.append([f"{d['age_s']}s", d["reason"], src, dst, str(d["protocol"])])
        lines += ["", "recent drops (sampled):", *_table(rows)]
    return "\n".join(lines)


def render_top(now: dict[str, Any], before: dict[str, Any] | None, elapsed: float) -> str:
    """The status with new connections per second since the previous sample
    (the kernel's own estimates until there is one)."""
    prev: dict[tuple[str, str], int] = {}
    if before is not None:
        for vs in before["virtual_servers"]:
            prev[(vs["name"], "")] = vs["connections_total"]
            for r in vs["reals"]:
                prev[(vs["name"], r["address"])] = r["connections_total"]

    def rate(key: tuple[str, str], total: int, estimate: int) -> str:
        if key not in prev or elapsed <= 0:
            return str(estimate)
        return f"{max(0, total - prev[key]) / elapsed:.1f}"

    d = now["daemon"]
    lines = [
        f"ipvsmgr {d['version']}  pid {d['pid']}  up {_age(d['uptime_s'])}  " + time.strftime("%H:%M:%S")
    ]
    for vs in now["virtual_servers"]:
        q = "" if vs["quorum"] is None else ("  quorum up" if vs["quorum"] else "  quorum LOST")
        cps = rate((vs["name"], ""), vs["connections_total"], vs["cps"])
        lines.append("")
        lines.append(
            f"{vs['name']}  {vs['service']}  {cps} conn/s{q}" + ("  DISABLED" if vs["disabled"] else "")
        )
        rows = [["REAL", "CONN/S", "ACTIVE", "INACTIVE", "WEIGHT", "HEALTH", "IN/s", "OUT/s"]]
        for r in vs["reals"]:
            weight = "-" if r["weight"] is None else str(r["weight"])
            health = r["health"] + (" (drained)" if r["drained"] else "")
            rows.append(
                [
                    r["address"],
                    rate((vs["name"], r["address"]), r["connections_total"], r["cps"]),
                    str(r["active_connections"]),
                    str(r["inactive_connections"]),
                    weight,
                    health,
                    _rate(r["in_bytes_per_s"]),
                    _rate(r["out_bytes_per_s"]),
                ]  # fmt: skip
            )
        lines.extend(_table(rows))
    for i in now["vrrp"]:
        lines.append("")
        lines.append(f"VRRP {i['name']}: {i['state'].upper()} priority {i['priority']}")
    return "\n".join(lines)
