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
from typing import Any

from ipvsmgr.ipvs.model import DestKey, ServiceKey

OVERRIDES_FILE = "overrides.json"

RealId = tuple[ServiceKey, DestKey]


@dataclass(frozen=True, slots=True)
class Overrides:
    drained: frozenset[RealId] = frozenset()  # weight 0, no new connections, until undrained
    disabled: frozenset[ServiceKey] = frozenset()  # every real at weight 0
    released: frozenset[str] = frozenset()  # VRRP instances handed over, staying backup

    def prune(self, reals: set[RealId], services: set[ServiceKey], instances: set[str]) -> Overrides:
        return Overrides(
            frozenset(self.drained & reals),
            frozenset(self.disabled & services),
            frozenset(self.released & instances),
        )


def _skey(d: dict[str, Any]) -> ServiceKey:
    return ServiceKey(int(d["af"]), int(d["protocol"]), str(d["addr"]), int(d["port"]), int(d["fwmark"]))


def _skey_json(k: ServiceKey) -> dict[str, Any]:
    return {"af": k.af, "protocol": k.protocol, "addr": k.addr, "port": k.port, "fwmark": k.fwmark}


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
                drained=frozenset(
                    (_skey(d["service"]), DestKey(int(d["af"]), str(d["addr"]), int(d["port"])))
                    for d in raw.get("drained", [])
                ),
                disabled=frozenset(_skey(d) for d in raw.get("disabled", [])),
                released=frozenset(str(n) for n in raw.get("vrrp_released", [])),
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
                {"service": _skey_json(s), "af": d.af, "addr": d.addr, "port": d.port}
                for s, d in sorted(o.drained)
            ],
            "disabled": [_skey_json(s) for s in sorted(o.disabled)],
            "vrrp_released": sorted(o.released),
        }
        tmp = os.path.join(self.directory, f".overrides.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(raw, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
