"""The VRRP process: `python -m vrrp.child FD LOGLEVEL LOGFORMAT`, started by the daemon.

Adverts, timers, VIPs, GARPs and tracking live here, on a loop nothing else
uses, so a reload parsing a big file, a reconcile of 11,000 operations or a
burst of scrapes in the daemon cannot delay an advert (keepalived's shape:
VRRP in a process of its own). The daemon sends requests (start, quorum
changes, reload, release, stop) on the socketpair FD; this process sends
back replies, every state change and a status snapshot once a second.

If the daemon dies (the channel reaches EOF, or PR_SET_PDEATHSIG's SIGUSR1
arrives) this process hands over (priority 0) and exits: nothing keeps
advertising unmanaged. A backup that answers takes the VIPs; with none they
stay, so IPVS keeps serving through the daemon's restart (what a kill -9
left before VRRP had a process of its own). SIGTERM (systemd stopping the
unit's cgroup) or the daemon's stop request is a full stop: VIPs released
once handed over, or after Master_Down_Interval with nobody there.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # the VRRP process speaks no TLS: asyncio without ssl is ~2 MB less
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]

import asyncio
import ctypes
import logging
import os
import signal
import socket
from typing import Any

from ipvsmgr.malloc import trim
from vrrp import channel
from vrrp.machine import State
from vrrp.realtime import Realtime

log = logging.getLogger("ipvsmgr.vrrp")
PR_SET_PDEATHSIG = 1
ORPHANED = signal.SIGUSR1  # PR_SET_PDEATHSIG's signal: the daemon died
STATUS_EVERY = 1.0  # seconds between status pushes (state changes are pushed at once)
# Status pushes between two malloc_trims: the start (imports, the instances'
# setup) leaves a few MiB free in glibc's heap that this small process never reuses.
TRIM_EVERY = 60


class Child:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.service: Any = None  # vrrp.service.VrrpService once started
        self.done = asyncio.Event()
        self._stopping: asyncio.Task[None] | None = None
        self.rt = Realtime()

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(channel.frame(message))

    def push_status(self) -> None:
        if self.service is not None:
            self.send({
                "ev": "status", "status": self.service.status(), "drops": self.service.drop_counts(),
                "scheduling": self.rt.status(),
            })  # fmt: skip

    def _changed(self, name: str, old: State, new: State, reason: str) -> None:
        self.send({"ev": "state", "name": name, "old": old.value, "new": new.value, "reason": reason})
        self.push_status()

    async def handle(self, msg: dict[str, Any]) -> Any:
        op = msg["op"]
        if op == "start":
            from vrrp.service import VrrpService  # imported here, off the daemon's path

            service = VrrpService(msg["instances"], msg["sync_groups"], released=msg["released"])
            service.listeners.append(self._changed)
            for name, up in msg["virtual_servers"].items():
                service.set_virtual_server(name, up)
            try:
                await service.start()
            except OSError:
                service.close()
                raise
            self.service = service
            # after the start: its imports are no real-time work
            self.rt.set(msg.get("realtime_priority", 0))
            self.push_status()
            trim()
            return None
        if op == "stop":
            await self.stop()
            return None
        s = self.service
        if s is None:
            raise RuntimeError(f"VRRP request {op!r} before start")
        if op == "vs":
            s.set_virtual_server(msg["name"], msg["up"])
            return None
        if op == "update":
            result = s.update(msg["instances"], msg["sync_groups"])
            self.rt.set(msg.get("realtime_priority", 0))
            self.rt.promote()  # any thread made since (asyncio's executor): SCHED_RR too
            self.push_status()
            return result
        if op in ("release", "reclaim"):
            state = s.release(msg["name"]) if op == "release" else s.reclaim(msg["name"])
            self.push_status()
            return state.value
        raise RuntimeError(f"unknown VRRP request {op!r}")

    async def stop(self, orphaned: bool = False) -> None:
        """One hand-over however many ask (the daemon's request and the SIGTERM
        that systemd sends the whole group arrive together)."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop(orphaned))
        await asyncio.shield(self._stopping)

    async def _stop(self, orphaned: bool) -> None:
        try:
            if self.service is not None:
                await self.service.stop(orphaned=orphaned)
                self.service.close()
                self.service = None
        finally:
            self.done.set()

    async def serve(self, reader: asyncio.StreamReader) -> None:
        while not self.done.is_set():
            try:
                msg = await channel.read(reader)
            except EOFError:
                log.warning("VRRP: the daemon has gone; handing over and stopping")
                await self.stop(orphaned=True)
                return
            reply: dict[str, Any] = {"id": msg.get("id")}
            try:
                reply["result"] = await self.handle(msg)
            except OSError as e:  # said as VrrpService says it: "cannot start VRRP: <why>"
                reply["error"] = str(e)
            except (KeyError, RuntimeError, ValueError) as e:
                reply["error"] = f"{type(e).__name__}: {e}"
            self.send(reply)
            await self.writer.drain()

    async def ticker(self) -> None:
        ticks = 0
        while not self.done.is_set():
            await asyncio.sleep(STATUS_EVERY)
            self.rt.tick()
            self.push_status()
            ticks += 1
            if ticks % TRIM_EVERY == 0:
                trim()


async def main(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_connection(sock=sock)
    child = Child(writer)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(child.stop()))
    loop.add_signal_handler(ORPHANED, lambda: loop.create_task(child.stop(orphaned=True)))
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # a reload is the daemon's to do, not ours
    tasks = [loop.create_task(child.serve(reader)), loop.create_task(child.ticker())]
    await child.done.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    writer.close()


def run() -> None:
    fd, level, fmt, parent = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    # Know when the daemon dies: ORPHANED arrives (and the channel closes);
    # ignored until the loop handles it, so an early one cannot kill us mid-start.
    signal.signal(ORPHANED, signal.SIG_IGN)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, ORPHANED, 0, 0, 0)
    if os.getppid() != parent:  # it died before the prctl
        return
    from ipvsmgr import logsetup

    logsetup.setup(level, fmt)
    asyncio.run(main(fd))


if __name__ == "__main__":
    run()
