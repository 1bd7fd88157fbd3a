"""The check scheduler.

Most tests run on VirtualTimeLoop, an asyncio loop whose clock jumps to the
next timer whenever nothing is ready: sleeps, timeouts and the scheduler's
own clock (the loop's) all run in virtual time, so an hour of checks takes
milliseconds and timings are exact. A few run on a real loop with short
intervals, bounded to about a second.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import selectors
from collections import Counter
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from healthchecks.hysteresis import Transition
from healthchecks.result import Result, Target
from healthchecks.scheduler import RECONFIGURED, ScheduledCheck, Scheduler

T = TypeVar("T")
TARGET = Target("192.0.2.10", 80)


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if ready:
            return ready
        if timeout is None:  # no timer at all: wait for a thread, but not for ever
            result: list[tuple[selectors.SelectorKey, int]] = super().select(10.0)
            return result
        self.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def vrun(coro_fn: Callable[[], Coroutine[Any, Any, T]], limit: float = 100_000.0) -> T:
    """Run coro_fn() on a virtual-time loop, failing after `limit` virtual seconds."""

    async def bounded() -> T:
        async with asyncio.timeout(limit):
            return await coro_fn()

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(bounded())


def now() -> float:
    return asyncio.get_running_loop().time()


@dataclass(eq=False)
class Scripted:
    """A checker that answers from a script (then repeats the last answer) and
    records when each attempt started; `busy` is how long an attempt takes."""

    answers: list[Result] = field(default_factory=lambda: [Result.up()])
    busy: float = 0.0
    starts: list[float] = field(default_factory=list)

    async def check(self, target: Target, timeout: float) -> Result:
        self.starts.append(now())
        answer = self.answers[min(len(self.starts) - 1, len(self.answers) - 1)]
        if self.busy:
            await asyncio.sleep(self.busy)
        return answer


@dataclass(eq=False)
class Flip:
    """A checker whose answer the test sets."""

    ok: bool = True
    weight: int | None = None
    starts: list[float] = field(default_factory=list)

    async def check(self, target: Target, timeout: float) -> Result:
        self.starts.append(now())
        return Result(True, "", self.weight) if self.ok else Result.down("connect refused")


def spec(key: Hashable, checker: Any, **kw: Any) -> ScheduledCheck:
    kw.setdefault("interval", 10.0)
    kw.setdefault("timeout", 2.0)
    return ScheduledCheck(key, checker, TARGET, **kw)


Event = tuple[Hashable, Transition, Result]


def recorder(s: Scheduler) -> list[Event]:
    events: list[Event] = []
    s.subscribe(lambda key, t, r: events.append((key, t, r)))
    return events


def others() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


# --- start-up spread ---------------------------------------------------------


def test_first_runs_of_5000_checks_are_spread_over_the_interval() -> None:
    async def body() -> list[float]:
        s = Scheduler(coalesce=0.0, rng=random.Random(1))
        checkers = [Flip() for _ in range(5000)]
        t0 = now()
        s.update(spec(i, c, interval=10.0) for i, c in enumerate(checkers))
        await asyncio.sleep(10.0)
        firsts = [c.starts[0] - t0 for c in checkers]
        await s.close()
        return firsts

    firsts = vrun(body)
    assert all(0 <= f < 10.0 for f in firsts)
    # n equal slices, one check in each: every tenth of the interval holds 500 exactly
    assert sorted(Counter(int(f) for f in firsts).values()) == [500] * 10
    # and at a finer grain too: 500 per second is 5 per 10 ms, never a burst
    assert max(Counter(int(f * 100) for f in firsts).values()) <= 6
    assert min(firsts) < 0.002 and max(firsts) > 9.998


def test_first_runs_spread_with_the_injected_random_source() -> None:
    async def body(seed: int) -> list[float]:
        s = Scheduler(coalesce=0.0, rng=random.Random(seed))
        checkers = [Flip() for _ in range(3)]
        s.update(spec(i, c) for i, c in enumerate(checkers))
        await asyncio.sleep(10.0)
        await s.close()
        return [c.starts[0] for c in checkers]

    a, b, c = vrun(lambda: body(7)), vrun(lambda: body(7)), vrun(lambda: body(8))
    assert a == b != c
    assert [int(x * 3 / 10) for x in a] == [0, 1, 2]


def test_checks_whose_state_is_a_guess_run_at_once() -> None:
    # VRRP's tracking scripts: keepalived runs them all at start, before master-down can pass
    async def body() -> list[float]:
        s = Scheduler(coalesce=0.0, rng=random.Random(1))
        checkers = [Flip() for _ in range(3)]
        t0 = now()
        s.update(
            spec(i, c, interval=5.0, first_decides=True, initially_up=True) for i, c in enumerate(checkers)
        )
        await asyncio.sleep(1.0)
        await s.close()
        return [c.starts[0] - t0 for c in checkers]

    assert vrun(body) == [0.0, 0.0, 0.0]


# --- fixed rate ----------------------------------------------------------------


def test_a_check_taking_60_percent_of_the_interval_still_runs_every_interval() -> None:
    async def body() -> tuple[list[float], Any]:
        s = Scheduler(coalesce=0.0, rng=random.Random(2))
        c = Scripted(busy=6.0)
        s.update([spec("slow", c, interval=10.0, timeout=8.0)])
        await asyncio.sleep(1000.0)
        await s.close()
        return c.starts, s.snapshot()

    starts, stats = vrun(body)
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(starts)}
    assert gaps == {10.0}
    assert len(starts) == 100
    assert stats.skipped == 0
    assert stats.lag_max == pytest.approx(0, abs=1e-6)


def test_jitter_delays_runs_without_drifting_the_schedule() -> None:
    async def body() -> tuple[float, list[float]]:
        s = Scheduler(coalesce=0.0, rng=random.Random(3))
        c = Flip()
        t0 = now()
        s.update([spec("j", c, interval=10.0, jitter=0.2)])
        await asyncio.sleep(10_000.0)
        await s.close()
        return t0, c.starts

    t0, starts = vrun(body)
    slot0 = starts[0] - t0  # first slot plus its jitter: somewhere in the first interval
    offsets = [(x - t0) % 10.0 for x in starts]
    assert len(starts) in (999, 1000)
    # every run is within 2 s (20% of 10 s) after the same phase: the schedule does not drift
    base = min(offsets)
    assert all(0 <= o - base <= 2.0 for o in offsets)
    assert max(offsets) - base > 1.9  # and the jitter is used
    assert 0 <= slot0 < 12.0


def test_an_overrunning_check_skips_missed_runs_instead_of_piling_up() -> None:
    async def body() -> tuple[list[float], Any]:
        s = Scheduler(coalesce=0.0, rng=random.Random(4))
        # 25 s per attempt against a 10 s interval (timeout 30 s): runs every 30 s
        c = Scripted(busy=25.0)
        s.update([spec("overrun", c, interval=10.0, timeout=30.0)])
        await asyncio.sleep(301.0)
        await s.close()
        return c.starts, s.snapshot()

    starts, stats = vrun(body)
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(starts)}
    assert gaps == {30.0}
    assert stats.skipped == 2 * (len(starts) - 1) or stats.skipped == 2 * len(starts)
    assert stats.lag_max == pytest.approx(0, abs=1e-6)


# --- timeouts, errors, retries ------------------------------------------------


class Hang:
    async def check(self, target: Target, timeout: float) -> Result:
        await asyncio.sleep(3600)
        return Result.up()


class Boom:
    async def check(self, target: Target, timeout: float) -> Result:
        raise RuntimeError("bug in checker")


class Refused:
    async def check(self, target: Target, timeout: float) -> Result:
        raise ConnectionRefusedError(111, "Connection refused")


def test_a_checker_that_ignores_its_timeout_or_raises_is_a_failure() -> None:
    async def body() -> list[Event]:
        s = Scheduler(coalesce=0.0, rng=random.Random(5))
        events = recorder(s)
        s.update(
            [
                spec("hang", Hang(), timeout=2.0, rise=1, fall=1, initially_up=True),
                spec("boom", Boom(), rise=1, fall=1, initially_up=True),
                spec("refused", Refused(), rise=1, fall=1, initially_up=True),
            ]
        )
        await asyncio.sleep(10.0 + 3.0)
        stats = s.snapshot()
        await s.close()
        assert stats.failures == 3
        return events

    events = vrun(body)
    got = {key: (t.up, t.reason, r.duration) for key, t, r in events}
    assert got["hang"][:2] == (False, "timeout after 2s")
    assert got["hang"][2] == pytest.approx(2.2)  # 10% grace past the timeout
    assert got["boom"][:2] == (False, "checker error: RuntimeError: bug in checker")
    assert got["refused"][:2] == (False, "connect refused")


class NoSpread(random.Random):
    """random() is always 0: a lone check's first run is due at once, no jitter."""

    def random(self) -> float:
        return 0.0


def test_retries_run_after_retry_delay_before_a_failure_counts() -> None:
    async def body() -> tuple[list[float], list[Event], Any]:
        s = Scheduler(coalesce=0.0, rng=NoSpread())
        events = recorder(s)
        down, up = Result.down("status 503"), Result.up()
        # run 1: fail, fail, ok (passes on the 2nd retry); run 2: fail x3 -> counts
        c = Scripted(answers=[down, down, up, down, down, down, up])
        s.update([spec("r", c, interval=10.0, retries=2, retry_delay=1.5, rise=1, fall=1, initially_up=True)])
        t0 = now()
        await asyncio.sleep(15.0)
        stats = s.snapshot()
        await s.close()
        return [x - t0 for x in c.starts], events, stats

    starts, events, stats = vrun(body)
    assert starts == [0.0, 1.5, 3.0, 10.0, 11.5, 13.0]
    assert [(t.up, t.reason) for _, t, _ in events] == [(False, "status 503")]
    assert (stats.runs, stats.failures, stats.retries) == (2, 1, 4)


def test_no_retry_after_a_success() -> None:
    async def body() -> Any:
        s = Scheduler(coalesce=0.0, rng=random.Random(7))
        s.update([spec("ok", Flip(), retries=3)])
        await asyncio.sleep(100.0)
        stats = s.snapshot()
        await s.close()
        return stats

    stats = vrun(body)
    assert (stats.runs, stats.failures, stats.retries) == (10, 0, 0)


# --- transitions ---------------------------------------------------------------


def test_transitions_are_delivered_to_subscribers() -> None:
    async def body() -> tuple[list[Event], list[Event]]:
        s = Scheduler(coalesce=0.0, rng=random.Random(8))
        a, b = recorder(s), recorder(s)
        c = Flip(ok=True, weight=None)
        s.update([spec("web", c, interval=1.0, rise=2, fall=3)])
        await asyncio.sleep(5.0)  # up after 2 runs
        c.weight = 7
        await asyncio.sleep(2.0)
        c.ok = False
        await asyncio.sleep(5.0)  # down after 3 runs
        c.ok = True
        await asyncio.sleep(3.0)
        await s.close()
        return a, b

    a, b = vrun(body)
    assert a == b
    assert [(key, t) for key, t, _ in a] == [
        ("web", Transition(True, "passed 2 checks", None)),
        ("web", Transition(True, "weight changed", 7)),
        ("web", Transition(False, "connect refused")),
        ("web", Transition(True, "passed 2 checks", 7)),
    ]
    assert a[2][2].reason == "connect refused"


def test_a_failing_subscriber_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    def bad(key: Hashable, t: Transition, r: Result) -> None:
        raise RuntimeError("subscriber bug")

    async def body() -> tuple[list[Event], list[Event]]:
        s = Scheduler(coalesce=0.0, rng=random.Random(9))
        s.subscribe(bad)
        events = recorder(s)
        gone = recorder(s)
        s.subscribe(bad)
        s.update([spec("x", c := Flip(), rise=1, fall=1)])
        await asyncio.sleep(10.0)
        unsubscribe = s.subscribe(lambda *e: gone.append(e))
        unsubscribe()
        c.ok = False
        await asyncio.sleep(10.0)
        await s.close()
        return events, gone

    events, gone = vrun(body)
    assert [t.up for _, t, _ in events] == [True, False]  # the failing subscriber did not stop it
    assert len(gone) == 2  # the recorder, not the unsubscribed lambda
    assert len([r for r in caplog.records if "subscriber" in r.getMessage()]) == 4


# --- update() --------------------------------------------------------------------


def test_update_keeps_unchanged_checks_and_resets_changed_ones() -> None:
    async def body() -> None:
        s = Scheduler(coalesce=0.0, rng=random.Random(10))
        events = recorder(s)
        web, db, cache = Flip(), Flip(), Flip()
        first = [spec("web", web, rise=2), spec("db", db, rise=2), spec("cache", cache, rise=2)]
        s.update(first)
        await asyncio.sleep(25.0)
        assert all(s.state(k).up for k in ("web", "db", "cache"))  # type: ignore[union-attr]
        assert len(events) == 3
        web_runs = len(web.starts)
        events.clear()

        # web unchanged (an equal but new spec), db changed, cache removed, api added
        api = Flip()
        summary = s.update([spec("web", web, rise=2), spec("db", db, rise=3), spec("api", api)])
        assert summary.kept == ("web",)
        assert summary.replaced == ("db",)
        assert summary.removed == ("cache",)
        assert summary.added == ("api",)
        assert sorted(map(str, s.keys())) == ["api", "db", "web"]
        assert s.state("web").up  # type: ignore[union-attr]
        assert not s.state("db").up  # type: ignore[union-attr]  # fresh state: down again
        assert s.state("cache") is None
        # the subscribers hear at once that db is out of rotation until it rises again
        assert [(k, t) for k, t, _ in events] == [("db", Transition(False, RECONFIGURED))]

        cache_runs = len(cache.starts)
        await asyncio.sleep(10.0)
        assert len(web.starts) == web_runs + 1  # still on its schedule, not restarted
        assert len(cache.starts) == cache_runs  # cancelled
        await asyncio.sleep(30.0)
        assert s.state("db").up and s.state("api").up  # type: ignore[union-attr]
        rises = sorted((str(k), t.reason) for k, t, _ in events[1:])
        assert rises == [("api", "passed 2 checks"), ("db", "passed 3 checks")]
        await s.close()
        assert others() == set()

    vrun(body)


def test_update_restarting_a_down_check_down_says_nothing() -> None:
    async def body() -> list[Event]:
        s = Scheduler(coalesce=0.0, rng=random.Random(11))
        events = recorder(s)
        c = Flip(ok=False)
        s.update([spec("x", c)])
        await asyncio.sleep(30.0)
        s.update([spec("x", c, interval=5.0)])
        await asyncio.sleep(30.0)
        await s.close()
        return events

    assert vrun(body) == []


def test_update_rejects_duplicate_keys_and_runs_after_close() -> None:
    async def body() -> None:
        s = Scheduler(coalesce=0.0)
        with pytest.raises(ValueError, match="duplicate"):
            s.update([spec("a", Flip()), spec("a", Flip())])
        await s.close()
        with pytest.raises(RuntimeError):
            s.update([])

    vrun(body)


def test_options_are_validated() -> None:
    for bad in ({"interval": 0}, {"timeout": -1}, {"rise": 0}, {"fall": 0}, {"jitter": 1.0}, {"retries": -1}):
        with pytest.raises(ValueError):
            spec("x", Flip(), **bad)


# --- statistics, clock injection, close -------------------------------------------


def test_lag_statistics() -> None:
    # The loop stalls just before 4 of 100 runs are due: 3 by 0.5 s, one by 1 s.
    async def body() -> Any:
        loop = asyncio.get_running_loop()
        s = Scheduler(coalesce=0.0, rng=NoSpread())
        t0 = now()
        s.update([spec("c", Flip(), interval=2.0)])
        for k, stall in ((10, 0.5), (40, 0.5), (70, 0.5), (90, 1.0)):
            loop.call_at(t0 + 2.0 * k - 0.001, jump_virtual_clock, stall)
        await asyncio.sleep(199.0)
        stats = s.snapshot()
        await s.close()
        return stats

    stats = vrun(body)
    assert stats.checks == 1
    assert stats.runs == 100
    assert stats.skipped == 0  # late, not so late that a run is dropped
    assert stats.lag_p50 == 0.0
    assert stats.lag_p99 == pytest.approx(0.499, abs=1e-6)
    assert stats.lag_max == pytest.approx(0.999, abs=1e-6)


def test_the_injected_clock_is_the_one_used() -> None:
    # A clock with another epoch (and running at the loop's rate) changes nothing.
    async def body() -> tuple[list[float], Any]:
        s = Scheduler(coalesce=0.0, clock=lambda: now() + 12345.0, rng=NoSpread())
        c = Flip()
        t0 = now()
        s.update([spec("c", c, interval=3.0)])
        await asyncio.sleep(10.0)
        stats = s.snapshot()
        await s.close()
        return [x - t0 for x in c.starts], stats

    starts, stats = vrun(body)
    assert starts == [0.0, 3.0, 6.0, 9.0]
    assert stats.lag_max == 0.0


def test_lag_grows_when_the_loop_is_blocked() -> None:
    async def body() -> Any:
        s = Scheduler(coalesce=0.0, rng=random.Random(13))
        s.update([spec(i, Flip(), interval=1.0) for i in range(100)])
        await asyncio.sleep(10.0)
        before = s.snapshot()
        jump_virtual_clock(3.0)  # the loop "blocked" for 3 s
        await asyncio.sleep(10.0)
        after = s.snapshot()
        await s.close()
        return before, after

    before, after = vrun(body)
    assert before.lag_max == pytest.approx(0, abs=1e-6)
    assert after.lag_max == pytest.approx(3.0, abs=0.05)
    assert after.lag_p50 == pytest.approx(0, abs=1e-6)  # one late run per check out of ~19
    assert after.skipped > 0  # runs due during the block were dropped, not piled up


def jump_virtual_clock(seconds: float) -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    loop._virtual.now += seconds


def test_close_cancels_everything_and_leaves_no_pending_tasks() -> None:
    async def body() -> None:
        s = Scheduler(coalesce=0.0, rng=random.Random(14))
        s.update([spec(i, Scripted(busy=5.0), interval=10.0, timeout=8.0) for i in range(50)])
        s.update([spec(i, Scripted(busy=5.0), interval=10.0, timeout=8.0) for i in range(25, 75)])
        await asyncio.sleep(7.0)  # some checks mid-attempt
        assert others()
        await s.close()
        assert others() == set()
        assert s.snapshot().checks == 0

    vrun(body)


# --- on a real loop --------------------------------------------------------------------


async def bounded_real(coro: Coroutine[Any, Any, T], limit: float) -> T:
    async with asyncio.timeout(limit):
        return await coro


def test_real_timers_short_intervals() -> None:
    async def body() -> tuple[list[Flip], list[Event], Any]:
        s = Scheduler(coalesce=0.0)
        events = recorder(s)
        checkers = [Flip() for _ in range(20)]
        s.update(spec(i, c, interval=0.03, timeout=0.02, rise=2) for i, c in enumerate(checkers))
        await asyncio.sleep(0.5)
        stats = s.snapshot()
        await s.close()
        assert others() == set()
        return checkers, events, stats

    checkers, events, stats = asyncio.run(bounded_real(body(), 5))
    assert all(13 <= len(c.starts) <= 18 for c in checkers), [len(c.starts) for c in checkers]
    for c in checkers:  # fixed rate: start k is within a few ms of first + k * interval
        assert all(abs(x - (c.starts[0] + k * 0.03)) < 0.02 for k, x in enumerate(c.starts))
    assert len(events) == 20 and all(t.up for _, t, _ in events)
    assert stats.runs >= 20 * 13
    assert 0 <= stats.lag_p50 <= stats.lag_p99 <= stats.lag_max < 0.05


def test_real_timers_slow_checks_keep_the_rate() -> None:
    class Sleepy:
        def __init__(self) -> None:
            self.starts: list[float] = []

        async def check(self, target: Target, timeout: float) -> Result:
            self.starts.append(asyncio.get_running_loop().time())
            await asyncio.sleep(0.03)  # 60% of the 50 ms interval
            return Result.up()

    async def body() -> list[float]:
        s = Scheduler(coalesce=0.0)
        c = Sleepy()
        s.update([spec("slow", c, interval=0.05, timeout=0.04)])
        await asyncio.sleep(0.6)
        await s.close()
        return c.starts

    starts = asyncio.run(bounded_real(body(), 5))
    assert 10 <= len(starts) <= 13
    assert all(abs(x - (starts[0] + k * 0.05)) < 0.02 for k, x in enumerate(starts))


def test_timers_are_coalesced_onto_a_grid() -> None:
    # 200 checks at random offsets, 1 s interval, on a 10 ms grid: every run starts
    # on the grid, at most one step after it was due, in at most 100 wake-ups a second.
    async def body() -> tuple[list[float], Any]:
        s = Scheduler(coalesce=0.01, rng=random.Random(21))
        checkers = [Flip() for _ in range(200)]
        s.update(spec(i, c, interval=1.0) for i, c in enumerate(checkers))
        await asyncio.sleep(10.0)
        stats = s.snapshot()
        await s.close()
        return [t for c in checkers for t in c.starts], stats

    starts, stats = vrun(body)
    assert len(starts) >= 200 * 9
    assert all(abs(t / 0.01 - round(t / 0.01)) < 1e-6 for t in starts)
    assert len(set(starts)) <= 10 * 100 + 1
    assert 0 < stats.lag_max <= 0.01 + 1e-9
    assert stats.skipped == 0


def test_an_answer_within_a_tick_does_not_delay_the_other_checks() -> None:
    # A checker answering inside start() re-arms its check from within the
    # scheduler's tick; the other checks, due sooner, must still run on time.
    @dataclass(eq=False)
    class Instant:
        starts: list[float] = field(default_factory=list)

        def start(
            self,
            loop: asyncio.AbstractEventLoop,
            target: Target,
            timeout: float,
            done: Callable[[Result], object],
        ) -> None:
            self.starts.append(now())
            done(Result.up())

    async def body() -> tuple[list[Instant], Any]:
        s = Scheduler(coalesce=0.005, rng=random.Random(22))
        checkers = [Instant() for _ in range(50)]
        s.update(spec(i, c, interval=1.0) for i, c in enumerate(checkers))
        await asyncio.sleep(20.0)
        stats = s.snapshot()
        await s.close()
        return checkers, stats

    checkers, stats = vrun(body)
    assert all(19 <= len(c.starts) <= 21 for c in checkers)
    assert stats.lag_max <= 0.005 + 1e-9


@dataclass(eq=False)
class DiesAt:
    """Up until `at`, then silent: each attempt waits out its whole timeout."""

    at: float
    timeouts: list[float] = field(default_factory=list)

    async def check(self, target: Target, timeout: float) -> Result:
        if now() < self.at:
            return Result.up()
        self.timeouts.append(timeout)
        await asyncio.sleep(timeout)
        return Result.down(f"timeout after {timeout:g}s")


@pytest.mark.parametrize("timeout", [0.5, 1.0, 1.9, 2.0])
def test_time_to_mark_down_is_bounded_by_fall_intervals_plus_the_timeout(timeout: float) -> None:
    interval, fall, jitter = 2.0, 3, 0.1  # timeout >= 2 x jitter x interval: the bound holds

    async def body() -> tuple[list[float], int]:
        rng = random.Random(11)
        took = []
        skipped = 0
        for _ in range(40):
            s = Scheduler(coalesce=0.0, rng=rng)
            events = recorder(s)
            dies = now() + 20.0 + rng.random() * interval
            c = DiesAt(dies)
            s.update([spec("r", c, interval=interval, timeout=timeout, fall=fall, rise=1, jitter=jitter,
                           initially_up=True)])  # fmt: skip
            while not any(not t.up for _, t, _ in events):
                await asyncio.sleep(0.05)
            took.append(now() - dies)
            skipped += s.snapshot().skipped
            await s.close()
        return took, skipped

    took, skipped = vrun(body)
    assert skipped == 0
    assert max(took) <= fall * interval + timeout + 0.05, (max(took), timeout)  # 0.05: the polling
    assert min(took) >= (fall - 1) * interval  # three runs did fail


class Silent:
    """Holds its socket for the whole timeout, then fails (a blackholed real)."""

    async def check(self, target: Target, timeout: float) -> Result:
        await asyncio.sleep(timeout)
        return Result.down(f"timeout after {timeout:g}s")


class NoDescriptor:
    async def check(self, target: Target, timeout: float) -> Result:
        raise OSError(24, "Too many open files")


def test_a_file_descriptor_budget_keeps_other_types_running() -> None:
    async def body() -> tuple[list[Event], Any, list[float]]:
        s = Scheduler(coalesce=0.0, rng=random.Random(5), budget=40)
        events = recorder(s)
        healthy = Flip()
        dead = [spec(("dead", i), Silent(), interval=2.0, timeout=1.9, fall=1) for i in range(300)]
        alive = [spec(("alive", i), healthy, interval=2.0, timeout=1.0, fall=1, initially_up=True)
                 for i in range(5)]  # fmt: skip
        s.update(dead + alive)
        await asyncio.sleep(100.0)
        stats = s.snapshot()
        await s.close()
        return events, stats, healthy.starts

    events, stats, starts = vrun(body)
    # the healthy type kept its share: every one of its runs ran, none went down
    assert not any(key[0] == "alive" for key, _, _ in events)
    assert len(starts) >= 5 * 49
    by = {(kind, reason): n for kind, reason, n in stats.not_run_by}
    assert by.get(("Flip", "no file descriptor in its budget"), 0) == 0
    assert by[("Silent", "no file descriptor in its budget")] > 0  # the dead ones were rationed
    assert stats.in_flight_max <= 40


def test_a_check_without_a_file_descriptor_is_neither_up_nor_down() -> None:
    async def body() -> tuple[list[Event], Any, Any]:
        s = Scheduler(coalesce=0.0, rng=random.Random(6))
        events = recorder(s)
        s.update([spec("emfile", NoDescriptor(), interval=1.0, timeout=0.5, fall=1, initially_up=True)])
        await asyncio.sleep(10.0)
        state, stats = s.state("emfile"), s.snapshot()
        await s.close()
        return events, state, stats

    events, state, stats = vrun(body)
    assert events == [] and state is not None and state.up  # the verdict stands
    assert stats.not_run >= 9 and stats.failures == 0 and stats.runs == 0
    assert stats.not_run_by == (("NoDescriptor", "not run: too many open files", stats.not_run),)


@dataclass(eq=False)
class SomeDead:
    """One checker type for all: port 80 answers at once, any other port is silent."""

    served: Counter[str] = field(default_factory=Counter)

    async def check(self, target: Target, timeout: float) -> Result:
        if target.port == 80:
            self.served[target.address] += 1
            return Result.up()
        await asyncio.sleep(timeout)
        return Result.down(f"timeout after {timeout:g}s")


def test_within_a_type_the_reals_that_are_up_keep_a_share() -> None:
    async def body() -> tuple[list[Event], Counter[str], Any]:
        s = Scheduler(coalesce=0.0, rng=random.Random(8), budget=40)
        events = recorder(s)
        c = SomeDead()
        dead = [ScheduledCheck(("dead", i), c, Target("192.0.2.1", 81 + i), interval=2.0, timeout=1.9)
                for i in range(300)]  # fmt: skip
        alive = [ScheduledCheck(("alive", i), c, Target(f"198.51.100.{i}", 80), interval=2.0, timeout=1.0,
                                initially_up=True) for i in range(5)]  # fmt: skip
        s.update(dead + alive)
        await asyncio.sleep(100.0)
        stats = s.snapshot()
        await s.close()
        return events, c.served, stats

    events, served, stats = vrun(body)
    assert not any(key[0] == "alive" for key, _, _ in events)
    assert len(served) == 5 and min(served.values()) >= 49  # every healthy real checked every interval
    assert stats.not_run > 0 and stats.in_flight_max <= 40
