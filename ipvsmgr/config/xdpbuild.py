"""The `xdp:` section: schema-valid data to an XdpConfig, with the cross-field rules.

Rules a schema cannot say: list prefixes have no host bits and appear once,
a prefix is not both allowed and blocked, the burst holds at least one
second of the rate, and there is something to guard: a virtual server with
an address (fwmark services have none the program could match), or a
service in `protect` (a guard-only node).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from ipvsmgr.config.durations import parse_duration
from ipvsmgr.config.errors import Path
from ipvsmgr.config.model import VirtualServer, XdpConfig
from ipvsmgr.config.schema import Checked

Error = Callable[[Path, str], None]
Locate = Callable[[Path], str]  # the line a path is on (Report.line_of: filled in with the positions)


def _prefix(raw: str, path: Path, error: Error) -> str | None:
    try:
        return str(ipaddress.ip_network(raw, strict=True))
    except ValueError:
        fixed = ipaddress.ip_network(raw, strict=False)
        error(path, f"{raw} has host bits set: the prefix is {fixed}")
        return None


def build_xdp(
    data: Any,
    error: Error,
    line_of: Locate,
    servers: Sequence[VirtualServer],
    unbuilt: Sequence[str | None],
    checked: Checked,
) -> XdpConfig | None:
    """The section; `unbuilt` holds the addresses of the virtual servers not built ("" for fwmark,
    None when unknown)."""
    if not isinstance(data, dict):
        return None
    protect: list[tuple[str, int, str]] = []
    for i, item in enumerate(data.get("protect") or ()):
        if checked.ok(("xdp", "protect", i)) and isinstance(item, dict):
            address = str(ipaddress.ip_address(item["address"]))
            protect.append((address, int(item["port"]), item.get("protocol", "tcp")))
    if not any(v.address for v in servers) and not any(a != "" for a in unbuilt) and not data.get("protect"):
        error(
            ("xdp",),
            "nothing to guard: no virtual server has an address, and xdp.protect lists no service "
            "(a guard-only node lists its services there)",
        )
        return None
    seen: dict[str, Path] = {}

    def once(prefix: str, path: Path) -> bool:
        if prefix in seen:
            where = "allowlist" if seen[prefix][1] == "allowlist" else "blocklist"
            error(path, f"{prefix} is already in the {where} on line {line_of(seen[prefix])}")
            return False
        seen[prefix] = path
        return True

    allow: list[str] = []
    for i, raw in enumerate(data.get("allowlist") or ()):
        path: Path = ("xdp", "allowlist", i)
        p = _prefix(raw, path, error)
        if p is not None and once(p, path):
            allow.append(p)
    block: list[tuple[str, str]] = []
    for i, item in enumerate(data.get("blocklist") or ()):
        path = ("xdp", "blocklist", i)
        raw, action = (
            (item, "drop") if isinstance(item, str) else (item["prefix"], item.get("action", "drop"))
        )
        if not isinstance(item, str):
            path = path + ("prefix",)
        p = _prefix(raw, path, error)
        if p is not None and once(p, path):
            block.append((p, action))

    rate = int(data.get("syn_rate_per_source", 0))
    burst = int(data.get("syn_burst_per_source", 2 * rate))
    rates_known = checked.ok(("xdp", "syn_rate_per_source")) and checked.ok(("xdp", "syn_burst_per_source"))
    if rate and burst < rate and rates_known:
        error(
            ("xdp", "syn_burst_per_source"),
            f"a burst of {burst} is less than one second of the {rate}/s rate: make it at least {rate}",
        )
    attack = data.get("attack") or {}
    hold = parse_duration(attack.get("hold", 10))
    if hold < 1:
        error(("xdp", "attack", "hold"), f"attack mode must hold for at least 1s, not {attack['hold']!r}")
    ttl = parse_duration(attack.get("verified_ttl", 600))
    if ttl < 1:
        error(
            ("xdp", "attack", "verified_ttl"), f"verified_ttl is at least 1s, not {attack['verified_ttl']!r}"
        )
    challenge = attack.get("challenge", True)
    if isinstance(challenge, bool):  # the older boolean form: true is the default test
        challenge = "retransmit" if challenge else "off"
    budget = int(attack.get("verified_syn_rate", 50))
    budget_burst = int(attack.get("verified_syn_burst", 2 * budget))
    if budget and budget_burst < budget and checked.ok(("xdp", "attack", "verified_syn_burst")):
        error(
            ("xdp", "attack", "verified_syn_burst"),
            f"a burst of {budget_burst} is less than one second of the {budget}/s budget: "
            f"make it at least {budget}",
        )
    if ("xdp",) in checked.refused:
        return None  # the interfaces were refused: checked as far as it goes
    return XdpConfig(
        interfaces=tuple(data["interfaces"]),
        protect=tuple(protect),
        mode=data.get("mode", "auto"),
        object=data.get("object"),
        pin_path=data.get("pin_path", "/sys/fs/bpf/ipvsmgr"),
        syn_rate_per_source=rate,
        syn_burst_per_source=burst,
        attack_syn_rate=int(attack.get("syn_rate", 0)),
        attack_hold=hold,
        challenge=challenge,
        verified_ttl=ttl,
        verified_syn_rate=budget,
        verified_syn_burst=budget_burst,
        allowlist=tuple(allow),
        blocklist=tuple(block),
        drop_sample_every=int(data.get("drop_sample_every", 64)),
    )
