"""What ipvsmgr owns, remembered across runs in a small JSON file.

Ownership is how ipvsmgr leaves other tools' services alone: a service is
ours when the configuration declares it, or when an earlier run recorded it
here (so removing it from the configuration removes it from the kernel).
Anything else in the kernel is never touched. Drain start times live here too,
so a drain's deadline survives restarts.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ipvsmgr.ipvs.model import DestKey, ServiceKey
from ipvsmgr.reconcile.diff import DrainKey

DEFAULT_STATE_DIR = "/var/lib/ipvsmgr"
STATE_FILE = "state.json"


@dataclass(slots=True)
class State:
    owned: set[ServiceKey] = field(default_factory=set)
    drain_started: dict[DrainKey, float] = field(default_factory=dict)


def skey_from_json(d: dict[str, Any]) -> ServiceKey:
    return ServiceKey(int(d["af"]), int(d["protocol"]), str(d["addr"]), int(d["port"]), int(d["fwmark"]))


def real_from_json(d: dict[str, Any]) -> DrainKey:
    """{"service": {...}, "af", "addr", "port"}: how both state files name a real."""
    return skey_from_json(d["service"]), DestKey(int(d["af"]), str(d["addr"]), int(d["port"]))


def skey_to_json(k: ServiceKey) -> dict[str, Any]:
    return {"af": k.af, "protocol": k.protocol, "addr": k.addr, "port": k.port, "fwmark": k.fwmark}


class StateStore:
    def __init__(self, directory: str = DEFAULT_STATE_DIR) -> None:
        self.directory = directory
        self.path = os.path.join(directory, STATE_FILE)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the state directory's lock: two applies at once would each
        diff against a kernel the other is changing, and lose ownership records."""
        import fcntl

        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        fd = os.open(os.path.join(self.directory, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def load(self) -> State:
        try:
            with open(self.path, encoding="utf-8") as f:
                raw = json.load(f)
            return State(
                owned={skey_from_json(d) for d in raw.get("owned", [])},
                drain_started={real_from_json(d): float(d["since"]) for d in raw.get("draining", [])},
            )
        except FileNotFoundError:
            return State()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            # Losing this file only means services removed from the config
            # while it was unreadable are left in place: say so, go on.
            print(f"ipvsmgr: warning: ignoring unreadable state file {self.path}: {e}", file=sys.stderr)
            return State()

    def save(self, state: State) -> None:
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        raw = {
            "version": 1,
            "owned": [skey_to_json(k) for k in sorted(state.owned)],
            "draining": [
                {"service": skey_to_json(s), "af": d.af, "addr": d.addr, "port": d.port, "since": since}
                for (s, d), since in sorted(state.drain_started.items())
            ],
        }
        write_json_atomically(self.path, raw)


def write_json_atomically(path: str, raw: Any) -> None:
    """Write, fsync, then rename over `path`: a crash leaves the old file or the new one."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(raw, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
