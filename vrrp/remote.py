"""The daemon's handle on its VRRP process (vrrp/child.py), with VrrpService's interface.

Requests go over a socketpair; replies, state changes and status snapshots
come back. Status, state and drop counters are read from the last snapshot,
so `status`, metrics and BGP decisions never wait on the VRRP process.
If the process dies, it is started again (back-off 1 s to 30 s) with the
current configuration and the released instances; `restarts` counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any

from vrrp import channel
from vrrp.instance import InstanceConfig
from vrrp.machine import State

log = logging.getLogger("ipvsmgr.vrrp")
StateListener = Callable[[str, State, State, str], object]
START_TIMEOUT = 300.0  # seconds: a cold Python start in a loaded TCG VM can take tens of seconds
REQUEST_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0  # a master's hand-over lasts at most 3 intervals + skew
BACKOFF = (1.0, 30.0)


class VrrpProcessError(OSError):
    """The VRRP process refused a request or could not be started."""


class VrrpProcess:
    def __init__(
        self,
        instances: Iterable[InstanceConfig],
        sync_groups: Iterable[tuple[str, tuple[str, ...]]] = (),
        released: Iterable[str] = (),
        log_level: str = "info",
        log_format: str = "text",
        realtime_priority: int = 0,
    ) -> None:
        self.configs = tuple(instances)
        self.groups = tuple(sync_groups)
        self._released = set(released)
        self._vs_up: dict[str, bool] = {}
        self._log = (log_level, log_format)
        self.listeners: list[StateListener] = []
        self.drops: dict[tuple[str, str], int] = {}  # (instance or "", reason) -> packets
        self._status: list[dict[str, object]] = []
        self.realtime_priority = realtime_priority  # SCHED_RR priority asked for (0: normal)
        self.scheduling: dict[str, object] = {}  # what the process runs as (vrrp/realtime.py status)
        self.restarts = 0
        self.pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._reader_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self._spawn()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="vrrp supervisor")

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [sys.executable, "-m", "vrrp.child", str(theirs.fileno()), *self._log, str(os.getpid())]
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv, pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL
            )
        finally:
            theirs.close()
        self.pid = self._proc.pid
        reader, self._writer = await asyncio.open_connection(sock=ours)
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader), name="vrrp channel")
        message = {
            "op": "start", "instances": self.configs, "sync_groups": self.groups,
            "released": sorted(self._released), "virtual_servers": dict(self._vs_up),
            "realtime_priority": self.realtime_priority,
        }  # fmt: skip
        try:
            await self._request(message, START_TIMEOUT)
        except OSError:
            await self._kill()
            raise

    async def _supervise(self) -> None:
        """Start the VRRP process again whenever it dies (not when we stop it)."""
        delay = BACKOFF[0]
        while True:
            assert self._proc is not None
            code = await self._proc.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.error("VRRP process %s exited (%s); starting it again in %gs", self.pid, code, delay)
            self._fail_pending("the VRRP process exited")
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._spawn()
                delay = BACKOFF[0]
            except OSError as e:
                log.error("VRRP process did not start: %s", e)
                delay = min(delay * 2, BACKOFF[1])

    async def stop(self) -> None:
        """Masters hand over (priority 0), then the process exits."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(OSError):
                await self._request({"op": "stop"}, STOP_TIMEOUT)
            try:
                await asyncio.wait_for(self._proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                await self._kill()
        self._close_channel()

    def close(self) -> None:
        self._close_channel()

    async def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
        self._close_channel()

    def _close_channel(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reader_task is not None:
            self._reader_task.cancel()
            self._reader_task = None

    # ------------------------------------------------------------ the channel

    async def _request(self, message: dict[str, Any], timeout: float = REQUEST_TIMEOUT) -> Any:
        if self._writer is None or self._writer.is_closing():
            raise VrrpProcessError("the VRRP process is not running")
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self._writer.write(channel.frame({**message, "id": rid}))
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise VrrpProcessError(
                f"the VRRP process did not answer {message['op']} in {timeout:g}s"
            ) from None
        finally:
            self._pending.pop(rid, None)

    def _send(self, message: dict[str, Any]) -> None:
        """Fire and forget (quorum changes): a dead process gets them again at its restart."""
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(channel.frame({**message, "id": None}))

    def _fail_pending(self, why: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(VrrpProcessError(why))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                msg = await channel.read(reader)
            except EOFError:
                self._fail_pending("the VRRP process closed its channel")
                return
            ev = msg.get("ev")
            if ev == "status":
                self._status = msg["status"]
                self.drops = dict(msg["drops"])
                self.scheduling = dict(msg.get("scheduling") or {})
            elif ev == "state":
                old, new = State(msg["old"]), State(msg["new"])
                for fn in list(self.listeners):
                    fn(msg["name"], old, new, msg["reason"])
            else:
                fut = self._pending.get(msg.get("id"))
                if fut is not None and not fut.done():
                    if "error" in msg:
                        fut.set_exception(VrrpProcessError(msg["error"]))
                    else:
                        fut.set_result(msg.get("result"))

    # ------------------------------------------------------------ VrrpService's interface

    async def update(
        self,
        instances: Iterable[InstanceConfig],
        sync_groups: Iterable[tuple[str, tuple[str, ...]]] = (),
        realtime_priority: int | None = None,
    ) -> tuple[list[str], list[str], list[str]]:
        self.configs, self.groups = tuple(instances), tuple(sync_groups)
        if realtime_priority is not None:
            self.realtime_priority = realtime_priority
        names = {c.name for c in self.configs}
        self._released &= names
        result = await self._request({
            "op": "update", "instances": self.configs, "sync_groups": self.groups,
            "realtime_priority": self.realtime_priority,
        })  # fmt: skip
        added, removed, restarted = result
        return list(added), list(removed), list(restarted)

    async def release(self, name: str) -> State:
        self._known(name)
        self._released.add(name)
        return State(await self._request({"op": "release", "name": name}))

    async def reclaim(self, name: str) -> State:
        self._known(name)
        self._released.discard(name)
        return State(await self._request({"op": "reclaim", "name": name}))

    def set_virtual_server(self, name: str, up: bool) -> None:
        if self._vs_up.get(name) != up:
            self._vs_up[name] = up
            self._send({"op": "vs", "name": name, "up": up})

    def status(self) -> list[dict[str, object]]:
        return self._status

    @property
    def connected(self) -> bool:
        """The VRRP process runs and its channel is open (false while it restarts)."""
        return self._writer is not None and not self._writer.is_closing()

    def state(self, name: str) -> State:
        for i in self._status:
            if i["name"] == name:
                return State(i["state"])
        self._known(name)
        return State.INIT  # configured, not reported yet

    def _known(self, name: str) -> None:
        if name not in {c.name for c in self.configs}:
            raise KeyError(name)
