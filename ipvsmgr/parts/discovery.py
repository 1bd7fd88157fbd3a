"""The discovery part: runs each virtual server's source (ipvsmgr/sources/) on its own
schedule, passes what it says through the gate, and hands the gate's list to the daemon.

The lists taken are written to discovered.json in the state directory, so a
restart starts from them (marked stale until the source answers again):
without that, a restart would drain every discovered real until the first
answer, and a source that is down at start would empty the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ipvsmgr import statefile
from ipvsmgr.config import Config
from ipvsmgr.config.model import Discovery, VirtualServer
from ipvsmgr.ipvs.model import ServiceKey
from ipvsmgr.reconcile.desired import service_key
from ipvsmgr.reconcile.state import skey_from_json, skey_to_json
from ipvsmgr.sources import Asked, Source, SourceError, Watched, make
from ipvsmgr.sources.gate import Endpoint, Gate

if TYPE_CHECKING:
    from ipvsmgr.metrics import Snapshot
    from ipvsmgr.parts.base import Hub

log = logging.getLogger("ipvsmgr.discovery")
STATE_FILE = "discovered.json"
RETRY_MIN, RETRY_MAX = 1.0, 10.0  # seconds between asks after a failure, doubling

Apply = Callable[[ServiceKey, str, tuple[Endpoint, ...]], Awaitable[None]]


@dataclass(slots=True)
class Watch:
    name: str  # the virtual server's
    key: ServiceKey
    discovery: Discovery
    source: Source
    gate: Gate
    task: asyncio.Task[None] | None = None
    poke: asyncio.Event = field(default_factory=asyncio.Event)  # the source said something


class DiscoveryPart:
    name = "discovery"

    def __init__(self, hub: Hub, apply: Apply, clock: Callable[[], float] = time.monotonic) -> None:
        self.hub = hub
        self.apply = apply
        self.clock = clock
        self.watches: dict[ServiceKey, Watch] = {}
        self.path = str(Path(hub.state_dir) / STATE_FILE)
        self.saved: dict[ServiceKey, tuple[str, tuple[Endpoint, ...]]] = {}

    # ------------------------------------------------------------ the lists kept on disk

    def load(self) -> dict[ServiceKey, tuple[str, tuple[Endpoint, ...]]]:
        """The lists of the last run (origin, endpoints) per service; none when unusable."""
        try:
            raw = statefile.read_json(self.path)
            self.saved = {} if raw is None else _lists(raw)
        except (statefile.StateFileError, ValueError, KeyError, TypeError) as e:
            bad = statefile.set_aside(self.path)
            log.warning("ignoring %s: %s; discovered reals start empty%s", self.path, e,
                        f" (kept as {bad})" if bad else "")  # fmt: skip
            self.saved = {}
        return dict(self.saved)

    def _save(self) -> None:
        raw = {
            "version": 1,
            "services": [
                {"service": skey_to_json(k), "origin": origin,
                 "reals": [{"addr": e.address, "port": e.port, "weight": e.weight} for e in eps]}
                for k, (origin, eps) in sorted(self.saved.items())
            ],
        }  # fmt: skip
        try:
            os.makedirs(self.hub.state_dir, mode=0o750, exist_ok=True)
            statefile.write_json(self.path, raw)
        except OSError as e:
            log.error("cannot write %s: %s", self.path, e)

    # ------------------------------------------------------------ the part

    async def start(self, config: Config) -> None:
        for vs in config.virtual_servers:
            if vs.discovery is not None:
                self._watch(vs)

    async def reload(self, new: Config, old: Config) -> None:
        wanted = {service_key(vs): vs for vs in new.virtual_servers if vs.discovery is not None}
        for key in list(self.watches):
            w = self.watches[key]
            vs = wanted.get(key)
            if vs is None or vs.discovery != w.discovery:
                self._unwatch(key)
        for key, vs in wanted.items():
            if key not in self.watches:
                self._watch(vs)
            else:
                self.watches[key].name = vs.name
        gone = [k for k in self.saved if k not in wanted]
        for k in gone:
            del self.saved[k]
        if gone:
            self._save()

    async def stop(self) -> None:
        for key in list(self.watches):
            self._unwatch(key)

    def _watch(self, vs: VirtualServer) -> None:
        assert vs.discovery is not None
        key = service_key(vs)
        d = vs.discovery
        gate = Gate(debounce=d.debounce, max_removed=d.max_removed)
        saved = self.saved.get(key)
        if saved is not None and saved[0] == d.name:
            gate.current = saved[1]  # the last run's list, until the source says otherwise
            gate.fail("not asked yet since the start", self.clock())
        w = Watch(vs.name, key, d, make(d, vs.family), gate)
        w.task = asyncio.get_running_loop().create_task(self._run(w), name=f"discovery {vs.name}")
        self.watches[key] = w

    def _unwatch(self, key: ServiceKey) -> None:
        w = self.watches.pop(key)
        if w.task is not None:
            w.task.cancel()

    async def _run(self, w: Watch) -> None:
        """Feed the gate from the source (asked on a schedule, or watched) and take what it lets through."""
        feeder = asyncio.get_running_loop().create_task(
            self._watched(w) if w.source.kind == "etcd" else self._asked(w), name=f"source {w.name}"
        )
        try:
            while True:
                taken = w.gate.step(self.clock())
                if taken is not None:
                    await self._take(w, taken)
                due = w.gate.next_due()
                w.poke.clear()
                timeout = None if due is None else max(0.0, due - self.clock())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(w.poke.wait(), timeout)
                if feeder.done() and not feeder.cancelled() and feeder.exception() is not None:
                    raise feeder.exception()  # type: ignore[misc]
        finally:
            feeder.cancel()

    def _answer(self, w: Watch, found: list[Endpoint]) -> None:
        if w.gate.stale and w.gate.counts.get("failures"):
            log.info("%s: %s answers again", w.name, w.source.describe())
        w.gate.answer(found, self.clock())
        w.poke.set()

    def _fail(self, w: Watch, why: str) -> None:
        if not w.gate.stale:
            log.warning(
                "%s: %s; keeping the last good list (%d reals)", w.name, why, len(w.gate.current or ())
            )
        w.gate.fail(why, self.clock())
        w.poke.set()

    async def _watched(self, w: Watch) -> None:
        source = cast(Watched, w.source)
        await source.watch(lambda found: self._answer(w, found), lambda why: self._fail(w, why))

    async def _asked(self, w: Watch) -> None:
        failures = 0
        while True:
            try:
                found, ttl = await cast(Asked, w.source).fetch()
            except SourceError as e:
                failures += 1
                self._fail(w, str(e))
                wait = min(RETRY_MAX, RETRY_MIN * 2 ** (failures - 1))
            except Exception:  # a bug in one source must not stop the others, or the daemon
                log.exception("%s: %s failed", w.name, w.source.describe())
                failures += 1
                self._fail(w, "internal error (logged)")
                wait = RETRY_MAX
            else:
                failures = 0
                self._answer(w, found)
                wait = ttl
            await asyncio.sleep(wait)

    async def _take(self, w: Watch, endpoints: tuple[Endpoint, ...]) -> None:
        if w.gate.held:
            n = w.gate.held
            log.warning("%s: the churn limit holds back %d removal%s (at most %g of the reals per minute)",
                        w.name, n, "" if n == 1 else "s", w.discovery.max_removed)  # fmt: skip
        log.info("%s: %s gives %d real%s", w.name, w.source.describe(), len(endpoints),
                 "" if len(endpoints) == 1 else "s")  # fmt: skip
        self.saved[w.key] = (w.discovery.name, endpoints)
        self._save()
        await self.apply(w.key, w.discovery.name, endpoints)

    def lists(self) -> dict[ServiceKey, tuple[str, tuple[Endpoint, ...]]]:
        """What each watched service runs now (for the daemon's merge)."""
        return {k: (w.discovery.name, w.gate.current) for k, w in self.watches.items() if w.gate.current}

    # ------------------------------------------------------------ status and metrics

    def status(self) -> list[dict[str, Any]]:
        now = self.clock()
        out = []
        for w in self.watches.values():
            g = w.gate
            out.append({
                "virtual_server": w.name, "source": w.source.describe(), "reals": len(g.current or ()),
                "stale": g.stale, "error": g.error,
                "stale_for_s": None if g.error_since is None else round(now - g.error_since, 1),
                "last_answer_s_ago": None if g.answered is None else round(now - g.answered, 1),
                "removals_held": g.held, "pending": g.pending is not None,
                "answers": g.counts.get("answers", 0), "failures": g.counts.get("failures", 0),
                "changes": g.counts.get("changes", 0),
            })  # fmt: skip
        return out

    def metrics(self, snap: Snapshot) -> None:
        snap.discovery = self.status()


def _lists(raw: Any) -> dict[ServiceKey, tuple[str, tuple[Endpoint, ...]]]:
    import ipaddress

    if not isinstance(raw, dict) or not isinstance(raw.get("services", []), list):
        raise TypeError("not an object with a list of services")
    out = {}
    for s in raw.get("services", []):
        if (
            not isinstance(s, dict)
            or not isinstance(s.get("origin"), str)
            or not isinstance(s.get("reals"), list)
        ):
            raise TypeError(f"a service entry is {s!r}")
        eps = []
        for r in s["reals"]:
            if not isinstance(r, dict) or not isinstance(r.get("addr"), str):
                raise TypeError(f"a real is {r!r}")
            port, weight = r.get("port"), r.get("weight")
            for v in (port, weight):
                if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 65535):
                    raise TypeError(f"a real is {r!r}")
            eps.append(Endpoint(str(ipaddress.ip_address(r["addr"])), port, weight))
        out[skey_from_json(s["service"])] = (s["origin"], tuple(eps))
    return out
