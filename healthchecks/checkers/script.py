"""Script check: run a program, read its verdict from the exit status.

Exit 0 is up, exit 1 is down, exit 2..255 is up with dynamic weight
`status - 2` (keepalived's misc_dynamic convention); a script killed by a
signal is down. The program is an argv list, never a shell string.

The child runs in its own session (so its own process group); at the
timeout, on cancellation, and after it exits, SIGKILL goes to the whole
group, so a `sleep 60 &` the script left behind goes too. Its stdout and
stderr are pipes of which at most `output_limit` bytes each are kept; past
that they are drained and discarded (a child that floods its output neither
blocks nor costs memory) at most a pipe-full (1 MiB) every 5 ms: a flood
costs the event loop a bounded number of wake-ups, and a script that writes
a lot and then exits is held up at most ~5 ms per MiB past the limit.
The verdict is taken when the script exits, not when its pipes close: a
background process holding them open does not delay it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import pwd
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from healthchecks.result import Result, Target, describe_os_error

REASON_MAX = 120
_PIPE_SIZE = 1 << 20  # bytes; the default /proc/sys/fs/pipe-max-size
_DRAIN_PAUSE = 0.005  # seconds between reads once the kept output is full
_KILL_WAIT = 5.0  # seconds to wait for a SIGKILLed child to be reaped


@dataclass(frozen=True, slots=True)
class ScriptRun:
    """What one run of the script did: `returncode` as asyncio reports it
    (negative: killed by that signal; None: never exited), `timed_out`, and
    at most `output_limit` bytes of each output stream."""

    returncode: int | None
    timed_out: bool
    stdout: bytes
    stderr: bytes
    duration: float


@dataclass(frozen=True, slots=True)
class ScriptCheck:
    argv: Sequence[str]
    user: str | None = None  # run as this user (needs root); None: as the daemon's user
    env: Mapping[str, str] = field(default_factory=dict, hash=False)  # added to the daemon's
    output_limit: int = 4096  # bytes kept of stdout and of stderr, each
    cwd: str = "/"

    def __post_init__(self) -> None:
        if isinstance(self.argv, str | bytes):
            raise TypeError("ScriptCheck.argv is an argv list, not a shell string")
        argv = tuple(self.argv)
        if not argv or not argv[0] or not all(isinstance(a, str) for a in argv):
            raise ValueError("ScriptCheck.argv must be a non-empty list of strings")
        object.__setattr__(self, "argv", argv)
        if self.output_limit < 0:
            raise ValueError("ScriptCheck.output_limit must be >= 0")

    async def check(self, target: Target, timeout: float) -> Result:
        start = time.monotonic()
        try:
            run = await self.run(target, timeout)
        except _NotStarted as e:
            return Result(False, str(e), None, time.monotonic() - start)
        return verdict(run, timeout)

    async def run(self, target: Target, timeout: float) -> ScriptRun:
        """Run the script once; raise _NotStarted (a Result reason) if it could not start."""
        loop = asyncio.get_running_loop()
        kw = self._spawn_args(target)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        start = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                start_new_session=True,
                **kw,
            )
        except BaseException as e:
            os.close(out_r)
            os.close(err_r)
            if isinstance(e, OSError):
                raise _NotStarted(self._start_error(e)) from None
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        # From here on the read ends belong to the captures, which close them.
        out = _Capture(loop, out_r, self.output_limit)
        err = _Capture(loop, err_r, self.output_limit)
        timed_out = cancelled = False
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
        except TimeoutError:
            timed_out = True
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            # Timed out, cancelled or exited: nothing of the group outlives the run.
            # (At the timeout the leader is not reaped yet, so its pid still names the group.)
            _kill_group(proc.pid)
            out.close()
            err.close()
            if cancelled and proc.returncode is None:
                # Reap it before the cancellation goes on: its transport closes when it
                # is reaped, and a loop closing right after would leave it unclosed.
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.shield(asyncio.wait_for(proc.wait(), _KILL_WAIT))
        if proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), _KILL_WAIT)
        return ScriptRun(proc.returncode, timed_out, out.data(), err.data(), time.monotonic() - start)

    def _spawn_args(self, target: Target) -> dict[str, Any]:
        env = dict(os.environ)
        kw: dict[str, Any] = {"cwd": self.cwd}
        if self.user is not None:
            try:
                pw = pwd.getpwnam(self.user)
            except KeyError:
                raise _NotStarted(f"script user not found: {self.user}") from None
            kw.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=os.getgrouplist(pw.pw_name, pw.pw_gid))
            env.update(HOME=pw.pw_dir or "/", USER=pw.pw_name, LOGNAME=pw.pw_name)
        env.update(self.env)
        env["IPVSMGR_REAL_ADDRESS"] = target.address
        env["IPVSMGR_REAL_PORT"] = str(target.port)
        if target.source:
            env["IPVSMGR_SOURCE_ADDRESS"] = target.source
        kw["env"] = env
        return kw

    def _start_error(self, e: OSError) -> str:
        prog = self.argv[0]
        if e.errno == errno.ENOENT:
            if os.path.exists(prog):  # the #! interpreter is what is missing
                return f"script interpreter not found: {prog}"
            return f"script not found: {prog}"
        if e.errno == errno.EACCES:
            return f"script not executable: {prog}"
        if e.errno == errno.ENOEXEC:
            return f"script not executable: {prog} (exec format error)"
        if e.errno == errno.EPERM and self.user is not None:
            return f"script cannot run as {self.user}: operation not permitted"
        return f"script failed to start: {prog}: {describe_os_error(e)}"


def verdict(run: ScriptRun, timeout: float) -> Result:
    """Map one run to a Result (see the module docstring)."""
    rc = run.returncode
    if run.timed_out or rc is None:
        return Result(False, f"script timed out after {timeout:g}s", None, run.duration)
    if rc < 0:
        return Result(False, f"script killed by signal {-rc}", None, run.duration)
    if rc == 0:
        return Result(True, "", None, run.duration)
    if rc >= 2:
        return Result(True, "", rc - 2, run.duration)
    line = first_line(run.stderr) or first_line(run.stdout)
    return Result(False, f"script exit {rc}: {line}" if line else f"script exit {rc}", None, run.duration)


def first_line(data: bytes) -> str:
    """The first non-blank line of `data`, stripped and cut to REASON_MAX characters."""
    text = data.decode("utf-8", "replace")
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:REASON_MAX]
    return ""


class _NotStarted(Exception):
    """The script could not be started; the message is the Result's reason."""


class _Capture:
    """Read one pipe on the event loop: keep the first `limit` bytes, then
    drain (discard) at most one pipe-full per _DRAIN_PAUSE."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, limit: int) -> None:
        self._loop = loop
        self._fd: int | None = fd
        self._limit = limit
        self._buf = bytearray()
        self._paused: asyncio.TimerHandle | None = None
        os.set_blocking(fd, False)
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        if self._fd is None:
            return
        got = self._read_once()
        if got < 0:
            self.close()
            return
        if len(self._buf) >= self._limit and self._paused is None:
            # Kept all we keep: from now on one read per pause, so a flood costs a
            # bounded number of wake-ups (and a writer is held to 1 MiB per pause).
            self._loop.remove_reader(self._fd)
            self._paused = self._loop.call_later(_DRAIN_PAUSE, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if self._fd is not None:
            self._loop.add_reader(self._fd, self._readable)

    def _read_once(self) -> int:
        """One read: the number of bytes read, -1 at end of file or on an error."""
        assert self._fd is not None
        try:
            data = os.read(self._fd, _PIPE_SIZE)
        except BlockingIOError:
            return 0
        except OSError:
            return -1
        if not data:
            return -1
        room = self._limit - len(self._buf)
        if room > 0:
            self._buf += data[:room]
        return len(data)

    def close(self) -> None:
        """Take what is already in the pipe (up to the limit), then close it."""
        if self._fd is None:
            return
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        self._loop.remove_reader(self._fd)
        if len(self._buf) < self._limit:
            self._read_once()
        os.close(self._fd)
        self._fd = None

    def data(self) -> bytes:
        return bytes(self._buf)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
