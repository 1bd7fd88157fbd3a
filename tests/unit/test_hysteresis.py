"""Rise/fall hysteresis: exact counts, flapping, dynamic weight events."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from healthchecks.hysteresis import Hysteresis, Transition
from healthchecks.result import Result

OK = Result.up()
FAIL = Result.down("connect refused")


def feed_all(h: Hysteresis, results: list[Result]) -> list[Transition | None]:
    return [h.feed(r) for r in results]


def test_a_new_real_starts_down_and_rises_after_exactly_rise_successes() -> None:
    h = Hysteresis(rise=3, fall=2)
    assert not h.up
    assert feed_all(h, [OK, OK]) == [None, None]
    assert not h.up
    assert h.feed(OK) == Transition(True, "passed 3 checks", None)
    assert h.up
    assert h.streak == 0


def test_falls_after_exactly_fall_failures_with_the_last_reason() -> None:
    h = Hysteresis(rise=1, fall=3, up=True)
    assert feed_all(h, [FAIL, Result.down("status 503")]) == [None, None]
    assert h.up
    assert h.feed(Result.down("timeout after 2s")) == Transition(False, "timeout after 2s")
    assert not h.up
    assert h.last == Result.down("timeout after 2s")


def test_rise_1_and_fall_1_follow_every_result() -> None:
    h = Hysteresis(rise=1, fall=1)
    assert feed_all(h, [OK, FAIL, OK]) == [
        Transition(True, "passed 1 check"),
        Transition(False, "connect refused"),
        Transition(True, "passed 1 check"),
    ]


def test_a_result_that_agrees_with_the_state_resets_the_count() -> None:
    h = Hysteresis(rise=2, fall=3, up=True)
    # two failures, a success, two failures: never three in a row
    assert feed_all(h, [FAIL, FAIL, OK, FAIL, FAIL]) == [None] * 5
    assert h.up
    assert h.feed(FAIL) == Transition(False, "connect refused")
    assert feed_all(h, [OK, FAIL, OK, FAIL]) == [None] * 4
    assert not h.up


def test_dynamic_weight_events() -> None:
    h = Hysteresis(rise=2, fall=2)
    assert feed_all(h, [Result.up(7), Result.up(5)]) == [None, Transition(True, "passed 2 checks", 5)]
    assert h.weight == 5
    assert h.feed(Result.up(5)) is None  # same weight: no event
    assert h.feed(Result.up(9)) == Transition(True, "weight changed", 9)
    assert h.feed(Result.up()) == Transition(True, "weight changed", None)  # back to the configured
    # a failure in between (not enough to fall) does not hide a weight change
    assert h.feed(FAIL) is None
    assert h.feed(Result.up(3)) == Transition(True, "weight changed", 3)
    # while down, weights are not reported; the rise carries the last one
    assert feed_all(h, [FAIL, FAIL]) == [None, Transition(False, "connect refused")]
    assert feed_all(h, [Result.up(1), Result.up(4)]) == [None, Transition(True, "passed 2 checks", 4)]


results = st.lists(st.builds(Result, st.booleans(), st.just("r"), st.sampled_from([None, 1, 2])), max_size=60)


@given(
    seq=results,
    rise=st.integers(1, 5),
    fall=st.integers(1, 5),
    start_up=st.booleans(),
)
def test_state_changes_only_after_rise_or_fall_consecutive_results(
    seq: list[Result], rise: int, fall: int, start_up: bool
) -> None:
    h = Hysteresis(rise=rise, fall=fall, up=start_up)
    up = start_up
    run = 0  # consecutive results disagreeing with `up`, the reference model
    for i, r in enumerate(seq):
        t = h.feed(r)
        if r.ok == up:
            run = 0
            expected_change = False
        else:
            run += 1
            expected_change = run == (rise if r.ok else fall)
        if expected_change:
            up, run = r.ok, 0
            # the change needs that many consecutive agreeing results, ending here
            need = rise if r.ok else fall
            assert i + 1 >= need
            assert all(x.ok == r.ok for x in seq[i + 1 - need : i + 1])
            assert t is not None and t.up == r.ok
            assert t.reason == (f"passed {rise} check{'s' if rise != 1 else ''}" if r.ok else r.reason)
        elif t is not None:
            # the only other event: a weight change while staying up
            assert up and r.ok and t == Transition(True, "weight changed", r.weight)
        assert h.up == up
        assert h.last == r


@given(
    data=st.data(),
    rise=st.integers(2, 6),
    fall=st.integers(2, 6),
    start_up=st.booleans(),
)
def test_a_server_flapping_faster_than_rise_and_fall_never_changes_state(
    data: st.DataObject, rise: int, fall: int, start_up: bool
) -> None:
    # alternate runs of successes shorter than `rise` and failures shorter than `fall`
    runs = data.draw(st.lists(st.integers(1, max(rise, fall) - 1), max_size=30))
    h = Hysteresis(rise=rise, fall=fall, up=start_up)
    ok = not start_up
    for n in runs:
        n = min(n, (rise if ok else fall) - 1)
        for _ in range(n):
            t = h.feed(Result(ok, "" if ok else "flap"))
            assert t is None or t.reason == "weight changed"
            assert h.up == start_up
        ok = not ok


def test_an_undecided_state_is_replaced_by_the_first_result_then_rise_and_fall_apply() -> None:
    # keepalived's tracking scripts: assumed passing, one failure is enough the first time
    h = Hysteresis(rise=2, fall=3, up=True, decided=False)
    t = h.feed(Result.down("exit 1"))
    assert t == Transition(False, "exit 1") and not h.up
    assert h.feed(Result.up()) is None  # from now on rise 2
    assert h.feed(Result.up()) == Transition(True, "passed 2 checks")
    assert h.feed(Result.down("x")) is None and h.feed(Result.down("x")) is None  # fall 3
    # assumed failing, the first pass is enough
    h = Hysteresis(rise=5, fall=1, up=False, decided=False)
    assert h.feed(Result.up()) == Transition(True, "passed its first check")
    # a first result that agrees changes nothing, and decides
    h = Hysteresis(rise=2, fall=3, up=True, decided=False)
    assert h.feed(Result.up()) is None and h.decided
    assert h.feed(Result.down("x")) is None  # fall 3 now
