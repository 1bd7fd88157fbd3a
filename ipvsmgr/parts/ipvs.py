"""The IPVS part: the netlink client, the one kernel thread, and each reconcile round's apply.

Owns the IPVS services and reals the state file lists (reconcile/state.py).
At start it checks the removal guard against what the kernel holds of ours
and notes which checked reals the kernel already serves (they start up: a
restart is hitless). On stop it leaves the table, or removes what is ours
when asked to (--remove-on-stop).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from ipvsmgr.ipvs.client import IPVSClient
from ipvsmgr.ipvs.model import ServiceKey, Table
from ipvsmgr.malloc import trim
from ipvsmgr.parts.base import Hub, StartupError
from ipvsmgr.reconcile import engine, guard
from ipvsmgr.reconcile.desired import Desired, service_key
from ipvsmgr.reconcile.health import RealId
from ipvsmgr.reconcile.operations import DeleteReal
from ipvsmgr.reconcile.state import StateStore

if TYPE_CHECKING:
    from ipvsmgr.config import Config
    from ipvsmgr.metrics import Snapshot

log = logging.getLogger("ipvsmgr")
T = TypeVar("T")


def needs_ipvs(config: Config) -> bool:
    return bool(config.virtual_servers) or config.connection_sync is not None


class IpvsPart:
    name = "ipvs"

    def __init__(self, hub: Hub, force: bool = False, remove_on_stop: bool = False) -> None:
        self.hub = hub
        self.force = force  # start even if the removal guard objects
        self.remove_on_stop = remove_on_stop
        self.store = StateStore(hub.state_dir)
        self.client: IPVSClient | None = None  # None: nothing of IPVS here (a VRRP-only node)
        self.adopted: set[RealId] = set()  # reals the kernel served with a weight above 0 at start
        self.last_round: dict[str, Any] = {}
        self.config: Config | None = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipvs")
        self._metrics_client: IPVSClient | None = None

    async def kernel(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on the part's one kernel thread: reconcile, status and
        connection sync each talk to IPVS off the loop, and one netlink socket
        must not carry two conversations at once. One thread (not the default
        pool) also means one malloc arena holding the big dumps' buffers,
        which are handed back to the system after each call (the daemon's RSS
        would otherwise stay at its largest table read)."""

        def locked() -> T:
            with self._lock:
                try:
                    return fn(*args)
                finally:
                    trim()

        return await asyncio.get_running_loop().run_in_executor(self._pool, locked)

    async def start(self, config: Config) -> None:
        self.config = config
        if not needs_ipvs(config):
            return
        self.client = IPVSClient()
        if not self.force:
            why = await self.kernel(self._start_refusal, config)
            if why is not None:
                self.client.close()
                self.client = None
                raise StartupError(f"{self.hub.config_path}: not started: {why}")
        self.adopted = await self.kernel(self._kernel_up)

    def _start_refusal(self, config: Config) -> str | None:
        """The removal guard at start: the file against what the kernel holds of ours
        (a restart with a wrong file must not wipe the table the last run left)."""
        assert self.client is not None
        owned = self.store.load().owned
        if not owned:
            return None
        table = self.client.table(only=owned, stats=False)
        removed = guard.removal(guard.kernel_reals(table, owned), guard.config_reals(config))
        return guard.refusal(removed, config.max_removed_reals)

    def _kernel_up(self) -> set[RealId]:
        assert self.client is not None
        table = self.client.table(stats=False)
        return {
            (skey, dkey) for skey, dests in table.dests.items() for dkey, d in dests.items() if d.weight > 0
        }

    async def reload(self, new: Config, old: Config) -> None:
        self.config = new
        if self.client is None and needs_ipvs(new):
            self.client = IPVSClient()  # the first virtual server of a node that had none

    def _apply(self, desired: Desired, drain_timeout: float) -> engine.Round:
        assert self.client is not None
        with self.store.locked():
            rnd = engine.plan_desired(desired, drain_timeout, self.client, self.store)
            return engine.apply(rnd, self.client, self.store)

    async def apply(self, desired: Desired) -> None:
        """One reconcile round: plan against the kernel, apply, log and count."""
        if self.client is None or self.config is None:
            return
        counters = self.hub.counters
        dirty, self.hub.dirty = self.hub.dirty, False
        counters["reconcile_rounds"] += 1
        try:
            rnd = await self.kernel(self._apply, desired, self.config.drain_timeout)
        except OSError as e:
            counters["reconcile_errors"] += 1
            log.error("reconcile failed: %s", e)
            return
        except Exception:  # a bug in one round must not take the VIPs and checks down with it
            counters["reconcile_errors"] += 1
            log.exception("reconcile failed")
            return
        ops = len(rnd.plan.operations)
        counters["reconcile_operations"] += ops - len(rnd.failures)
        counters["reconcile_errors"] += len(rnd.failures)
        # With nothing changed here, operations mean the kernel drifted (someone ran
        # ipvsadm); deleting a real whose drain ended is planned, not drift.
        drift = 0 if dirty else sum(1 for op in rnd.plan.operations if not isinstance(op, DeleteReal))
        if drift:
            counters["reconcile_drift_repairs"] += drift
            log.warning("resync repaired drift: %d operations with nothing changed here", drift)
        for op in rnd.plan.operations:
            log.info("%s", op.text())
        for op, failure in rnd.failures:
            log.error("kernel refused %s: %s", op.text(), failure)
        self.last_round = {"at": time.time(), "operations": ops, "failures": len(rnd.failures)}

    async def table(self, keys: list[ServiceKey]) -> Table | None:
        """The kernel's view of these services with counters (for `status`); None without IPVS."""
        if self.client is None:
            return None
        return await self.kernel(self.client.table, keys, True)

    def dump(self) -> Table:
        """The kernel's counters for a scrape (in a worker thread, with a socket of its own)."""
        if self.client is None or self.config is None:
            return Table()  # nothing of IPVS to report (a VRRP-only node)
        if self._metrics_client is None:
            self._metrics_client = IPVSClient()
        return self._metrics_client.table([service_key(vs) for vs in self.config.virtual_servers], True)

    async def stop(self) -> None:
        if self.remove_on_stop and self.client is not None:
            # Asked for: every service of ours goes, connections or not (no drain).
            try:
                rnd = await self.kernel(self._apply, Desired(), 0.0)
                log.info("removed on stop: %d operations", len(rnd.plan.operations))
            except OSError as e:
                log.error("removing the IPVS services on stop failed: %s", e)
        if self.client is not None:
            self.client.close()
        if self._metrics_client is not None:
            self._metrics_client.close()
        self._pool.shutdown(wait=False)

    def status(self) -> dict[str, Any] | None:
        return self.last_round or None

    def metrics(self, snap: Snapshot) -> None:
        pass  # the kernel's counters come from dump(), in the scrape's thread
