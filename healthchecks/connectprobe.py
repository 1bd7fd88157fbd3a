"""TCP connect probes without a coroutine, a Future or a timer per probe.

The tcp check is the one run by the thousand, so its cost per run is the
cost of the whole health-checking daemon. asyncio's sock_connect costs a
Future, two selector updates (epoll_ctl ADD and DEL, each with a
SelectorKey), a timeout TimerHandle and a Task switch per connect: several
times the kernel's own work for the handshake. A ConnectProber instead keeps
its own epoll set, registered once with the loop as a single reader:

- a probe is socket() + connect() + one epoll_ctl(ADD); closing the socket
  removes it from the set, so there is no DEL;
- one wake-up of the loop collects every probe that finished since the last
  (epoll_wait returns them in one batch); a connected socket reports only
  EPOLLOUT, so only a failed one costs a getsockopt(SO_ERROR) for the reason;
- sockets are the C-level _socket.socket: the Python subclass adds an
  __init__ and a close() in Python, about a microsecond per probe;
- timeouts are kept in one FIFO per distinct timeout value (deadlines in a FIFO
  are in order, because they are start time + the same timeout), swept by one
  timer at most every SWEEP seconds instead of one timer per probe. A timeout
  is reported up to SWEEP late.

Closing is a reset (SO_LINGER 0), as HAProxy's checks do: no FIN exchange
and no TIME_WAIT socket per check on the load balancer (at 5,000 checks a
second that would be 300,000 of them), less work for both kernels.

`done(result)` is called exactly once per started probe unless cancelled,
possibly before start() returns (a connect that completes or fails at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import socket
import struct
import weakref
from _socket import socket as _csocket
from collections import deque
from collections.abc import Callable
from typing import Any

from healthchecks.result import Result, os_error_result

SWEEP = 0.01  # seconds: how late a timeout may be reported, and how often the sweep may run
_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
_BATCH = 1024
_LINGER0 = struct.pack("ii", 1, 0)  # events taken from the epoll set per epoll_wait

Done = Callable[[Result], object]
Cancel = Callable[[], None]

_UP = Result.up()
_reasons: dict[int, Result] = {}  # errno -> the failure Result (results are immutable: share them)


def failure(err: int) -> Result:
    r = _reasons.get(err)
    if r is None:
        r = _reasons[err] = os_error_result(OSError(err, os.strerror(err)))
    return r


class _Probe:
    __slots__ = ("deadline", "done", "prober", "sock", "timeout")

    def __init__(self, prober: ConnectProber, sock: _csocket, done: Done, deadline: float) -> None:
        self.prober = prober
        self.sock: _csocket | None = sock
        self.done = done
        self.deadline = deadline

    def cancel(self) -> None:
        sock = self.sock
        if sock is not None:
            self.sock = None
            self.prober._pending.pop(sock.fileno(), None)
            sock.close()


class ConnectProber:
    """Connect probes on one event loop. Use `for_loop()`: one per loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # The loop holds this object (through its reader), never the other way
        # round: the prober and its epoll fd go when the loop does.
        self._loop_ref = weakref.ref(loop)
        self._epoll = select.epoll()
        self._pending: dict[int, _Probe] = {}
        self._fifos: dict[float, deque[_Probe]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_at = 0.0
        loop.add_reader(self._epoll.fileno(), self.collect)

    def close(self) -> None:
        loop = self._loop_ref()
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._epoll.fileno())
        for probe in list(self._pending.values()):
            probe.cancel()
        if self._sweep is not None:
            self._sweep.cancel()
        self._epoll.close()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self, family: int, dest: Any, source: Any, timeout: float, done: Done) -> Cancel | None:
        """Connect to `dest` (a sockaddr of `family`), bound to `source` when
        not None; done(Result) when connected, refused or timed out."""
        try:
            sock = _csocket(family, _STREAM)
        except OSError as e:
            done(failure(e.errno or errno.EIO))
            return None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
            if source is not None:
                # Leave the port to connect(): checks bound to one source
                # address must not exhaust the ephemeral ports.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind(source)
            err = sock.connect_ex(dest)
        except OSError as e:
            sock.close()
            done(failure(e.errno or errno.EIO))
            return None
        if err != errno.EINPROGRESS:
            sock.close()
            done(_UP if err == 0 else failure(err))
            return None
        fd = sock.fileno()
        self._epoll.register(fd, select.EPOLLOUT)
        loop = self._loop_ref()
        assert loop is not None
        deadline = loop.time() + timeout
        probe = _Probe(self, sock, done, deadline)
        self._pending[fd] = probe
        fifo = self._fifos.get(timeout)
        if fifo is None:
            fifo = self._fifos[timeout] = deque()
        fifo.append(probe)
        if self._sweep is None or deadline < self._sweep_at - SWEEP:
            self._arm(loop, deadline)
        return probe.cancel

    def collect(self) -> None:
        """Answer every probe that has finished (also called by the loop when the set is readable)."""
        pending = self._pending
        while True:
            events = self._epoll.poll(0, _BATCH)
            for fd, mask in events:
                probe = pending.pop(fd, None)
                if probe is None or probe.sock is None:
                    continue
                sock = probe.sock
                probe.sock = None
                if mask == select.EPOLLOUT:  # connected: no error to read
                    sock.close()
                    probe.done(_UP)
                    continue
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                sock.close()
                probe.done(_UP if err == 0 else failure(err))
            if len(events) < _BATCH:
                return

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep_at = max(when, loop.time() + SWEEP)
        self._sweep = loop.call_at(self._sweep_at, self._expire)

    def _expire(self) -> None:
        self._sweep = None
        loop = self._loop_ref()
        if loop is None:
            return
        now = loop.time()
        for timeout, fifo in list(self._fifos.items()):
            while fifo and (fifo[0].sock is None or fifo[0].deadline <= now):
                probe = fifo.popleft()
                if probe.sock is not None:
                    probe.cancel()
                    probe.done(Result.down(f"timeout after {timeout:g}s"))
        # done() may have started probes (and armed a sweep) meanwhile.
        first: float | None = None
        for timeout, fifo in list(self._fifos.items()):
            if not fifo:
                del self._fifos[timeout]
            elif first is None or fifo[0].deadline < first:
                first = fifo[0].deadline
        if first is not None and (self._sweep is None or first < self._sweep_at - SWEEP):
            self._arm(loop, first)


_probers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ConnectProber] = weakref.WeakKeyDictionary()


def existing(loop: asyncio.AbstractEventLoop) -> ConnectProber | None:
    return _probers.get(loop)


_last: tuple[weakref.ref[asyncio.AbstractEventLoop], weakref.ref[ConnectProber]] | None = None


def for_loop(loop: asyncio.AbstractEventLoop) -> ConnectProber:
    global _last
    if _last is not None and _last[0]() is loop:  # the common case: one loop, asked once per probe
        last = _last[1]()
        if last is not None:
            return last
    prober = _probers.get(loop)
    if prober is None:
        prober = _probers[loop] = ConnectProber(loop)
    _last = (weakref.ref(loop), weakref.ref(prober))
    return prober
