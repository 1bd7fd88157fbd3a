"""Run many health checks on an asyncio loop; report state changes.

Each ScheduledCheck runs on a fixed-rate schedule: the next run is due one
interval after the previous *due* time (not after the previous run
finished), so a slow check does not drift its schedule. Jitter delays each
run's start by a random fraction of the interval, drawn per run, without
moving the schedule it is drawn from.

A run's deadline belongs to the schedule, not to its jittered start: the
first attempt ends by slot + timeout (but gets at least half its timeout
after a late start), and never later than just before the next slot. So
runs are not skipped when the timeout is close to the interval, and a
real that stops answering is marked down within fall x interval + timeout
of its failure whenever timeout >= 2 x jitter x interval (the defaults:
interval 5 s, timeout 2 s, jitter 0.1); in any case within
(fall + 1) x interval. Retries (each with the full timeout) lengthen a run.
A run still going when its next one falls due starts that one late if it
is less than half an interval late; runs later than that (and further
missed ones) are skipped, counted in `skipped`; runs never pile up. A
timeout longer than the interval (possible here, refused by the
configuration) is not cut.

New checks (at start-up, or added by a later update()) are spread over
their interval: the n checks an update() starts get first runs in n equal
slices of the interval, one in each, at a random point within it. 5,000
checks added at once do not all start at t=0.

One run is up to 1 + `retries` attempts, `retry_delay` apart: the first
success is the run's result; only when all attempts fail does the failure
count. Each attempt is bounded by the check's timeout (plus a little grace,
so that a checker that honours the timeout reports its own reason); a
checker that overruns or raises is a failure, never the end of its schedule.

The schedule is loop timers and callbacks, not a task per check: at
thousands of checks a second, a Task, a coroutine and two timeouts per run
cost more than the check. A checker with a `start(target, timeout, done)`
method (the tcp check: see connectprobe.py) is run through it, with no
coroutine at all; it must call done(result) once, by its own timeout, and
may return a cancel function. Any other checker's `check()` coroutine runs
in a task of its own per attempt, bounded as above.

A run that could not get a file descriptor is "not run": neither up nor
down, the Hysteresis is not fed, and it is counted (`not_run_by`, per
checker type and reason). Two ways it happens: the checker got EMFILE or
ENFILE (Result.ran is False), or the scheduler's file descriptor budget
(`budget`: runs in flight at once) had no room for its type. The budget is
shared in proportion to each type's number of checks, every type keeping
room for at least min(its checks, 32), so thousands of silent reals of one
type, each holding a socket for its whole timeout, cannot take the
descriptors other types' checks need; and within a type, checks of reals
that are down may fill only three quarters of its share, so the checks of
reals that are up (quick, when healthy) always find one.

The run's result is fed to a Hysteresis (rise/fall); subscribers are called
with (key, Transition, Result) on each transition it reports. Subscribers
are plain callables, called on the loop: they must not block (to do async
work, create a task).

update(checks) reconciles the running set with a new one: a check whose key
and options (the whole ScheduledCheck, checker included, compared with ==)
are unchanged keeps running with its Hysteresis state; a changed one is
restarted with fresh state, and if that fresh state differs from what the
subscribers were last told (it was up, it restarts down), they are told so
at once with reason "check reconfigured"; a removed one is cancelled.

The clock defaults to the running loop's (time.monotonic for asyncio's
loops), randomness to a fresh random.Random: both can be injected for tests.
Timers run on the loop's clock; an injected clock is only read.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from healthchecks import connectprobe
from healthchecks.hysteresis import Hysteresis, Transition
from healthchecks.result import Result, Target, os_error_result

log = logging.getLogger(__name__)

RECONFIGURED = "check reconfigured"
LAG_WINDOW = 10_000  # the most recent lags the percentiles are taken over
# Timers fire on a grid of this many seconds: checks due within one step run
# in one wake-up of the loop, and the connects they start are collected in
# the same one. Each wake-up costs more than a check; runs start up to one
# step late (counted in the lag).
COALESCE = 0.01


class SupportsCheck(Protocol):
    def check(self, target: Target, timeout: float, /) -> Awaitable[Result]: ...


class SupportsStart(Protocol):
    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        target: Target,
        timeout: float,
        done: Callable[[Result], object],
        /,
    ) -> Callable[[], None] | None: ...


Subscriber = Callable[[Hashable, Transition, Result], object]


@dataclass(frozen=True, slots=True)  # 10,000 of them on a big site: no __dict__ each
class ScheduledCheck:
    key: Hashable
    checker: SupportsCheck
    target: Target
    interval: float = 5.0  # seconds between due times
    timeout: float = 2.0  # seconds, each attempt
    rise: int = 2
    fall: int = 3
    jitter: float = 0.0  # each run starts up to jitter * interval late, drawn per run
    retries: int = 0  # extra attempts before a failed run counts
    retry_delay: float = 1.0  # seconds between attempts
    initially_up: bool = False  # a new real is out of rotation until it passes `rise` checks
    first_decides: bool = False  # initially_up is a guess the first result replaces (rise/fall after);
    # such a check's first run is at once, not spread over its interval

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError(f"{self.key!r}: interval must be > 0")
        if not self.timeout > 0:
            raise ValueError(f"{self.key!r}: timeout must be > 0")
        if self.rise < 1 or self.fall < 1:
            raise ValueError(f"{self.key!r}: rise and fall must be >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"{self.key!r}: jitter must be in [0, 1)")
        if self.retries < 0 or self.retry_delay < 0:
            raise ValueError(f"{self.key!r}: retries and retry_delay must be >= 0")


@dataclass(frozen=True, slots=True)
class CheckState:
    up: bool
    weight: int | None
    streak: int
    last: Result | None


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    checks: int
    runs: int  # runs finished (one run: the attempt and its retries)
    failures: int  # runs whose result was a failure
    retries: int  # retry attempts
    skipped: int  # due runs dropped because the run before was still going
    transitions: int  # reported to subscribers (including "check reconfigured")
    lag_p50: float  # seconds a run started after its due time, over the last LAG_WINDOW runs
    lag_p99: float
    lag_max: float  # since the scheduler started
    not_run: int = 0  # runs that could not get a file descriptor (neither up nor down)
    not_run_by: tuple[tuple[str, str, int], ...] = ()  # (checker type, reason, runs)
    in_flight_max: int = 0  # most runs in flight at once


@dataclass(frozen=True, slots=True)
class UpdateSummary:
    added: tuple[Hashable, ...]
    replaced: tuple[Hashable, ...]
    removed: tuple[Hashable, ...]
    kept: tuple[Hashable, ...]


@dataclass(eq=False, slots=True)
class _Entry:
    spec: ScheduledCheck
    hysteresis: Hysteresis
    slot: float = 0.0  # the fixed-rate due time of the current or next run
    due: float = 0.0  # slot plus this run's jitter
    timer: int = 0  # sequence number of its live entry in the scheduler's timer heap; 0: none
    task: asyncio.Task[Result] | None = field(default=None, repr=False)  # a check() attempt
    cancel: Callable[[], None] | None = field(default=None, repr=False)  # a start() attempt
    attempt: int = 0  # generation of the attempt in flight: late answers of old ones are ignored
    tries: int = 0  # attempts made in this run
    started: float = 0.0  # when this attempt started
    deadline: float = math.inf  # when this run's first attempt must be over
    holding: str | None = None  # the checker type whose budget this run holds
    stopped: bool = False


class Scheduler:
    def __init__(
        self,
        *,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        lag_window: int = LAG_WINDOW,
        coalesce: float = COALESCE,
        budget: int | None = None,
    ) -> None:
        self._coalesce = coalesce
        self._budget = budget
        self._caps: dict[str, int] = {}
        self._inflight: Counter[str] = Counter()
        self._inflight_total = self._inflight_max = 0
        self._not_run: Counter[tuple[str, str]] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock_fn = clock
        self._rng = rng or random.Random()
        self._entries: dict[Hashable, _Entry] = {}
        self._tasks: set[asyncio.Task[Result]] = set()  # including cancelled ones not yet finished
        self._subscribers: list[Subscriber] = []
        self._closed = False
        self._lags: deque[float] = deque(maxlen=lag_window)
        # Our own timer heap behind one loop timer: asyncio's TimerHandles
        # compare in Python (a dozen __lt__ calls per push at 5,000 checks).
        self._heap: list[tuple[float, int, Callable[[_Entry], None], _Entry]] = []
        self._seq = itertools.count(1)
        self._wakeup: asyncio.TimerHandle | None = None
        self._wakeup_at = math.inf
        self._ticking = False
        self._now: float | None = None
        self._lag_max = 0.0
        self._runs = self._failures = self._retries = self._skipped = self._transitions = 0

    # --- configuration -----------------------------------------------------

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call fn(key, transition, result) on every transition; returns an unsubscribe function."""
        self._subscribers.append(fn)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(fn)

        return unsubscribe

    def update(self, checks: Iterable[ScheduledCheck]) -> UpdateSummary:
        """Make the running set `checks` (see the module docstring). Call it on the loop."""
        if self._closed:
            raise RuntimeError("scheduler is closed")
        wanted: dict[Hashable, ScheduledCheck] = {}
        for spec in checks:
            if spec.key in wanted:
                raise ValueError(f"duplicate check key {spec.key!r}")
            wanted[spec.key] = spec
        removed = [key for key in self._entries if key not in wanted]
        for key in removed:
            self._stop(self._entries.pop(key))
        added: list[Hashable] = []
        replaced: list[Hashable] = []
        kept: list[Hashable] = []
        starting: list[_Entry] = []
        for key, spec in wanted.items():
            old = self._entries.get(key)
            if old is not None and old.spec == spec:
                kept.append(key)
                continue
            hysteresis = Hysteresis(
                spec.rise, spec.fall, up=spec.initially_up, decided=not spec.first_decides
            )
            entry = _Entry(spec, hysteresis)
            if old is None:
                added.append(key)
            else:
                replaced.append(key)
                self._stop(old)
            self._entries[key] = entry
            starting.append(entry)
            if old is not None and old.hysteresis.up != entry.hysteresis.up:
                up = entry.hysteresis.up
                self._notify(key, Transition(up, RECONFIGURED), Result(up, "" if up else RECONFIGURED))
        self._share_budget()
        now = self._clock()
        n = len(starting)
        for i, entry in enumerate(starting):
            # One check per 1/n of its interval, at a random point in its slice; a check whose
            # state is only a guess (first_decides: VRRP's few tracking scripts) runs at once.
            first = (
                now if entry.spec.first_decides else now + (i + self._rng.random()) / n * entry.spec.interval
            )
            self._start(entry, first)
        return UpdateSummary(tuple(added), tuple(replaced), tuple(removed), tuple(kept))

    def set_budget(self, budget: int | None) -> None:
        """Runs in flight at once (None: no limit), shared among the checker types."""
        self._budget = budget
        self._share_budget()

    def _share_budget(self) -> None:
        if self._budget is None:
            self._caps = {}
            return
        counts = Counter(_kind(e.spec) for e in self._entries.values())
        total = sum(counts.values()) or 1
        self._caps = {k: max(self._budget * n // total, min(n, 32)) for k, n in counts.items()}

    async def close(self) -> None:
        """Cancel every check and wait until all their tasks are finished."""
        self._closed = True
        for entry in self._entries.values():
            self._stop(entry)
        self._entries.clear()
        self._heap.clear()
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup, self._wakeup_at = None, math.inf
        tasks = list(self._tasks)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._loop = None

    async def __aenter__(self) -> Scheduler:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- observation -------------------------------------------------------

    def keys(self) -> list[Hashable]:
        return list(self._entries)

    def state(self, key: Hashable) -> CheckState | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        h = entry.hysteresis
        return CheckState(h.up, h.weight, h.streak, h.last)

    def snapshot(self) -> SchedulerStats:
        lags = sorted(self._lags)
        return SchedulerStats(
            checks=len(self._entries),
            runs=self._runs,
            failures=self._failures,
            retries=self._retries,
            skipped=self._skipped,
            transitions=self._transitions,
            lag_p50=_percentile(lags, 0.50),
            lag_p99=_percentile(lags, 0.99),
            lag_max=self._lag_max,
            not_run=sum(self._not_run.values()),
            not_run_by=tuple((k, r, n) for (k, r), n in sorted(self._not_run.items())),
            in_flight_max=self._inflight_max,
        )

    # --- the work ----------------------------------------------------------

    def _clock(self) -> float:
        if self._now is not None:  # inside a tick: one reading serves every check it runs
            return self._now
        if self._clock_fn is not None:
            return self._clock_fn()
        return self._running().time()

    def _running(self) -> asyncio.AbstractEventLoop:
        # Cached: on Python 3.11 every asyncio.get_running_loop() is a getpid()
        # system call, which was two per check.
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _at(self, when: float, fn: Callable[[_Entry], None], entry: _Entry) -> None:
        """Call fn(entry) at `when` on our clock, unless entry.timer changes before."""
        seq = next(self._seq)
        entry.timer = seq
        heapq.heappush(self._heap, (when, seq, fn, entry))
        if when < self._wakeup_at and not self._ticking:  # a tick re-arms for the heap's top at its end
            self._rearm(when)

    def _rearm(self, when: float) -> None:
        if self._wakeup is not None:
            self._wakeup.cancel()
        loop = self._running()
        if self._coalesce:
            when = math.ceil(when / self._coalesce) * self._coalesce
        self._wakeup_at = when
        if self._clock_fn is not None:  # the loop's timers run on the loop's clock
            when = loop.time() + (when - self._clock_fn())
        self._wakeup = loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self._wakeup = None
        self._wakeup_at = math.inf
        heap = self._heap
        now = self._now = self._clock()
        self._ticking = True
        try:
            while heap and heap[0][0] <= now:
                _, seq, fn, entry = heapq.heappop(heap)
                if entry.timer == seq:
                    entry.timer = 0
                    fn(entry)
            # Connects started just now have often completed already (a handshake
            # on a local link runs in the kernel before connect() returns): take
            # their answers in this wake-up rather than in the next.
            prober = connectprobe.existing(self._running())
            if prober is not None and prober.pending:
                self._now = None
                self._now = self._clock()
                prober.collect()
        finally:
            self._ticking = False
            self._now = None
        if heap:
            self._rearm(heap[0][0])

    def _start(self, entry: _Entry, first_due: float) -> None:
        entry.slot = first_due
        self._arm(entry)

    def _release(self, entry: _Entry) -> None:
        if entry.holding is not None:
            self._inflight[entry.holding] -= 1
            self._inflight_total -= 1
            entry.holding = None

    def _stop(self, entry: _Entry) -> None:
        self._release(entry)
        entry.stopped = True
        entry.attempt += 1
        entry.timer = 0
        if entry.cancel is not None:
            cancel, entry.cancel = entry.cancel, None
            cancel()
        if entry.task is not None:
            entry.task.cancel()
            entry.task = None

    def _arm(self, entry: _Entry) -> None:
        spec = entry.spec
        entry.due = entry.slot
        if spec.jitter:
            entry.due += self._rng.random() * spec.jitter * spec.interval
        self._at(entry.due, self._fire, entry)

    def _fire(self, entry: _Entry) -> None:
        lag = self._clock() - entry.due
        if lag < 0:
            lag = 0.0
        elif lag > self._lag_max:
            self._lag_max = lag
        self._lags.append(lag)
        entry.tries = 0
        spec = entry.spec
        kind = _kind(spec)
        cap = self._caps.get(kind)
        if cap is not None and not entry.hysteresis.up:
            cap = cap * 3 // 4  # a quarter of the share stays for reals that are up
        if cap is not None and self._inflight[kind] >= cap:
            self._not_run[kind, "no file descriptor in its budget"] += 1
            self._next(entry, self._clock())
            return
        self._inflight[kind] += 1
        self._inflight_total += 1
        if self._inflight_total > self._inflight_max:
            self._inflight_max = self._inflight_total
        entry.holding = kind
        if spec.timeout <= spec.interval:
            margin = min(0.1, 0.05 * spec.interval)  # room for the next slot's timer
            entry.deadline = min(
                max(entry.slot + spec.timeout, entry.due + spec.timeout / 2),
                entry.slot + spec.interval - margin,
            )
        else:
            entry.deadline = math.inf
        self._attempt(entry)

    def _attempt(self, entry: _Entry) -> None:
        entry.tries += 1
        entry.attempt += 1
        attempt = entry.attempt
        spec = entry.spec
        entry.started = self._clock()
        timeout = spec.timeout
        if entry.tries == 1 and entry.deadline - entry.started < timeout:
            timeout = max(0.001, round(entry.deadline - entry.started, 3))
        start = getattr(spec.checker, "start", None)
        if start is None:
            task = self._running().create_task(self._bounded(spec, timeout), name=f"check {spec.key!r}")
            entry.task = task
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._task_done(entry, attempt, t))
            return

        def done(result: Result) -> None:
            self._finished(entry, attempt, result)

        try:
            cancel = start(self._running(), spec.target, timeout, done)
        except Exception as e:
            log.exception("health check %r raised", spec.key)
            self._finished(entry, attempt, Result.down(f"checker error: {type(e).__name__}: {e}"[:160]))
            return
        if entry.attempt == attempt:  # still in flight (done() may have been called already)
            entry.cancel = cancel

    def _task_done(self, entry: _Entry, attempt: int, task: asyncio.Task[Result]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        self._finished(entry, attempt, task.result())

    async def _bounded(self, spec: ScheduledCheck, timeout: float) -> Result:
        try:
            async with asyncio.timeout(timeout + _grace(timeout)):
                return await spec.checker.check(spec.target, timeout)
        except TimeoutError:
            return Result.down(f"timeout after {timeout:g}s")
        except OSError as e:
            return os_error_result(e)
        except Exception as e:
            log.exception("health check %r raised", spec.key)
            return Result.down(f"checker error: {type(e).__name__}: {e}"[:160])

    def _finished(self, entry: _Entry, attempt: int, result: Result) -> None:
        if attempt != entry.attempt or entry.stopped:
            return  # a cancelled or superseded attempt
        entry.attempt += 1
        entry.task = None
        entry.cancel = None
        spec = entry.spec
        now = self._clock()
        result = Result(result.ok, result.reason, result.weight, now - entry.started, result.ran)
        if not result.ok and result.ran and entry.tries <= spec.retries:
            self._retries += 1
            self._at(now + spec.retry_delay, self._attempt, entry)
            return
        self._release(entry)
        if not result.ran:  # says nothing about the real: the verdict stands
            self._not_run[_kind(spec), result.reason] += 1
            self._next(entry, now)
            return
        self._runs += 1
        if not result.ok:
            self._failures += 1
        transition = entry.hysteresis.feed(result)
        if transition is not None:
            self._notify(spec.key, transition, result)
            if entry.stopped:  # a subscriber replaced or removed this check
                return
        self._next(entry, now)

    def _next(self, entry: _Entry, now: float) -> None:
        """Arm the run after this one, skipping slots that are long past."""
        spec = entry.spec
        entry.slot += spec.interval
        if entry.slot <= now - spec.interval / 2:  # this run overran the next due time(s): skip them
            missed = math.floor((now - entry.slot) / spec.interval) + 1
            self._skipped += missed
            entry.slot += missed * spec.interval
        self._arm(entry)  # a slot less than half an interval past runs now, late

    def _notify(self, key: Hashable, transition: Transition, result: Result) -> None:
        self._transitions += 1
        for fn in list(self._subscribers):
            try:
                fn(key, transition, result)
            except Exception:
                log.exception("health check subscriber %r failed on %r", fn, key)


def _kind(spec: ScheduledCheck) -> str:
    """The checker type a run's file descriptor is budgeted under."""
    return type(spec.checker).__name__


def _grace(timeout: float) -> float:
    """How long past its timeout a checker may take before it is cut off."""
    return min(1.0, max(0.05, 0.1 * timeout))


def _percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ordered list (0.0 if empty)."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]
