"""What ipvsmgr owns, remembered across runs in a small JSON file.

Ownership is how ipvsmgr leaves other tools' services alone: a service is
ours when the configuration declares it, or when an earlier run recorded it
here (so removing it from the configuration removes it from the kernel).
Anything else in the kernel is never touched. Drain start times live here too,
so a drain's deadline survives restarts.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ipvsmgr import statefile
from ipvsmgr.ipvs.model import DestKey, ServiceKey
from ipvsmgr.reconcile.diff import DrainKey

log = logging.getLogger("ipvsmgr.state")

DEFAULT_STATE_DIR = "/var/lib/ipvsmgr"
STATE_FILE = "state.json"


@dataclass(slots=True)
class State:
    owned: set[ServiceKey] = field(default_factory=set)
    drain_started: dict[DrainKey, float] = field(default_factory=dict)


def _int(d: Any, key: str) -> int:
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} is {value!r}, not a whole number")
    return int(value)


def _str(d: Any, key: str) -> str:
    value = d[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} is {value!r}, not an address")
    return value


def skey_from_json(d: Any) -> ServiceKey:
    if not isinstance(d, dict):
        raise TypeError(f"a service is {d!r}, not an object")
    return ServiceKey(_int(d, "af"), _int(d, "protocol"), _str(d, "addr"), _int(d, "port"), _int(d, "fwmark"))


def real_from_json(d: Any) -> DrainKey:
    """{"service": {...}, "af", "addr", "port"}: how both state files name a real."""
    if not isinstance(d, dict):
        raise TypeError(f"a real is {d!r}, not an object")
    return skey_from_json(d["service"]), DestKey(_int(d, "af"), _str(d, "addr"), _int(d, "port"))


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
            raw = statefile.read_json(self.path)
            if raw is None:
                return State()
            if not isinstance(raw, dict):
                raise TypeError(f"the file holds a {type(raw).__name__}, not an object")
            return State(
                owned={skey_from_json(d) for d in listed(raw, "owned")},
                drain_started={real_from_json(d): _number(d, "since") for d in listed(raw, "draining")},
            )
        except (statefile.StateFileError, ValueError, KeyError, TypeError) as e:
            # Losing this file only means services removed from the config
            # while it was unreadable are left in place: say so, go on.
            bad = statefile.set_aside(self.path)
            why = e if isinstance(e, statefile.StateFileError) else f"{self.path}: {e!r}"
            log.warning("ignoring the state file: %s%s", why, f" (kept as {bad})" if bad else "")
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
        statefile.write_json(self.path, raw)


def listed(raw: dict[str, Any], key: str) -> list[Any]:
    """raw[key] when it is a list (missing: empty); anything else is a TypeError."""
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise TypeError(f"{key} is a {type(value).__name__}, not a list")
    return value


def _number(d: Any, key: str) -> float:
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key} is {value!r}, not a number")
    return float(value)
