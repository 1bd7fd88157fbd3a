"""`ipvsmgr run`: health checks drive the IPVS table, in one asyncio loop.

Check transitions wake the reconciler; a periodic resync repairs drift and
finishes drains. SIGHUP reloads the configuration (an invalid file is
reported and the running one kept; unchanged checks keep their state).
SIGTERM/SIGINT stop the checks and leave the IPVS table as it is, so a
restart is hitless: on start, a checked real the kernel already has with a
weight above 0 starts up instead of waiting for `rise` passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar, cast

from healthchecks.hysteresis import Transition
from healthchecks.result import Result, Target
from healthchecks.scheduler import ScheduledCheck, Scheduler
from ipvsmgr import commands, syncd
from ipvsmgr.config import Config, ConfigError, load
from ipvsmgr.config.model import BgpConfig, ConnectionSync
from ipvsmgr.config.worker import load_isolated
from ipvsmgr.control import ControlServer, Request
from ipvsmgr.events import EventBus, QuorumChanged, RealChanged, VrrpChanged, describe
from ipvsmgr.fresh import Fresh
from ipvsmgr.ipvs.client import IPVSClient
from ipvsmgr.ipvs.model import ServiceKey, Table
from ipvsmgr.reconcile import engine, guard
from ipvsmgr.reconcile.desired import Desired, destination, service_key
from ipvsmgr.reconcile.health import QuorumState, RealHealth, RealId, healthy_state
from ipvsmgr.reconcile.operations import DeleteReal
from ipvsmgr.reconcile.overrides import Overrides, OverrideStore
from ipvsmgr.reconcile.state import StateStore
from ipvsmgr.sdnotify import Notifier
from ipvsmgr.xdpshield import XdpShield, tables_for

if TYPE_CHECKING:
    from ipvsmgr import metrics
    from ipvsmgr.bgp.routes import Decision
    from ipvsmgr.bgp.speaker import Speaker
    from ipvsmgr.bgp.vips import VipHolder
    from ipvsmgr.metrics import MetricsServer
    from vrrp.remote import VrrpProcess

log = logging.getLogger("ipvsmgr")
T = TypeVar("T")
STATUS_FRESH = 1.0  # seconds one `status` answer is shared (ipvsmgr/fresh.py); any command resets it
SHOWN_PROBLEMS = 20  # of a refused reload's problems, logged and kept for `status` (then a count)


def _checked_reals(config: Config) -> Iterator[tuple[RealId, ScheduledCheck]]:
    for vs in config.virtual_servers:
        skey = service_key(vs)
        for r in vs.reals:
            h = r.health
            if h is None:
                continue
            key = (skey, destination(r).key)
            target = Target(h.address or r.address, h.port or r.port, h.source)
            spec = ScheduledCheck(
                key=key, checker=h.checker, target=target, interval=h.interval, timeout=h.timeout,
                rise=h.rise, fall=h.fall, jitter=h.jitter, retries=h.retries,
                retry_delay=h.retry_delay, initially_up=h.start_up,
            )  # fmt: skip
            yield key, spec


def _all_reals(config: Config) -> Iterator[tuple[RealId, object]]:
    for vs in config.virtual_servers:
        skey = service_key(vs)
        for r in vs.reals:
            yield (skey, destination(r).key), r


def _libc_trim() -> Callable[[], object]:
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return lambda: None
    return lambda: fn(0)


# Give free heap pages back after a big dump: glibc keeps them in the arena
# otherwise, and the daemon's RSS would stay at its largest table read.
_trim = _libc_trim()


class StartupError(Exception):
    """The daemon cannot start as configured (the message says why); nothing of it is left running."""


class Daemon:
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
    ) -> None:
        self.config_path = config_path
        self.log_level, self.log_format = log_level, log_format  # the VRRP process logs as we do
        self.force = force  # start even if the removal guard objects
        self.store = StateStore(state_dir)
        self.override_store = OverrideStore(state_dir)
        self.overrides = self.override_store.load()
        self.notifier = notifier or Notifier(None)
        self.control = ControlServer(control_socket, self._command, control_group) if control_socket else None
        self.started = time.time()
        self.last_reload: dict[str, Any] | None = None
        self.last_round: dict[str, Any] = {}
        self._status_text = ""
        self.remove_on_stop = remove_on_stop
        self.counters: Counter[str] = Counter()
        self._client_lock = threading.Lock()
        self._kernel_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipvs")
        self._dirty = True  # something changed since the last reconcile (else its operations are drift)
        self.metrics: MetricsServer | None = None
        if metrics:
            # prometheus_client is optional ("metrics" extra): only a daemon that serves metrics needs it.
            from ipvsmgr.metrics import MetricsServer

            self.metrics = MetricsServer(metrics[0], metrics[1], self._snapshot, self._dump)
        self._metrics_client: IPVSClient | None = None
        self.sync_role: str | None = None  # the connection-sync role wanted now
        self.sync_daemons: list[str] = []  # as last applied, for status
        self._sync_task: asyncio.Task[None] | None = None
        self.resync = resync
        self.health: dict[RealId, RealHealth] = {}
        self.quorum: dict[ServiceKey, bool] = {}
        self.initially_up: dict[RealId, bool] = {}
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self.reload_requested = False
        self._reload_lock = asyncio.Lock()
        self.status_cache: Fresh[dict[str, Any]] = Fresh(STATUS_FRESH)  # a burst of `status` shares one
        self.scheduler = Scheduler()
        self.scheduler.subscribe(self._on_transition)
        self.events = EventBus()
        # VRRP transitions are logged where they happen, in the VRRP process: once.
        self.events.subscribe(lambda e: None if isinstance(e, VrrpChanged) else log.info("%s", describe(e)))
        self.events.subscribe(self._on_event)
        self.client: IPVSClient | None = None
        self._preloaded = config  # what `run` already loaded and checked: not parsed twice at start
        self.config: Config | None = None
        self.vrrp: VrrpProcess | None = None
        self._vrrp_reload = False
        self.quorum_states: dict[ServiceKey, QuorumState] = {}
        self.state_dir = state_dir
        self.bgp: Speaker | None = None
        self.bgp_vips: VipHolder | None = None
        self._bgp_settled = False  # every checked real had its first verdict since start
        self._bgp_settle_by = 0.0
        self.bgp_decisions: dict[str, Decision] = {}
        self.xdp = XdpShield()

    # ------------------------------------------------------------ checks

    def _on_transition(self, key: object, t: Transition, result: Result) -> None:
        rid: RealId = key  # type: ignore[assignment]
        reason = t.reason or result.reason
        self.health[rid] = RealHealth(t.up, t.weight, reason)
        self._dirty = True
        self.events.emit(RealChanged(rid[0], rid[1], t.up, reason, t.weight))
        self.wake.set()

    def _schedule(self, config: Config, kernel_up: set[RealId]) -> None:
        specs = []
        for key, spec in _checked_reals(config):
            if key not in self.initially_up:  # decided once per real, so reloads keep the spec equal
                self.initially_up[key] = spec.initially_up or key in kernel_up
            up = self.initially_up[key]
            if up != spec.initially_up:
                spec = dataclasses.replace(spec, initially_up=up)
            specs.append(spec)
        summary = self.scheduler.update(specs)
        for gone in summary.removed:
            rid = cast(RealId, gone)
            self.health.pop(rid, None)
            self.initially_up.pop(rid, None)
        for new in summary.added:
            rid = cast(RealId, new)
            if self.initially_up.get(rid):
                self.health[rid] = RealHealth(True, None, "in the kernel at start")

    # ------------------------------------------------------------ reconcile

    def _apply(self, desired: Desired, drain_timeout: float) -> engine.Round:
        assert self.client is not None
        with self.store.locked():
            rnd = engine.plan_desired(desired, drain_timeout, self.client, self.store)
            return engine.apply(rnd, self.client, self.store)

    async def _reconcile(self) -> None:
        assert self.config is not None
        desired, quorums = healthy_state(
            self.config,
            self.health,
            self.quorum,
            self.overrides,
        )
        for key, q in quorums.items():
            before = self.quorum.get(key)
            if before is not None and before != q.up:
                reason = f"{q.reals_up} reals up, weight {q.weight_up}"
                self.events.emit(
                    QuorumChanged(key, desired.names.get(key, str(key)), q.up, q.reals_up, reason)
                )
        self.quorum = {k: q.up for k, q in quorums.items()}
        self.quorum_states = quorums
        if self.vrrp is not None:
            for key, q in quorums.items():
                self.vrrp.set_virtual_server(desired.names.get(key, str(key)), q.up)
        self.update_bgp()
        if self.client is None:
            return
        dirty, self._dirty = self._dirty, False
        self.counters["reconcile_rounds"] += 1
        try:
            rnd = await self.kernel(self._apply, desired, self.config.drain_timeout)
        except OSError as e:
            self.counters["reconcile_errors"] += 1
            log.error("reconcile failed: %s", e)
            return
        except Exception:  # a bug in one round must not take the VIPs and checks down with it
            self.counters["reconcile_errors"] += 1
            log.exception("reconcile failed")
            return
        ops = len(rnd.plan.operations)
        self.counters["reconcile_operations"] += ops - len(rnd.failures)
        self.counters["reconcile_errors"] += len(rnd.failures)
        # With nothing changed here, operations mean the kernel drifted (someone ran
        # ipvsadm); deleting a real whose drain ended is planned, not drift.
        drift = 0 if dirty else sum(1 for op in rnd.plan.operations if not isinstance(op, DeleteReal))
        if drift:
            self.counters["reconcile_drift_repairs"] += drift
            log.warning("resync repaired drift: %d operations with nothing changed here", drift)
        for op in rnd.plan.operations:
            log.info("%s", op.text())
        for op, failure in rnd.failures:
            log.error("kernel refused %s: %s", op.text(), failure)
        self.last_round = {
            "at": time.time(), "operations": len(rnd.plan.operations), "failures": len(rnd.failures),
        }  # fmt: skip
        self._update_status()

    def _start_refusal(self) -> str | None:
        """The removal guard at start: the file against what the kernel holds of ours
        (a restart with a wrong file must not wipe the table the last run left)."""
        assert self.client is not None and self.config is not None
        owned = self.store.load().owned
        if not owned:
            return None
        table = self.client.table(only=owned, stats=False)
        removed = guard.removal(guard.kernel_reals(table, owned), guard.config_reals(self.config))
        return guard.refusal(removed, self.config.max_removed_reals)

    def _kernel_up(self) -> set[RealId]:
        assert self.client is not None
        table = self.client.table(stats=False)
        return {
            (skey, dkey) for skey, dests in table.dests.items() for dkey, d in dests.items() if d.weight > 0
        }

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
        self.notifier.ready(self._status_line())
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
        self.notifier.reloading()
        try:
            # In a worker process with a time and memory budget (config/worker.py):
            # the loop goes on, and a huge or hostile file cannot swell the daemon.
            config = await asyncio.to_thread(load_isolated, self.config_path)
        except ConfigError as e:
            shown = [str(p) for p in e.problems[: SHOWN_PROBLEMS + 1]]
            return self._refuse_reload(shown, guarded=False, total=e.total)
        if config.empty:
            return self._refuse_reload([f"{self.config_path}: {guard.EMPTY_FILE}"], guarded=True)
        if self.config is not None and not force:
            removed = guard.removal(
                guard.config_reals(self.config), guard.config_reals(config),
                guard.config_vips(self.config), guard.config_vips(config),
            )  # fmt: skip
            why = guard.refusal(removed, config.max_removed_reals)
            if why is not None:
                return self._refuse_reload([f"{self.config_path}: reload refused: {why}"], guarded=True)
        old = self.config
        self.config = config
        self._schedule(config, set())
        if old is None or old.vrrp != config.vrrp:
            self._vrrp_reload = True
        if old is None or old.connection_sync != config.connection_sync:
            follow = config.connection_sync.follow if config.connection_sync else None
            state = None
            if self.vrrp is not None and follow is not None:
                with contextlib.suppress(KeyError):
                    state = self.vrrp.state(follow).value
            self._want_sync(None if config.connection_sync is None else syncd.role_for(state or "backup"))
        self._prune_overrides()
        self._reload_bgp(old.bgp if old is not None else None)
        self._reload_xdp(old)
        log.info("reloaded %s", self.config_path)
        self.last_reload = {"at": time.time(), "ok": True, "problems": []}
        self.counters["reloads_ok"] += 1
        self._dirty = True
        self.wake.set()
        self.notifier.ready(self._status_line())
        return self.last_reload

    # ------------------------------------------------------------ main

    async def _start_vrrp(self) -> None:
        assert self.config is not None
        if not self.config.vrrp.instances:
            return
        from vrrp.remote import VrrpProcess  # VRRP runs in a process of its own (vrrp/child.py)

        service = VrrpProcess(
            self.config.vrrp.instances,
            self.config.vrrp.sync_groups,
            released=self.overrides.released,
            log_level=self.log_level,
            log_format=self.log_format,
            realtime_priority=self.config.vrrp.realtime_priority,
        )
        service.listeners.append(
            lambda name, old, new, reason: self.events.emit(VrrpChanged(name, old.value, new.value, reason))
        )
        for v in self.config.virtual_servers:
            key = service_key(v)
            if key in self.quorum:  # known before start: an instance starts in the right state
                service.set_virtual_server(v.name, self.quorum[key])
        try:
            await service.start()
        except OSError as e:
            service.close()
            raise StartupError(f"cannot start VRRP: {e}") from e
        self.vrrp = service
        log.info("VRRP runs in process %s", service.pid)

    async def _reload_vrrp(self) -> None:
        """Unchanged instances keep their state and VIPs; only the changed ones restart."""
        assert self.config is not None
        if self.vrrp is None:
            await self._start_vrrp()
            return
        try:
            added, removed, restarted = await self.vrrp.update(
                self.config.vrrp.instances, self.config.vrrp.sync_groups, self.config.vrrp.realtime_priority
            )
        except OSError as e:
            log.error("VRRP reload failed: %s", e)
            return
        log.info(
            "VRRP reloaded: added %s, removed %s, restarted %s",
            ", ".join(added) or "none", ", ".join(removed) or "none", ", ".join(restarted) or "none",
        )  # fmt: skip

    async def _stop_vrrp(self) -> None:
        if self.vrrp is not None:
            await self.vrrp.stop()
            self.vrrp.close()
            self.vrrp = None

    # ------------------------------------------------------------ BGP

    def _start_bgp(self) -> None:
        assert self.config is not None
        if self.config.bgp is None:
            return
        from ipvsmgr.bgp.speaker import Speaker

        longest = max(
            ((s.rise * s.interval + s.timeout) for _, s in _checked_reals(self.config)), default=0.0
        )
        self._bgp_settle_by = time.monotonic() + 2 * longest + 5.0
        self.bgp = Speaker(self.config.bgp, os.path.join(self.state_dir, "bgp"))
        self._sync_bgp_vips()
        self.update_bgp()  # the routes are in the FIFO before ExaBGP starts
        self.bgp.start()

    def _sync_bgp_vips(self) -> None:
        from ipvsmgr.bgp.vips import VipHolder, host_addresses

        cfg = self.config.bgp if self.config is not None else None
        interface = cfg.vip_interface if cfg is not None else ""
        if self.bgp_vips is not None and self.bgp_vips.interface != interface:
            self.bgp_vips.close()
            self.bgp_vips = None
        if not interface or cfg is None:
            return
        try:  # vrrp.netlink.Host: every rtnetlink failure is an OSError
            if self.bgp_vips is None:
                self.bgp_vips = VipHolder(interface)
            self.bgp_vips.sync(host_addresses(cfg))
        except OSError as e:
            log.error("VIPs on %s: %s", interface, e)

    def _reload_bgp(self, old: BgpConfig | None) -> None:
        assert self.config is not None
        new = self.config.bgp
        if new == old:
            return
        if self.bgp is None:
            self._start_bgp()  # a bgp: section added by this reload
            return
        if new is None:
            log.info("bgp: section removed: withdrawing everything and stopping ExaBGP")
            speaker, self.bgp = self.bgp, None
            speaker.set_routes({})
            asyncio.get_running_loop().create_task(self._retire(speaker))
            return
        self.bgp.update_config(new)
        self._sync_bgp_vips()
        self.update_bgp()

    async def _retire(self, speaker: Speaker) -> None:
        """The bgp: section left the configuration: withdraw, serve the grace, stop."""
        await asyncio.sleep(speaker.config.withdraw_grace)
        await speaker.stop()
        if self.bgp_vips is not None and (self.config is None or self.config.bgp is None):
            self.bgp_vips.close()
            self.bgp_vips = None

    def update_bgp(self) -> None:
        """Announce or withdraw each prefix as health, VRRP and drain-node decide now."""
        if self.bgp is None or self.config is None or self.config.bgp is None:
            return
        from ipvsmgr.bgp.routes import Health, desired

        pending: Counter[ServiceKey] = Counter()
        if not self._bgp_settled:
            known = self.health.keys()
            for rid, _spec in _checked_reals(self.config):
                if rid not in known:
                    pending[rid[0]] += 1
            # Settled for good once every real had a verdict, or after the longest
            # first verdict could take twice over (a check that never answers).
            if not pending or time.monotonic() > self._bgp_settle_by:
                self._bgp_settled = True
                pending.clear()
        health: dict[str, Health] = {}
        for vs in self.config.virtual_servers:
            skey = service_key(vs)
            q = self.quorum_states.get(skey)
            if q is not None:
                health[vs.name] = Health(vs.quorum is not None, q.up, q.reals_up, pending[skey])
        vrrp_states: dict[str, str] = {}
        if self.vrrp is not None:
            vrrp_states = {str(i["name"]): str(i["state"]) for i in self.vrrp.status()}
        wanted, decisions = desired(self.config.bgp, health, vrrp_states, self.overrides.node_drained)
        for prefix, dec in decisions.items():
            before = self.bgp_decisions.get(prefix)
            if before is None or before.announce != dec.announce:
                log.info("BGP %s %s: %s", "announce" if dec.announce else "withdraw", prefix, dec.reason)
        self.bgp_decisions = decisions
        self.bgp.set_routes(wanted)

    def bgp_announced(self) -> list[str]:
        return sorted(self.bgp.wanted) if self.bgp is not None else []

    def bgp_status(self) -> dict[str, Any] | None:
        if self.bgp is None:
            return None
        return {
            **self.bgp.status(),
            "node_drained": self.overrides.node_drained,
            "prefixes": {
                p: {"announce": d.announce, "reason": d.reason} for p, d in sorted(self.bgp_decisions.items())
            },
        }

    async def _stop_bgp(self) -> None:
        """Withdraw, keep serving for the grace period, then stop ExaBGP."""
        if self.bgp is None:
            return
        speaker, self.bgp = self.bgp, None
        grace = speaker.config.withdraw_grace
        if speaker.announced and grace > 0:
            log.info("withdrawing %d BGP routes; serving on for %g s", len(speaker.announced), grace)
            speaker.set_routes({})
            self.notifier.status(f"stopping: routes withdrawn, serving for {grace:g} s")
            await asyncio.sleep(grace)
        await speaker.stop()
        if self.bgp_vips is not None:
            self.bgp_vips.close()  # after the grace: flows were served until the routers moved
            self.bgp_vips = None

    def _xdp_tables(self) -> Any:
        assert self.config is not None
        o = self.overrides
        return tables_for(self.config, o.xdp_allow, dict(o.xdp_block))

    def sync_xdp(self) -> None:
        """The maps follow the configuration and the run-time lists."""
        if self.config is not None and self.config.xdp is not None:
            try:
                self.xdp.sync(self._xdp_tables())
            except OSError as e:
                self.counters["xdp_sync_errors"] += 1
                log.error("xdp: updating the guard's maps failed: %s", e)

    def _reload_xdp(self, old: Config | None) -> None:
        assert self.config is not None
        was, now = (old.xdp if old is not None else None), self.config.xdp
        if now is None:
            if was is not None:
                log.info("xdp: section removed: detaching the guard")
                self.xdp.remove()
            return
        if was is None:
            self.xdp.start(self.config, self._xdp_tables())
        else:
            self.xdp.reload(self.config, self._xdp_tables())

    async def run(self) -> None:
        self.config = self._preloaded or load(self.config_path)  # a ConfigError here ends the start
        self._preloaded = None
        _trim()  # the YAML's parse is garbage now
        self._prune_overrides()
        if self.config.xdp is not None:
            # First: the VIPs are guarded before anything announces them.
            self.xdp.start(self.config, self._xdp_tables())
        if self.config.virtual_servers or self.config.connection_sync is not None:
            self.client = IPVSClient()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._request_reload)
        if self.client is not None and not self.force:
            why = await self.kernel(self._start_refusal)
            if why is not None:
                self.client.close()
                raise StartupError(f"{self.config_path}: not started: {why}")
        kernel_up = await self.kernel(self._kernel_up) if self.client is not None else set()
        self._schedule(self.config, kernel_up)
        checks = len(self.scheduler.keys())
        log.info("running %s: %d check%s", self.config_path, checks, "" if checks == 1 else "s")
        watchdog: asyncio.Task[None] | None = None
        try:
            await self._reconcile()
            if self.config.connection_sync is not None:
                self._want_sync("backup")  # until the instance it follows says master
            await self._start_vrrp()
            self._start_bgp()
            if self.control is not None:
                try:
                    await self.control.start()
                except OSError as e:
                    raise StartupError(f"cannot open the control socket {self.control.path}: {e}") from e
            if self.metrics is not None:
                try:
                    await self.metrics.start()
                except OSError as e:
                    where = f"{self.metrics.host}:{self.metrics.port}"
                    raise StartupError(f"cannot serve metrics on {where}: {e}") from e
                log.info("metrics on http://%s:%d/metrics", self.metrics.host, self.metrics.port)
            self.notifier.ready(self._status_line())
            if self.notifier.watchdog > 0:
                watchdog = asyncio.create_task(self._watchdog(), name="watchdog")
            while not self.stopping.is_set():
                if self._vrrp_reload:
                    self._vrrp_reload = False
                    await self._reload_vrrp()
                await self._reconcile()
                deadline = time.monotonic() + self.resync
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
        finally:
            self.notifier.stopping()
            await self._stop_bgp()
            self.xdp.close()  # stays attached with its maps: a restart adopts it
            if watchdog is not None:
                watchdog.cancel()
            if self.control is not None:
                await self.control.close()
            if self.metrics is not None:
                await self.metrics.close()
            await self._stop_vrrp()
            if self.remove_on_stop and self.client is not None:
                # Asked for: every service of ours goes, connections or not (no drain).
                try:
                    rnd = await self.kernel(self._apply, Desired(), 0.0)
                    log.info("removed on stop: %d operations", len(rnd.plan.operations))
                except OSError as e:
                    log.error("removing the IPVS services on stop failed: %s", e)
            if self._sync_task is not None or self.sync_daemons:
                self.sync_role = None
                if self._sync_task is not None:
                    await asyncio.gather(self._sync_task, return_exceptions=True)
                with contextlib.suppress(OSError):
                    await self.kernel(self._sync_once, None, None)
            await self.scheduler.close()
            if self.client is not None:
                self.client.close()
            if self._metrics_client is not None:
                self._metrics_client.close()
            self._kernel_pool.shutdown(wait=False)
            if self.client is None:  # nothing of IPVS was ours to leave or remove (a VRRP-only node)
                log.info("stopped")
            else:
                log.info("stopped; IPVS services %s", "removed" if self.remove_on_stop else "left in place")

    async def kernel(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on the daemon's one kernel thread: reconcile, status and
        connection sync each talk to IPVS off the loop, and one netlink socket
        must not carry two conversations at once. One thread (not the default
        pool) also means one malloc arena holding the big dumps' buffers,
        which are handed back to the system after each call."""

        def locked() -> T:
            with self._client_lock:
                try:
                    return fn(*args)
                finally:
                    _trim()

        return await asyncio.get_running_loop().run_in_executor(self._kernel_pool, locked)

    # ------------------------------------------------------------ connection sync

    def _on_event(self, event: object) -> None:
        if isinstance(event, VrrpChanged):
            self.update_bgp()
            self._update_status()  # systemctl status shows the new state now, not at the next resync
        cs = self.config.connection_sync if self.config is not None else None
        if isinstance(event, VrrpChanged) and cs is not None and event.instance == cs.follow:
            self._want_sync(syncd.role_for(event.new))

    def _want_sync(self, role: str | None) -> None:
        self.sync_role = role
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.get_running_loop().create_task(
                self._apply_sync(), name="connection sync"
            )

    async def _apply_sync(self) -> None:
        """Converge the kernel's sync daemons on sync_role (again, if it changed meanwhile)."""
        while True:
            role, cfg = self.sync_role, self.config.connection_sync if self.config else None
            try:
                done = await self.kernel(self._sync_once, role, cfg)
            except OSError as e:
                log.error("connection sync: %s", e)
                return
            if done == (role, cfg) and self.sync_role == role:
                return

    def _sync_once(self, role: str | None, cfg: ConnectionSync | None) -> tuple[str | None, Any]:
        assert self.client is not None
        requests = syncd.plan(role, self.client.daemons(), cfg)
        for failure in self.client.execute(requests):
            log.error("connection sync: kernel refused %s", failure)
        for r in requests:
            log.info("connection sync: %s", r.what)
        self.sync_daemons = [
            f"{'master' if d.state == syncd.ROLES['master'] else 'backup'} on {d.interface} id {d.sync_id}"
            for d in self.client.daemons()
        ]
        return role, cfg

    # ------------------------------------------------------------ metrics

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
                h = self.health.get((key, dk))
                st = self.scheduler.state((key, dk))
                last = st.last if st is not None else None
                if r.health is None:
                    health = "unchecked"
                elif h is None:
                    health = "pending"
                else:
                    health = "up" if h.up else "down"
                snap.reals.append(
                    metrics.RealView(
                        vs.name, key, dk, r.weight, health, last.duration if last is not None else None
                    )
                )
        snap.quorum = dict(self.quorum)
        if self.vrrp is not None:
            snap.vrrp = self.vrrp.status()
            snap.vrrp_drops = dict(self.vrrp.drops)
        snap.counters = dict(self.counters)
        snap.bgp = self.bgp_status()
        if self.config.xdp is not None:
            snap.xdp = self.xdp.status(detail=False)
        snap.reloads = {r: self.counters[f"reloads_{r}"] for r in ("ok", "refused", "guarded")}
        if self.control is not None:
            snap.control_requests = dict(self.control.requests)
            snap.control_refused = dict(self.control.refused)
        cs = self.scheduler.snapshot()
        snap.checks = {
            "runs": cs.runs, "failures": cs.failures, "skipped": cs.skipped,
            "lag_p50": cs.lag_p50, "lag_p99": cs.lag_p99,
        }  # fmt: skip
        return snap

    def _dump(self) -> Table:
        """The kernel's counters for a scrape (in a worker thread, with a socket of its own)."""
        if self.client is None:
            return Table()  # nothing of IPVS to report (a VRRP-only node)
        if self._metrics_client is None:
            self._metrics_client = IPVSClient()
        assert self.config is not None
        keys = [service_key(vs) for vs in self.config.virtual_servers]
        return self._metrics_client.table(keys, True)

    async def _command(self, req: Request) -> Any:
        return await commands.run(self, req)

    def _prune_overrides(self) -> None:
        """Forget overrides whose real, virtual server or instance left the configuration."""
        assert self.config is not None
        reals = {rid for rid, _ in _all_reals(self.config)}
        services = {service_key(vs) for vs in self.config.virtual_servers}
        instances = {i.name for i in self.config.vrrp.instances}
        pruned = self.overrides.prune(reals, services, instances)
        if pruned != self.overrides:
            self.set_overrides(pruned)

    def set_overrides(self, new: Overrides) -> None:
        self.overrides = new
        self._dirty = True
        self.override_store.save(new)
        self.wake.set()

    async def _watchdog(self) -> None:
        # From the loop itself: a loop stuck in a callback stops the pings,
        # which is what the watchdog is for.
        while True:
            self.notifier.ping()
            await asyncio.sleep(self.notifier.watchdog / 2)

    def _status_line(self) -> str:
        """One line for systemctl status: what is up, at a glance."""
        if self.config is None:
            return "starting"
        reals = [(vs, r) for vs in self.config.virtual_servers for r in vs.reals]
        down = sum(1 for rid, h in self.health.items() if not h.up)
        services = len(self.config.virtual_servers)
        parts = [
            f"{services} virtual server{'' if services == 1 else 's'}",
            f"{len(reals) - down}/{len(reals)} reals up",
        ]
        lost = sum(1 for up in self.quorum.values() if not up)
        if lost:
            parts.append(f"{lost} without quorum")
        if self.config.xdp is not None:
            parts.append(f"XDP {self.xdp.state}")
        if self.vrrp is not None:
            parts.append("VRRP " + ", ".join(f"{i['name']} {i['state']}" for i in self.vrrp.status()))
        return "; ".join(parts)

    def _update_status(self) -> None:
        text = self._status_line()
        if text != self._status_text:
            self._status_text = text
            self.notifier.status(text)

    def _request_reload(self) -> None:
        self.reload_requested = True
        self.wake.set()
