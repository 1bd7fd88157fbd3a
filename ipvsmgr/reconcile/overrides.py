"""What the operator decided at run time (drain, disable, VRRP release), kept on disk.

These outlive reloads and restarts until undone: a real drained for
maintenance must not come back because the daemon was restarted. They live
in their own small file, written only by the control socket's commands, so
that the reconciler's state file and these never overwrite each other.
Entries whose real, virtual server or instance leaves the configuration are
dropped by `prune()`.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

from ipvsmgr.ipvs.model import DestKey, ServiceKey
from ipvsmgr.reconcile.state import real_from_json, skey_from_json, skey_to_json, write_json_atomically

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

    def prune(self, reals: set[RealId], services: set[ServiceKey], instances: set[str]) -> Overrides:
        return Overrides(
            frozenset(self.drained & reals),
            frozenset(self.disabled & services),
            frozenset(self.released & instances),
            self.node_drained,
            self.xdp_allow,
            self.xdp_block,
        )


@dataclass(slots=True)
class OverrideStore:
    directory: str
    path: str = field(init=False)

    def __post_init__(self) -> None:
        self.path = os.path.join(self.directory, OVERRIDES_FILE)

    def load(self) -> Overrides:
        try:
            with open(self.path, encoding="utf-8") as f:
                raw = json.load(f)
            return Overrides(
                drained=frozenset(real_from_json(d) for d in raw.get("drained", [])),
                disabled=frozenset(skey_from_json(d) for d in raw.get("disabled", [])),
                released=frozenset(str(n) for n in raw.get("vrrp_released", [])),
                node_drained=bool(raw.get("node_drained", False)),
                xdp_allow=frozenset(str(p) for p in raw.get("xdp_allow", [])),
                xdp_block=tuple(
                    sorted((str(b["prefix"]), str(b["action"])) for b in raw.get("xdp_block", []))
                ),
            )
        except FileNotFoundError:
            return Overrides()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            print(f"ipvsmgr: warning: ignoring unreadable overrides file {self.path}: {e}", file=sys.stderr)
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
        }
        write_json_atomically(self.path, raw)
