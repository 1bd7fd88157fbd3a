"""What the control socket's commands do to a running daemon.

Each command validates its names against the running configuration first
(errors list the valid names), then changes the operator overrides (kept
on disk, see reconcile/overrides.py) or the VRRP service, and wakes the
reconciler. `status` reads the kernel (in a thread) next to the daemon's
view, so what an operator sees is what IPVS does.
"""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import replace
from typing import Any

from ipvsmgr import __version__, dynamic, lookup
from ipvsmgr.control import CommandError, Request
from ipvsmgr.controlled import Controlled
from ipvsmgr.ipvs.model import Destination, DestKey, ServiceKey, Table
from ipvsmgr.reconcile.desired import destination, service_key


async def run(d: Controlled, req: Request) -> Any:
    if req.command == "status":
        return await d.status_cache.get(lambda: status(d))
    try:
        return await _run(d, req)
    finally:
        d.status_cache.invalidate()  # whatever this changed, the next `status` shows it


async def _run(d: Controlled, req: Request) -> Any:
    a = req.args
    try:
        if req.command == "reload":
            force = a.get("force", "no")
            if force not in ("yes", "no"):
                raise CommandError(f"reload: force is 'yes' or 'no', not {force!r}")
            result = await d.reload(force=force == "yes")
            if not result["ok"]:
                problems = "\n".join(result["problems"])
                raise CommandError(f"reload refused, still running the previous configuration:\n{problems}")
            return result
        if req.command in ("drain", "undrain"):
            return drain(d, a["virtual_server"], a["real"], req.command == "drain")
        if req.command in ("disable", "enable"):
            return disable(d, a["virtual_server"], req.command == "disable")
        if req.command in ("drain_node", "undrain_node"):
            return drain_node(d, req.command == "drain_node")
        if req.command in ("vrrp_release", "vrrp_reclaim"):
            return await vrrp_release(d, a["instance"], req.command == "vrrp_release")
        if req.command == "xdp_status":
            return xdp_status(d)
        if req.command in ("xdp_block", "xdp_allow"):
            return xdp_list(d, req.command[4:], a["prefix"], a["action"])
        if req.command == "real_add":
            return await real_add(d, a["virtual_server"], a["real"], a.get("weight"))
        if req.command == "real_remove":
            return await real_remove(d, a["virtual_server"], a["real"])
        if req.command == "real_weight":
            return await real_weight(d, a["virtual_server"], a["real"], a["weight"])
    except (lookup.NotFound, dynamic.Refused) as e:
        raise CommandError(str(e)) from None
    raise CommandError(f"command {req.command} is not handled")  # COMMANDS and this file disagree


def drain(d: Controlled, vs_name: str, real_text: str, on: bool) -> dict[str, Any]:
    assert d.config is not None
    vs = lookup.virtual_server(d.config, vs_name)
    _, dkey = lookup.real(vs, real_text)
    rid = (service_key(vs), dkey)
    drained = d.overrides.drained | {rid} if on else d.overrides.drained - {rid}
    changed = drained != d.overrides.drained
    if changed:
        d.set_overrides(replace(d.overrides, drained=frozenset(drained)))
    return {"virtual_server": vs.name, "real": str(dkey), "drained": on, "changed": changed}


def _weight(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isascii() or not text.isdigit():
        raise dynamic.Refused(f"weight {text!r} is not a whole number (0-{dynamic.MAX_WEIGHT})")
    return dynamic.check_weight(int(text))


def _file_line(d: Controlled, vs: Any, key: DestKey) -> str:
    """' (FILE, reals[N] of VS)' of a real in the file, for errors that send the operator there."""
    assert d.file_config is not None
    for fvs in d.file_config.virtual_servers:
        if fvs.name == vs.name:
            for i, r in enumerate(fvs.reals):
                if destination(r).key == key:
                    return f" ({d.config_path}, reals[{i}] of {vs.name})"
    return f" ({d.config_path})"


async def real_add(d: Controlled, vs_name: str, real_text: str, weight_text: str | None) -> dict[str, Any]:
    """Add a real to a virtual server now, kept across reloads and restarts (overrides.json)."""
    assert d.config is not None
    vs = lookup.virtual_server(d.config, vs_name)
    address, port = dynamic.endpoint(vs, *lookup.parse_endpoint(real_text))
    weight = _weight(weight_text)
    key = service_key(vs)
    new = dynamic.DynamicReal(key, address, port, weight)
    real = dynamic.build(vs, new)  # refused here when the file would refuse it
    dk = destination(real).key
    present = next((r for r in vs.reals if destination(r).key == dk), None)
    if present is not None and present.origin != dynamic.RUNTIME:
        what = "the configuration file" + _file_line(d, vs, dk) if not present.origin else present.origin
        raise CommandError(f"{dk} is already a real of {vs.name!r}, from {what}: change it there")
    o = d.overrides
    added = tuple(a for a in o.added if (a.service, a.key) != (key, dk)) + (new,)
    changed = present is None or present.weight != real.weight
    if changed:
        await d.set_dynamic(replace(o, added=added))
    return {"virtual_server": vs.name, "real": str(dk), "weight": real.weight, "added": present is None,
            "changed": changed, "checked": real.health is not None}  # fmt: skip


async def real_remove(d: Controlled, vs_name: str, real_text: str) -> dict[str, Any]:
    """Remove a real added at run time: drained like a real the file drops, not cut."""
    assert d.config is not None
    vs = lookup.virtual_server(d.config, vs_name)
    r, dk = lookup.real(vs, real_text)
    if r.origin != dynamic.RUNTIME:
        what = "the configuration file" + _file_line(d, vs, dk) if not r.origin else r.origin
        raise CommandError(
            f"{dk} of {vs.name!r} comes from {what}, not `real add`: remove it there "
            f"(or `ipvsmgr drain {vs.name} {dk}`)"
        )
    key = service_key(vs)
    o = d.overrides
    await d.set_dynamic(replace(o, added=tuple(a for a in o.added if (a.service, a.key) != (key, dk))))
    return {"virtual_server": vs.name, "real": str(dk), "removed": True}


async def real_weight(d: Controlled, vs_name: str, real_text: str, weight_text: str) -> dict[str, Any]:
    """Set a real's weight now: a run-time real's entry, or an override of a file real's weight
    that lasts until the file changes that weight."""
    assert d.config is not None and d.file_config is not None
    vs = lookup.virtual_server(d.config, vs_name)
    r, dk = lookup.real(vs, real_text)
    weight = _weight(weight_text)
    assert weight is not None
    key = service_key(vs)
    o = d.overrides
    if r.origin == dynamic.RUNTIME:
        added = tuple(replace(a, weight=weight) if (a.service, a.key) == (key, dk) else a for a in o.added)
        new = replace(o, added=added)
    elif not r.origin:
        fvs = lookup.virtual_server(d.file_config, vs_name)
        file_weight = next(f.weight for f in fvs.reals if destination(f).key == dk)
        kept = tuple(w for w in o.weights if w.real != (key, dk))
        if weight != file_weight:
            kept += (dynamic.WeightSet((key, dk), weight, file_weight),)
        new = replace(o, weights=kept)
    else:
        raise CommandError(f"{dk} of {vs.name!r} comes from {r.origin}: its weight is that source's")
    changed = new != o
    if changed:
        await d.set_dynamic(new)
    return {"virtual_server": vs.name, "real": str(dk), "weight": weight, "was": r.weight, "changed": changed}


def disable(d: Controlled, vs_name: str, on: bool) -> dict[str, Any]:
    assert d.config is not None
    vs = lookup.virtual_server(d.config, vs_name)
    key = service_key(vs)
    disabled = d.overrides.disabled | {key} if on else d.overrides.disabled - {key}
    changed = disabled != d.overrides.disabled
    if changed:
        d.set_overrides(replace(d.overrides, disabled=frozenset(disabled)))
    return {"virtual_server": vs.name, "disabled": on, "changed": changed}


def drain_node(d: Controlled, on: bool) -> dict[str, Any]:
    """Withdraw (or announce again) every BGP route of this node; IPVS keeps
    serving the flows that still arrive, so established connections finish."""
    assert d.config is not None
    if d.config.bgp is None:
        raise CommandError("this node announces nothing: the configuration has no bgp: section")
    changed = d.overrides.node_drained != on
    if changed:
        d.set_overrides(replace(d.overrides, node_drained=on))
    d.bgp.update()
    return {"node_drained": on, "changed": changed, "announced": d.bgp.announced()}


async def vrrp_release(d: Controlled, name: str, on: bool) -> dict[str, Any]:
    assert d.config is not None
    names = sorted(i.name for i in d.config.vrrp.instances)
    if not d.vrrp.running or name not in names:
        raise CommandError(f"no VRRP instance named {name!r} (instances: {', '.join(names) or 'none'})")
    try:
        state = await (d.vrrp.release(name) if on else d.vrrp.reclaim(name))
    except KeyError:
        raise CommandError(f"VRRP instance {name!r} is not running (a failed reload?)") from None
    except OSError as e:  # the VRRP process refused, or is being restarted
        raise CommandError(f"VRRP instance {name!r}: {e}") from None
    released = d.overrides.released | {name} if on else d.overrides.released - {name}
    if released != d.overrides.released:
        d.set_overrides(replace(d.overrides, released=frozenset(released)))
    return {"instance": name, "released": on, "state": state.value}


def xdp_status(d: Controlled) -> dict[str, Any]:
    assert d.config is not None
    if d.config.xdp is None:
        raise CommandError("the XDP guard is not configured: the configuration has no xdp: section")
    return d.xdp.shield.status()


def xdp_list(d: Controlled, which: str, raw: str, action: str) -> dict[str, Any]:
    """Add a source prefix to (or remove it from) the run-time allowlist or blocklist."""
    assert d.config is not None
    if d.config.xdp is None:
        raise CommandError("the XDP guard is not configured: the configuration has no xdp: section")
    actions = ("drop", "tarpit", "remove") if which == "block" else ("add", "remove")
    if action not in actions:
        raise CommandError(f"{which} action must be one of {', '.join(actions)}, not {action!r}")
    try:
        net = ipaddress.ip_network(raw, strict=True)
    except ValueError:
        try:
            fixed = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            raise CommandError(
                f"{raw!r} is not an address or prefix (198.18.7.0/24, 2001:db8::/32)"
            ) from None
        raise CommandError(f"{raw} has host bits set: the prefix is {fixed}") from None
    prefix = str(net)
    o = d.overrides
    allow, blocks = set(o.xdp_allow), dict(o.xdp_block)
    if action == "remove":
        (allow.discard if which == "allow" else lambda p: blocks.pop(p, None))(prefix)
    elif which == "allow":
        allow.add(prefix)
        blocks.pop(prefix, None)  # the last word on a prefix wins
    else:
        blocks[prefix] = action
        allow.discard(prefix)
    new = replace(o, xdp_allow=frozenset(allow), xdp_block=tuple(sorted(blocks.items())))
    changed = new != o
    configured = (
        prefix in d.config.xdp.allowlist if which == "allow" else prefix in dict(d.config.xdp.blocklist)
    )
    if changed:
        d.set_overrides(new)
        d.xdp.sync()
    return {
        "list": which + "list", "prefix": prefix, "action": action, "changed": changed,
        "also_in_config": configured, "guard": d.xdp.state,
    }  # fmt: skip


async def status(d: Controlled) -> dict[str, Any]:
    assert d.config is not None
    table: Table | None = None
    kernel_error = None
    try:
        table = await d.ipvs.table([service_key(vs) for vs in d.config.virtual_servers])
    except OSError as e:
        kernel_error = str(e)
    out: dict[str, Any] = {
        "daemon": {
            "pid": os.getpid(),
            "version": __version__,
            "config": d.config_path,
            "started": d.started,
            "uptime_s": round(time.time() - d.started, 1),
            "last_reload": d.last_reload,
            "last_reconcile": d.ipvs.status(),
            "kernel_error": kernel_error,
            "vrrp_process": d.vrrp.process_status(),
        },
        "virtual_servers": [_vs_status(d, vs, table) for vs in d.config.virtual_servers],
        "health_checks": d.checks.status(),
        "vrrp": d.vrrp.status(),
        "discovery": d.discovery.status(),
        "fleet": d.fleet.status() if d.fleet is not None else None,
        "bgp": d.bgp.status(),
        "xdp": d.xdp.status(),
        "connection_sync": d.sync.status(),
    }
    if d.control is not None:
        out["daemon"]["control_refused"] = dict(d.control.server.refused)
    if d.metrics is not None:
        out["daemon"]["metrics"] = d.metrics.url
    out["daemon"]["counters"] = dict(d.counters)
    return out


def _vs_status(d: Controlled, vs: Any, table: Table | None) -> dict[str, Any]:
    key: ServiceKey = service_key(vs)
    svc = table.services.get(key) if table is not None else None
    kdests: dict[DestKey, Destination] = table.dests.get(key, {}) if table is not None else {}
    reals = []
    members = list(vs.reals) + ([vs.sorry] if vs.sorry is not None else [])
    weights = {w.real: w.weight for w in d.overrides.weights}
    for r in members:
        dk = destination(r).key
        h = d.checks.health.get((key, dk))
        cs = d.checks.state((key, dk)) if h is None and r.health is not None else None
        kd = kdests.get(dk)
        st = kd.stats if kd is not None else None
        reals.append(
            {
                "address": str(dk),
                "sorry_server": r is vs.sorry,
                "configured_weight": r.weight,
                "weight": kd.weight if kd is not None else None,  # None: not in the kernel
                "health": "unchecked" if r.health is None or r is vs.sorry else _health(h, r, cs),
                "reason": h.reason if h is not None else cs.last.reason if cs and cs.last else "",
                "drained": (key, dk) in d.overrides.drained,
                "origin": "sorry_server" if r is vs.sorry else r.origin or "file",  # runtime: `real add`
                "weight_set": weights.get((key, dk)),  # a weight set at run time on a file real
                "active_connections": kd.active_conns if kd is not None else 0,
                "inactive_connections": kd.inact_conns if kd is not None else 0,
                "connections_total": st.conns if st is not None else 0,
                "cps": st.cps if st is not None else 0,
                "in_bytes_per_s": st.inbps if st is not None else 0,
                "out_bytes_per_s": st.outbps if st is not None else 0,
            }
        )
    sst = svc.stats if svc is not None else None
    return {
        "name": vs.name,
        "service": str(key),
        "scheduler": vs.scheduler,
        "in_kernel": svc is not None,
        "quorum": d.quorum.get(key),
        "disabled": key in d.overrides.disabled,
        "connections_total": sst.conns if sst is not None else 0,
        "cps": sst.cps if sst is not None else 0,
        "reals": reals,
    }


def _health(h: Any, r: Any, st: Any) -> str:
    if h is None:  # no transition yet: the checks' own state once one has run (a real that starts down)
        if st is not None and st.last is not None:
            return "up" if st.up else "down"
        return "up" if r.health.start_up else "pending"
    return "up" if h.up else "down"
