"""ExaBGP supervised by the daemon: started, fed routes, restarted with back-off.

The daemon owns the routes: ExaBGP is configured with peers only, and every
route goes through the API. After any (re)start the whole wanted set is sent
again, so a restarted ExaBGP converges without help. ExaBGP is started
under `setpriv --pdeathsig TERM`: if the daemon dies, ExaBGP stops and its
sessions close, so the routers stop sending flows to a node nobody manages
(fail closed; the IPVS table keeps serving what still arrives).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import signal
import stat
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from ipvsmgr import statefile
from ipvsmgr.bgp import exabgp
from ipvsmgr.bgp.routes import Route, commands
from ipvsmgr.config.model import BgpConfig

log = logging.getLogger("ipvsmgr.bgp")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # a run this long resets the back-off
STOP_TIMEOUT = 5.0  # SIGTERM to SIGKILL


@dataclass(slots=True)
class Neighbor:
    state: str = "idle"  # idle (not heard of yet) | connected | up | down
    since: float = field(default_factory=time.time)
    reason: str = ""
    ups: int = 0


def _session_settings(c: BgpConfig) -> tuple[object, ...]:
    return (c.local_as, c.router_id, c.peers, c.exabgp, {a.family for a in c.announcements})


class Speaker:
    def __init__(self, config: BgpConfig, directory: str) -> None:
        self.config = config
        self.directory = directory
        self.wanted: dict[str, Route] = {}
        self.announced: dict[str, Route] = {}  # as told to the running ExaBGP
        self.neighbors: dict[str, Neighbor] = {p.address: Neighbor() for p in config.peers}
        self.counters: Counter[str] = Counter()
        self.output: deque[str] = deque(maxlen=20)  # ExaBGP's last log lines, for status
        self.pid: int | None = None
        self.started_at: float | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._generation = 0
        self._cmd_fd: int | None = None
        self._evt_fd: int | None = None
        self._pending = b""
        self._out_buf = b""
        self._reader = exabgp.MessageReader()
        self._backoff = BACKOFF_FIRST
        self._restart_now = asyncio.Event()

    # ------------------------------------------------------------ public

    def start(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name="exabgp")

    def set_routes(self, wanted: dict[str, Route]) -> None:
        self.wanted = dict(wanted)
        if self._cmd_fd is not None:
            self._send(commands(self.config, self.announced, self.wanted))
            self.announced = dict(self.wanted)

    def update_config(self, config: BgpConfig) -> None:
        """A reload: new peers or session settings restart ExaBGP; new
        announcements alone are a diff (the caller sets the routes)."""
        restart = _session_settings(config) != _session_settings(self.config)
        self.config = config
        self.neighbors = {p.address: self.neighbors.get(p.address, Neighbor()) for p in config.peers}
        if restart:
            log.info("BGP peers or session settings changed: restarting ExaBGP")
            self._backoff = BACKOFF_FIRST
            self._restart_now.set()
            if self._proc is not None and self._proc.returncode is None:
                self._proc.terminate()

    async def stop(self) -> None:
        self._stopping = True
        self._restart_now.set()
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._close_fifos()

    def status(self) -> dict[str, object]:
        return {
            "exabgp_pid": self.pid,
            "exabgp_running_s": None if self.started_at is None else time.time() - self.started_at,
            "neighbors": {
                a: {"state": n.state, "since": n.since, "reason": n.reason, "ups": n.ups}
                for a, n in self.neighbors.items()
            },
            "announced": sorted(self.announced),
            "counters": dict(self.counters),
        }

    # ------------------------------------------------------------ the child

    async def _supervise(self) -> None:
        while not self._stopping:
            self._restart_now.clear()
            began = time.monotonic()
            try:
                await self._run_once()
            except OSError as e:
                log.error("cannot run ExaBGP (%s): %s", " ".join(self.config.exabgp), e)
                self.counters["start_failures"] += 1
            if self._stopping:
                break
            if time.monotonic() - began >= STABLE_AFTER:
                self._backoff = BACKOFF_FIRST
            delay = 0.0 if self._restart_now.is_set() else self._backoff
            if delay:
                log.warning("ExaBGP stopped; restarting in %.0f s", delay)
                self._backoff = min(self._backoff * 2, BACKOFF_MAX)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._restart_now.wait(), delay)

    async def _run_once(self) -> None:
        self._generation += 1
        gen = self._generation
        d = self.directory
        cmd, evt = os.path.join(d, f"cmd.{gen}"), os.path.join(d, f"evt.{gen}")
        pidfile, script = os.path.join(d, "api.pid"), os.path.join(d, "api.sh")
        conf = os.path.join(d, "exabgp.conf")
        self._clear_directory()
        os.mkfifo(cmd, 0o600)
        os.mkfifo(evt, 0o600)
        _write(script, exabgp.api_script(cmd, evt, pidfile), 0o700)
        _write(conf, exabgp.configuration(self.config, script), 0o600)  # may hold MD5 keys
        self._cmd_fd = os.open(cmd, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        self._evt_fd = os.open(evt, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        loop = asyncio.get_running_loop()
        loop.add_reader(self._evt_fd, self._on_messages)
        self._reader = exabgp.MessageReader()
        # Everything wanted goes first into the FIFO: ExaBGP keeps routes for a
        # peer that is not up yet and sends them when the session comes up.
        self.announced = {}
        self._pending = b""
        self.set_routes(self.wanted)
        argv = [*self._pdeathsig(), *self.config.exabgp, conf]
        env = {**os.environ, **exabgp.ENVIRONMENT}
        # ExaBGP's log comes through a pipe of our own, not asyncio's: its API
        # script inherits that pipe and may outlive ExaBGP, and asyncio's
        # wait() would wait for the pipe's EOF as well as for the exit.
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_w,
                stderr=out_w,
                env=env,
                start_new_session=True,  # a Ctrl-C at the daemon's terminal is the daemon's
            )
        except OSError:
            os.close(out_r)
            self._close_fifos()
            raise
        finally:
            os.close(out_w)
        os.set_blocking(out_r, False)
        loop.add_reader(out_r, self._on_output, out_r)
        self._proc = proc
        self.pid = proc.pid
        self.started_at = time.time()
        self.counters["starts"] += 1
        log.info("ExaBGP started (pid %d): %d peers", proc.pid, len(self.config.peers))
        code = await proc.wait()
        loop.remove_reader(out_r)
        self._on_output(out_r)  # the last words
        os.close(out_r)
        self._out_buf = b""
        self._proc = None
        self.pid = None
        self.started_at = None
        self._kill_api_script(pidfile)
        self._close_fifos()
        for n in self.neighbors.values():
            if n.state != "down":
                n.state, n.since, n.reason = "down", time.time(), "ExaBGP not running"
        if not self._stopping and not self._restart_now.is_set():
            self.counters["crashes"] += 1
            tail = " | ".join(list(self.output)[-3:])
            log.error("ExaBGP exited with %s: %s", code, tail)

    def _on_output(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            return
        *lines, self._out_buf = (self._out_buf + data).split(b"\n")
        self._out_buf = self._out_buf[-4096:]
        for raw in lines:
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            log.debug("exabgp: %s", line)

    def _pdeathsig(self) -> list[str]:
        setpriv = shutil.which("setpriv")
        return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []

    def _kill_api_script(self, pidfile: str) -> None:
        # ExaBGP SIGTERMs its API script when it stops; if it was killed, the
        # script's cats would wait forever on their FIFOs.
        try:
            with open(pidfile, encoding="ascii") as f:
                pgid = int(f.read().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)

    def _clear_directory(self) -> None:
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            with contextlib.suppress(OSError):
                if stat.S_ISFIFO(os.lstat(path).st_mode) or name in ("api.pid",):
                    os.unlink(path)

    def _close_fifos(self) -> None:
        loop = asyncio.get_running_loop()
        if self._evt_fd is not None:
            loop.remove_reader(self._evt_fd)
            os.close(self._evt_fd)
            self._evt_fd = None
        if self._cmd_fd is not None:
            loop.remove_writer(self._cmd_fd)
            os.close(self._cmd_fd)
            self._cmd_fd = None

    # ------------------------------------------------------------ the API

    def _send(self, lines: list[str]) -> None:
        for line in lines:
            log.info("BGP: %s", line)
        self.counters["commands"] += len(lines)
        self._pending += b"".join(line.encode() + b"\n" for line in lines)
        self._flush()

    def _flush(self) -> None:
        if self._cmd_fd is None or not self._pending:
            return
        try:
            n = os.write(self._cmd_fd, self._pending)
        except BlockingIOError:
            n = 0
        except OSError as e:
            if e.errno != errno.EAGAIN:
                log.error("writing to ExaBGP: %s", e)
            n = 0
        self._pending = self._pending[n:]
        loop = asyncio.get_running_loop()
        if self._pending:
            loop.add_writer(self._cmd_fd, self._flush)
        else:
            loop.remove_writer(self._cmd_fd)

    def _on_messages(self) -> None:
        assert self._evt_fd is not None
        try:
            data = os.read(self._evt_fd, 65536)
        except BlockingIOError:
            return
        for msg in self._reader.feed(data):
            self._handle(msg)

    def _handle(self, msg: exabgp.Message) -> None:
        if isinstance(msg, exabgp.Ack):
            self.counters["acks_done" if msg.ok else "acks_error"] += 1
            if not msg.ok:
                log.error("ExaBGP refused a command (see its log: %s)", " | ".join(list(self.output)[-2:]))
        elif isinstance(msg, exabgp.NeighborState):
            n = self.neighbors.get(msg.peer)
            if n is None:
                self.counters["messages_unknown_peer"] += 1
                return
            if msg.state != n.state:
                log.info("BGP peer %s %s%s", msg.peer, msg.state, f": {msg.reason}" if msg.reason else "")
            n.state, n.since, n.reason = msg.state, time.time(), msg.reason
            if msg.state == "up":
                n.ups += 1
        elif isinstance(msg, exabgp.Malformed):
            self.counters["messages_malformed"] += 1
            log.warning("unreadable message from ExaBGP (%s): %s", msg.why, msg.line)
        else:
            self.counters["messages_other"] += 1


def _write(path: str, text: str, mode: int) -> None:
    statefile.write_text(path, text, mode)  # a fresh O_EXCL name, never a prepared one
