"""What the operator decided at run time (drain, disable, VRRP release), kept on disk.

These outlive reloads and restarts until undone: a real drained for
maintenance must not come back because the daemon was restarted. They live
in their own small file, written only by the control socket's commands, so
that the reconciler's state file and these never overwrite each other.
Entries whose real, virtual server or instance leaves the configuration are
dropped by `prune()`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ipvsmgr import statefile
from ipvsmgr.dynamic import MAX_WEIGHT, DynamicReal, WeightSet
from ipvsmgr.ipvs.model import DestKey, ServiceKey
from ipvsmgr.reconcile.state import listed, real_from_json, skey_from_json, skey_to_json

log = logging.getLogger("ipvsmgr.state")

OVERRIDES_FILE = "overrides.json"

RealId = tuple[ServiceKey, DestKey]


@dataclass(frozen=True, slots=True)
class Overrides:
    drained: frozenset[RealId] = frozenset()  # weight 0, no new connections, until undrained
    disabled: frozenset[ServiceKey] = frozenset()  # every real at weight 0
    released: frozenset[str] = frozenset()  # VRRP instances handed over, staying backup
    node_drained: bool = False  # every BGP route withdrawn (drain-node), until undrain-node
    xdp_allow: frozenset[str] = frozenset()  # prefixes allowed at run time (`ipvsmgr xdp allow`)
    xdp_block: tuple[tuple[str, str], ...] = ()  # (prefix, drop | tarpit) blocked at run time
    added: tuple[DynamicReal, ...] = ()  # reals added at run time (`ipvsmgr real add`), in order
    weights: tuple[WeightSet, ...] = ()  # weights set at run time on reals of the file

    def prune(self, reals: set[RealId], services: set[ServiceKey], instances: set[str]) -> Overrides:
        return Overrides(
            frozenset(self.drained & reals),
            frozenset(self.disabled & services),
            frozenset(self.released & instances),
            self.node_drained,
            self.xdp_allow,
            self.xdp_block,
            tuple(a for a in self.added if a.service in services),
            tuple(w for w in self.weights if w.real in reals),
        )


@dataclass(slots=True)
class OverrideStore:
    directory: str
    path: str = field(init=False)

    def __post_init__(self) -> None:
        self.path = os.path.join(self.directory, OVERRIDES_FILE)

    def load(self) -> Overrides:
        """The file's overrides; none when it is missing, and none (with one
        logged line, the file set aside as overrides.json.bad) when it is
        unusable: a start never fails or hangs on it."""
        try:
            raw = statefile.read_json(self.path)
            return Overrides() if raw is None else _overrides(raw)
        except (statefile.StateFileError, ValueError, KeyError, TypeError) as e:
            bad = statefile.set_aside(self.path)
            log.warning(
                "ignoring the overrides file: %s; starting without run-time drains, releases and lists%s",
                e if isinstance(e, statefile.StateFileError) else f"{self.path}: {_why(e)}",
                f" (kept as {bad})" if bad else "",
            )
            return Overrides()

    def save(self, o: Overrides) -> None:
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        raw = {
            "version": 1,
            "drained": [
                {"service": skey_to_json(s), "af": d.af, "addr": d.addr, "port": d.port}
                for s, d in sorted(o.drained)
            ],
            "disabled": [skey_to_json(s) for s in sorted(o.disabled)],
            "vrrp_released": sorted(o.released),
            "node_drained": o.node_drained,
            "xdp_allow": sorted(o.xdp_allow),
            "xdp_block": [{"prefix": p, "action": a} for p, a in o.xdp_block],
            "reals_added": [
                {"service": skey_to_json(a.service), "addr": a.address, "port": a.port, "weight": a.weight}
                for a in o.added
            ],
            "weights_set": [
                {
                    "service": skey_to_json(s),
                    "af": d.af,
                    "addr": d.addr,
                    "port": d.port,
                    "weight": w.weight,
                    "file_weight": w.file_weight,
                }
                for w in o.weights
                for s, d in (w.real,)
            ],  # fmt: skip
        }
        statefile.write_json(self.path, raw)


def _why(e: Exception) -> str:
    if isinstance(e, KeyError):
        return f"an entry lacks {e}"
    return str(e)


def _bool(raw: dict[str, Any], key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise TypeError(f"{key} is {value!r}, not true or false")
    return value


def _strings(raw: dict[str, Any], key: str) -> list[str]:
    values = listed(raw, key)
    if not all(isinstance(v, str) for v in values):
        raise TypeError(f"{key} holds something other than names")
    return values


def _overrides(raw: Any) -> Overrides:
    if not isinstance(raw, dict):
        raise TypeError(f"the file holds a {type(raw).__name__}, not an object")
    blocks = []
    for b in listed(raw, "xdp_block"):
        if (
            not isinstance(b, dict)
            or not isinstance(b.get("prefix"), str)
            or b.get("action") not in ("drop", "tarpit")
        ):
            raise TypeError(f"xdp_block holds {b!r}, not {{prefix, action: drop|tarpit}}")
        blocks.append((b["prefix"], b["action"]))
    added = []
    for a in listed(raw, "reals_added"):
        if not isinstance(a, dict):
            raise TypeError(f"reals_added holds {a!r}, not an object")
        added.append(DynamicReal(skey_from_json(a["service"]), _address(a["addr"]), _port(a["port"]),
                                 _weight(a.get("weight"), True)))  # fmt: skip
    weights = []
    for w in listed(raw, "weights_set"):
        if not isinstance(w, dict):
            raise TypeError(f"weights_set holds {w!r}, not an object")
        weights.append(WeightSet(real_from_json(w), _weight(w["weight"]), _weight(w["file_weight"])))
    return Overrides(
        drained=frozenset(real_from_json(d) for d in listed(raw, "drained")),
        disabled=frozenset(skey_from_json(d) for d in listed(raw, "disabled")),
        released=frozenset(_strings(raw, "vrrp_released")),
        node_drained=_bool(raw, "node_drained"),
        xdp_allow=frozenset(_strings(raw, "xdp_allow")),
        xdp_block=tuple(sorted(blocks)),
        added=tuple(added),
        weights=tuple(weights),
    )


def _address(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"an address is {value!r}, not text")
    return str(ipaddress.ip_address(value))  # ValueError when it is no address


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise TypeError(f"a port is {value!r}, not 0-65535")
    return int(value)


def _weight(value: Any, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WEIGHT:
        raise TypeError(f"a weight is {value!r}, not 0-{MAX_WEIGHT}")
    return value
