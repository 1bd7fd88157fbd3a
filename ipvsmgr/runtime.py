"""`ipvsmgr run`: the supervisor over the daemon's parts (ipvsmgr/parts/).

It loads the configuration, starts each part in order, and runs the
reconcile loop: check verdicts and operator overrides give a desired IPVS
state (with each service's quorum), which flows to VRRP tracking, BGP and
the kernel. Check transitions and commands wake the loop; a periodic resync
repairs drift and finishes drains. SIGHUP (or `ipvsmgr reload`) loads the
file again in a worker process with budgets, refuses it when invalid, empty
or removing too much (the removal guard), else hands it to every part.
SIGTERM/SIGINT stop the parts and leave the IPVS table as it is, so a
restart is hitless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ipvsmgr import commands, conncap, dynamic, statefile
from ipvsmgr.config import Config, ConfigError, load
from ipvsmgr.config.fragments import DIRECTORY, fragment_paths
from ipvsmgr.config.model import RealServer, VirtualServer
from ipvsmgr.config.worker import load_isolated
from ipvsmgr.control import Request
from ipvsmgr.events import Event, QuorumChanged, RealChanged, VrrpChanged, describe
from ipvsmgr.fleet import FleetSpec
from ipvsmgr.fresh import Fresh
from ipvsmgr.ipvs.model import DestKey, ServiceKey, Table
from ipvsmgr.malloc import trim
from ipvsmgr.parts.base import Hub, Part, StartupError
from ipvsmgr.parts.bgp import BgpPart
from ipvsmgr.parts.connsync import SyncPart
from ipvsmgr.parts.discovery import DiscoveryPart
from ipvsmgr.parts.fleet import FleetPart
from ipvsmgr.parts.health import HealthPart
from ipvsmgr.parts.ipvs import IpvsPart
from ipvsmgr.parts.listeners import ControlPart, MetricsPart
from ipvsmgr.parts.vrrp import VrrpPart
from ipvsmgr.parts.xdp import XdpPart
from ipvsmgr.quorumcmd import Commands
from ipvsmgr.reconcile import guard
from ipvsmgr.reconcile.desired import destination, service_key
from ipvsmgr.reconcile.health import healthy_state
from ipvsmgr.reconcile.overrides import Overrides, OverrideStore
from ipvsmgr.sdnotify import Notifier
from ipvsmgr.sources.gate import Endpoint

if TYPE_CHECKING:
    from ipvsmgr import metrics

__all__ = ["Daemon", "StartupError"]

log = logging.getLogger("ipvsmgr")
STATUS_FRESH = 1.0  # seconds one `status` answer is shared (ipvsmgr/fresh.py); any command resets it
FRAGMENT_POLL = 1.0  # seconds between looks at conf.d/ ...
FRAGMENT_SETTLE = 0.3  # ... and how long a change must hold before it is read
SHOWN_PROBLEMS = 20  # of a refused reload's problems, logged and kept for `status` (then a count)


class Daemon:
    """Starts the parts in order (IPVS first: a kernel without it stops the start
    before anything is attached; the XDP guard before anything announces a VIP;
    the checks before VRRP and BGP decide on them; the listeners last),
    reloads each with a new configuration, stops them (BGP first: it withdraws
    and serves its grace while the rest still run)."""

    def __init__(
        self,
        config_path: str,
        state_dir: str,
        resync: float = 10.0,
        control_socket: str | None = None,
        control_group: str | None = None,
        notifier: Notifier | None = None,
        metrics: tuple[str, int] | None = None,
        remove_on_stop: bool = False,
        force: bool = False,
        log_level: str = "info",
        log_format: str = "text",
        config: Config | None = None,
        fleet: FleetSpec | None = None,
        metrics_compat: tuple[str, ...] | None = None,
        status_token: str | None = None,
    ) -> None:
        self.config_path = config_path
        self.override_store = OverrideStore(state_dir)
        self.hub = Hub(config_path, state_dir, self.override_store.load(), notifier or Notifier(None))
        self.started = time.time()
        self.resync = resync
        self.last_reload: dict[str, Any] | None = None
        self.quorum: dict[ServiceKey, bool] = {}
        self.quorum_commands = Commands()  # quorum_up/down and the reals' notify_up/down
        self._reals_by_key: tuple[Config | None, dict[tuple[ServiceKey, DestKey], RealConfig]] = (None, {})
        self.next_step: float | None = None  # when a ramping weight (slow_start) next changes
        self.stopping = asyncio.Event()
        self.reload_requested = False
        self._reload_lock = asyncio.Lock()
        self.status_cache: Fresh[dict[str, Any]] = Fresh(STATUS_FRESH)  # a burst of `status` shares one
        self._status_text = ""
        self._preloaded = config  # what `run` already loaded and checked: not parsed twice at start
        self.file_config: Config | None = None  # what the file says
        self.config: Config | None = None  # what runs: the file's, with the reals added at run time

        self.xdp = XdpPart(self.hub)
        self.ipvs = IpvsPart(self.hub, force=force, remove_on_stop=remove_on_stop)
        self.checks = HealthPart(self.hub, lambda: self.ipvs.adopted)
        self.vrrp = VrrpPart(self.hub, log_level, log_format)
        self.sync = SyncPart(self.hub, self.ipvs, self.vrrp.state)
        self.discovery = DiscoveryPart(self.hub, self._discovered)
        self.discovered: dict[ServiceKey, tuple[str, tuple[Endpoint, ...]]] = {}
        self.bgp = BgpPart(self.hub, self.vrrp.states)
        self.control = ControlPart(control_socket, self._command, control_group) if control_socket else None
        self.metrics: MetricsPart | None = None
        if metrics:
            from ipvsmgr import compat
            from ipvsmgr.metrics import MetricsServer  # only a daemon that serves metrics loads it

            server = MetricsServer(
                metrics[0], metrics[1], self._snapshot, self.dump,
                compat_kinds=compat.KINDS if metrics_compat is None else metrics_compat,
                status=lambda: self.status_cache.get(lambda: commands.status(self)), token=status_token,
            )  # fmt: skip
            self.metrics = MetricsPart(server)
        self.fleet_spec = fleet
        self.fleet = FleetPart(self.hub, fleet, self.apply_fleet, self._status_line) if fleet else None
        listeners: list[Part] = [p for p in (self.control, self.metrics, self.fleet) if p is not None]
        self.parts: list[Part] = [
            self.ipvs, self.xdp, self.checks, self.discovery, self.sync, self.vrrp, self.bgp, *listeners,
        ]  # fmt: skip
        self.stop_order: list[Part] = [
            self.bgp, self.xdp, *listeners, self.discovery, self.vrrp, self.sync, self.checks, self.ipvs,
        ]  # fmt: skip

        self.hub.events.subscribe(self._on_event)

    # ------------------------------------------------------------ what commands see

    @property
    def overrides(self) -> Overrides:
        return self.hub.overrides

    @property
    def counters(self) -> Counter[str]:
        return self.hub.counters

    @property
    def wake(self) -> asyncio.Event:
        return self.hub.wake

    def set_overrides(self, new: Overrides) -> None:
        self.hub.overrides = new
        self.override_store.save(new)
        self.hub.changed()

    def _found(self, file: Config) -> list[dynamic.DynamicReal]:
        """The reals the discovery sources found, for the services whose source they came from."""
        out = []
        for vs in file.virtual_servers:
            key = service_key(vs)
            entry = self.discovered.get(key)
            if vs.discovery is None or entry is None or entry[0] != vs.discovery.name:
                continue
            for e in entry[1]:
                try:
                    address, port = dynamic.endpoint(vs, e.address, e.port)
                except dynamic.Refused:
                    continue  # said once, when the list was taken (_discovered)
                out.append(dynamic.DynamicReal(key, address, port, e.weight, entry[0]))
        return out

    def _effective(self, file: Config) -> Config:
        """The file's configuration with the run-time reals and weights, and the discovered reals,
        merged in. Run-time entries the file now overrides, or that lost their virtual server, are
        dropped, each with a log line."""
        o = self.overrides
        m = dynamic.merge(file, (*o.added, *self._found(file)), o.weights)
        mine = [d for d in m.shadowed if d.origin == dynamic.RUNTIME]  # a source may list a file real
        for d in mine:
            log.info("real %s of %s is now in the configuration file: the file's entry wins over the one "
                     "added at run time", d.key, _service_name(file, d.service))  # fmt: skip
        for d in m.orphaned:
            if d.origin == dynamic.RUNTIME:
                log.info("real %s added at run time is dropped: its virtual server %s left the "
                         "configuration", d.key, d.service)  # fmt: skip
        refused = [(d, why) for d, why in m.refused if d.origin == dynamic.RUNTIME]
        for d, why in refused:
            log.warning("real %s added at run time is dropped: %s", d.key, why)
        for w in m.stale_weights:
            log.info("weight %d set at run time on real %s is dropped: the configuration file changed its "
                     "weight from %d", w.weight, w.real[1], w.file_weight)  # fmt: skip
        gone = {id(d) for d in (*mine, *m.orphaned, *(d for d, _ in refused))}
        stale = {id(w) for w in m.stale_weights}
        if gone or stale:
            added = tuple(d for d in o.added if id(d) not in gone)
            weights = tuple(w for w in o.weights if id(w) not in stale)
            self.set_overrides(replace(o, added=added, weights=weights))
        return m.config

    async def _rebuild(self) -> None:
        """Reals changed (run time or discovery): the parts that care take the new effective
        configuration at once (the checks start on a new real, IPVS gets it this round)."""
        assert self.file_config is not None and self.config is not None
        old, self.config = self.config, self._effective(self.file_config)
        for part in (self.ipvs, self.checks, self.bgp):  # only reals changed: VIPs, VRRP and XDP did not
            await part.reload(self.config, old)
        self.status_cache.invalidate()
        self.hub.changed()

    async def set_dynamic(self, new: Overrides) -> None:
        """Run-time reals or weights changed (`ipvsmgr real ...`): kept, then applied."""
        self.set_overrides(new)
        await self._rebuild()

    async def _discovered(self, key: ServiceKey, origin: str, endpoints: tuple[Endpoint, ...]) -> None:
        """A source's gate took a new list."""
        self.discovered[key] = (origin, endpoints)
        if self.file_config is None or self.config is None:
            return
        vs = next((v for v in self.file_config.virtual_servers if service_key(v) == key), None)
        if vs is not None:
            for e in endpoints:
                try:
                    dynamic.build(
                        vs, dynamic.DynamicReal(key, *dynamic.endpoint(vs, e.address, e.port), e.weight)
                    )
                except dynamic.Refused as err:
                    self.counters["discovery_refused"] += 1
                    log.warning("%s: %s gives %s, which it cannot take: %s", vs.name, origin, e.address, err)
        await self._rebuild()

    def _prune_overrides(self) -> None:
        """Forget overrides whose real, virtual server or instance left the configuration."""
        assert self.config is not None
        cfg = self.config
        reals = {(service_key(vs), destination(r).key) for vs in cfg.virtual_servers for r in vs.reals}
        services = {service_key(vs) for vs in cfg.virtual_servers}
        instances = {i.name for i in cfg.vrrp.instances}
        pruned = self.overrides.prune(reals, services, instances)
        if pruned != self.overrides:
            self.set_overrides(pruned)

    # ------------------------------------------------------------ reconcile

    async def _reconcile(self) -> None:
        assert self.config is not None
        desired, quorums = healthy_state(self.config, self.checks.health, self.quorum, self.overrides)
        for key, q in quorums.items():
            before = self.quorum.get(key)
            if before is not None and before != q.up:
                reason = f"{q.reals_up} reals up, weight {q.weight_up}"
                name = desired.names.get(key, str(key))
                self.hub.events.emit(QuorumChanged(key, name, q.up, q.reals_up, reason))
                vs = next((v for v in self.config.virtual_servers if service_key(v) == key), None)
                if vs is not None:
                    self.quorum_commands.changed(vs, q.up)
        self.quorum = {k: q.up for k, q in quorums.items()}
        self.vrrp.set_quorums({desired.names.get(k, str(k)): q.up for k, q in quorums.items()})
        self.bgp.update(self.checks.health, quorums)
        self.next_step = desired.next_step  # a slow start under way: reconcile again then
        await self.ipvs.apply(desired)
        self._update_status()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RealChanged) and event.flipped and self.config is not None:
            found = self._real_config(event.service, event.real)
            if found is not None:
                self.quorum_commands.real_changed(*found, event.up)
        if not isinstance(event, VrrpChanged):  # VRRP's are logged where they happen (its process): once
            log.info("%s", describe(event))
        else:
            self.bgp.update()
            self._update_status()  # systemctl status shows the new state now, not at the next resync

    # ------------------------------------------------------------ reload

    def _refuse_reload(self, problems: list[str], guarded: bool, total: int | None = None) -> dict[str, Any]:
        # A hostile file can have 100,000 problems: log and keep the first few, and the count.
        n = len(problems) if total is None else total
        if n > SHOWN_PROBLEMS:
            problems = problems[:SHOWN_PROBLEMS]
            problems.append(
                f"... and {n - SHOWN_PROBLEMS} more (`ipvsmgr check {self.config_path}` lists them all)"
            )
        for p in problems:
            log.error("%s", p)
        what = "the removal guard stopped it" if guarded else f"{n} problem{'' if n == 1 else 's'}"
        log.error("reload refused (%s); still running the previous configuration", what)
        self.last_reload = {"at": time.time(), "ok": False, "problems": problems, "guarded": guarded}
        self.counters["reloads_guarded" if guarded else "reloads_refused"] += 1
        self.hub.notifier.ready(self._status_line())
        return self.last_reload

    async def reload(self, force: bool = False) -> dict[str, Any]:
        """Load the file again; apply it only if valid and the removal guard
        lets it through. The outcome is also kept for `status`."""
        async with self._reload_lock:  # SIGHUP and `ipvsmgr reload` at once: one after the other
            try:
                return await self._reload_locked(force)
            finally:
                self.status_cache.invalidate()

    async def _reload_locked(self, force: bool) -> dict[str, Any]:
        self.hub.notifier.reloading()
        try:
            # In a worker process with a time and memory budget (config/worker.py):
            # the loop goes on, and a huge or hostile file cannot swell the daemon.
            config = await asyncio.to_thread(load_isolated, self.config_path)
        except ConfigError as e:
            shown = [str(p) for p in e.problems[: SHOWN_PROBLEMS + 1]]
            return self._refuse_reload(shown, guarded=False, total=e.total)
        if config.empty:
            return self._refuse_reload([f"{self.config_path}: {guard.EMPTY_FILE}"], guarded=True)
        old, old_file = self.config, self.file_config
        assert old is not None and old_file is not None
        if not force:  # file against file: reals added at run time are not the file's to remove
            removed = guard.removal(
                guard.config_reals(old_file), guard.config_reals(config),
                guard.config_vips(old_file), guard.config_vips(config),
            )  # fmt: skip
            why = guard.refusal(removed, config.max_removed_reals)
            if why is not None:
                return self._refuse_reload([f"{self.config_path}: reload refused: {why}"], guarded=True)
        self.file_config = config
        self.config = self._effective(config)
        self._prune_overrides()
        config = self.config
        for part in self.parts:
            await part.reload(config, old)
        log.info("reloaded %s", self.config_path)
        self.last_reload = {"at": time.time(), "ok": True, "problems": []}
        self.counters["reloads_ok"] += 1
        self.hub.changed()
        self.hub.notifier.ready(self._status_line())
        return self.last_reload

    async def apply_fleet(self, text: str, revision: int) -> tuple[bool, list[str]]:
        """A new revision from the fleet's key: checked as a reload checks the file (in the worker,
        with budgets), then written over the file and reloaded; the file is put back when the reload
        is refused (the removal guard). The problems name `etcd:KEY@REVISION` as their file."""
        assert self.fleet_spec is not None
        label = self.fleet_spec.label(revision)
        staged = f"{self.config_path}.fleet-new"
        await asyncio.to_thread(statefile.write_text, staged, text)
        try:
            await asyncio.to_thread(load_isolated, staged)
        except ConfigError as e:
            with contextlib.suppress(OSError):
                os.unlink(staged)
            shown = [str(p).replace(staged, label) for p in e.problems]
            for p in shown[:SHOWN_PROBLEMS]:
                log.error("%s", p)
            return False, shown
        try:
            with open(self.config_path, encoding="utf-8") as f:
                before: str | None = f.read()
        except OSError:
            before = None
        os.replace(staged, self.config_path)
        result = await self.reload()
        if result["ok"]:
            return True, []
        if before is not None:
            await asyncio.to_thread(statefile.write_text, self.config_path, before)
        return False, [p.replace(self.config_path, label) for p in result["problems"]]

    # ------------------------------------------------------------ main

    async def run(self) -> None:
        self.file_config = self._preloaded or load(self.config_path)  # a ConfigError here ends the start
        self._preloaded = None
        self.discovered = self.discovery.load()  # the last run's lists: a restart does not drain them
        self.config = self._effective(self.file_config)
        trim()  # a load here (no config handed in) leaves its parse as garbage
        self._prune_overrides()
        loop = asyncio.get_running_loop()
        conncap.quiet_loop_errors(loop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._request_reload)
        watchdog: asyncio.Task[None] | None = None
        fragments: asyncio.Task[None] | None = None
        started: list[Part] = []
        try:
            for part in self.parts:
                if part is self.sync:  # a first round first: VRRP and BGP start knowing each quorum
                    await self._reconcile()
                await part.start(self.config)
                started.append(part)
                if part is self.checks:
                    n = self.checks.checks()
                    log.info("running %s: %d check%s", self.config_path, n, "" if n == 1 else "s")
            self.hub.notifier.ready(self._status_line())
            if self.hub.notifier.watchdog > 0:
                watchdog = asyncio.create_task(self._watchdog(), name="watchdog")
            fragments = asyncio.create_task(self._watch_fragments(), name="conf.d")
            await self._loop()
        finally:
            self.hub.notifier.stopping()
            if watchdog is not None:
                watchdog.cancel()
            if fragments is not None:
                fragments.cancel()
            try:
                names = {service_key(v): v.name for v in self.config.virtual_servers} if self.config else {}
                await self.quorum_commands.stop(
                    self.config, {names.get(k, ""): up for k, up in self.quorum.items()}
                )
            except Exception:
                log.exception("quorum commands at stop failed")
            for part in self.stop_order:
                if part in started:
                    try:
                        await part.stop()
                    except Exception:  # one part failing to stop must not leave the others running
                        log.exception("stopping %s failed", part.name)
            if self.ipvs.client is None:  # nothing of IPVS was ours to leave or remove (a VRRP-only node)
                log.info("stopped")
            else:
                removed = self.ipvs.remove_on_stop
                log.info("stopped; IPVS services %s", "removed" if removed else "left in place")

    async def _loop(self) -> None:
        while not self.stopping.is_set():
            await self._reconcile()
            deadline = time.monotonic() + self.resync
            if self.next_step is not None:
                deadline = min(deadline, self.next_step)
            while not self.wake.is_set() and not self.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                waiter = asyncio.ensure_future(self.wake.wait())
                stopper = asyncio.ensure_future(self.stopping.wait())
                await asyncio.wait({waiter, stopper}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
            self.wake.clear()
            if self.reload_requested:
                self.reload_requested = False
                await self.reload()

    def _request_reload(self) -> None:
        self.reload_requested = True
        self.wake.set()

    async def _watch_fragments(self) -> None:
        """Reload when a file in conf.d/ (next to the main file) appears, changes or goes, once
        it has been still for FRAGMENT_SETTLE (an editor's half-written file is not read)."""
        seen = _signature(self.config_path)
        while True:
            await asyncio.sleep(FRAGMENT_POLL)
            now = _signature(self.config_path)
            if now == seen:
                continue
            await asyncio.sleep(FRAGMENT_SETTLE)
            if _signature(self.config_path) != now:
                continue  # still being written: the next round
            seen = now
            log.info("%s changed: reloading", os.path.join(os.path.dirname(self.config_path), DIRECTORY))
            self._request_reload()

    async def _watchdog(self) -> None:
        # From the loop itself: a loop stuck in a callback stops the pings,
        # which is what the watchdog is for.
        while True:
            self.hub.notifier.ping()
            await asyncio.sleep(self.hub.notifier.watchdog / 2)

    async def _command(self, req: Request) -> Any:
        return await commands.run(self, req)

    # ------------------------------------------------------------ metrics and status

    def _snapshot(self) -> metrics.Snapshot:
        """The daemon's state for one scrape (on the loop)."""
        assert self.config is not None
        from ipvsmgr import __version__, metrics

        snap = metrics.Snapshot(version=__version__)
        for vs in self.config.virtual_servers:
            key = service_key(vs)
            snap.services[key] = vs.name
            for r in vs.reals:
                dk = destination(r).key
                h = self.checks.health.get((key, dk))
                st = self.checks.state((key, dk))
                last = st.last if st is not None else None
                if r.health is None:
                    health = "unchecked"
                elif h is None:  # no transition yet: a real that starts down and fails is down
                    health = "pending" if st is None or last is None else "up" if st.up else "down"
                else:
                    health = "up" if h.up else "down"
                duration = last.duration if last is not None else None
                origin = r.origin or "file"
                reason = h.reason if h is not None else last.reason if last is not None else ""
                flips = self.checks.flips[(key, dk)]
                snap.reals.append(
                    metrics.RealView(vs.name, key, dk, r.weight, health, duration, origin, flips, reason)
                )
        snap.quorum = dict(self.quorum)
        snap.counters = dict(self.counters)
        snap.reloads = {r: self.counters[f"reloads_{r}"] for r in ("ok", "refused", "guarded")}
        for part in self.parts:
            part.metrics(snap)
        return snap

    def dump(self) -> Table:
        return self.ipvs.dump()

    def _status_line(self) -> str:
        """One line for systemctl status: what is up, at a glance."""
        if self.config is None:
            return "starting"
        reals = sum(len(vs.reals) for vs in self.config.virtual_servers)
        down = sum(1 for h in self.checks.health.values() if not h.up)
        services = len(self.config.virtual_servers)
        parts = [
            f"{services} virtual server{'' if services == 1 else 's'}",
            f"{reals - down}/{reals} reals up",
        ]
        lost = sum(1 for up in self.quorum.values() if not up)
        if lost:
            parts.append(f"{lost} without quorum")
        stale = sum(1 for w in self.discovery.watches.values() if w.gate.stale)
        if stale:
            parts.append(f"{stale} discovery source{'' if stale == 1 else 's'} stale")
        if self.xdp.configured:
            parts.append(f"XDP {self.xdp.state}")
        if self.vrrp.running:
            parts.append("VRRP " + ", ".join(f"{n} {s}" for n, s in self.vrrp.states().items()))
        return "; ".join(parts)

    def _real_config(self, service: ServiceKey, real: DestKey) -> RealConfig | None:
        """The file's virtual server and real for a real's key (None: a discovered or API real)."""
        assert self.config is not None
        if self._reals_by_key[0] is not self.config:  # built once per configuration
            index = {
                (service_key(vs), destination(r).key): (vs, r)
                for vs in self.config.virtual_servers
                for r in vs.reals
                if r.notify_up or r.notify_down
            }
            self._reals_by_key = (self.config, index)
        return self._reals_by_key[1].get((service, real))

    def _update_status(self) -> None:
        text = self._status_line()
        if text != self._status_text:
            self._status_text = text
            self.hub.notifier.status(text)


RealConfig = tuple[VirtualServer, RealServer]


def _service_name(config: Config, key: ServiceKey) -> str:
    return next((vs.name for vs in config.virtual_servers if service_key(vs) == key), str(key))


def _signature(config_path: str) -> tuple[tuple[str, int, int], ...]:
    """What conf.d/ holds now: each fragment's name, size and modification time."""
    out = []
    for path in fragment_paths(config_path):
        try:
            st = os.stat(path)
        except OSError:
            continue
        out.append((path, st.st_size, st.st_mtime_ns))
    return tuple(out)
