"""The discovery gate (ipvsmgr/sources/gate.py): last good list, debounce, churn limit."""

from __future__ import annotations

from ipvsmgr.sources.gate import WINDOW, Endpoint, Gate


def eps(*last: int, port: int | None = None) -> list[Endpoint]:
    return [Endpoint(f"198.18.1.{n}", port) for n in last]


def addrs(found: tuple[Endpoint, ...] | None) -> list[int] | None:
    return None if found is None else [int(e.address.rsplit(".", 1)[1]) for e in found]


def test_the_first_answer_is_taken_after_the_debounce_and_bursts_once() -> None:
    g = Gate(debounce=1.0)
    g.answer(eps(1, 2), 0.0)
    assert g.step(0.5) is None and g.next_due() == 1.0
    assert addrs(g.step(1.0)) == [1, 2]
    # a burst: three answers within the debounce, one change, the last one
    g.answer(eps(1, 2, 3), 10.0)
    g.answer(eps(1, 2, 3, 4), 10.4)
    assert g.step(11.0) is None  # 0.6 s after the last news
    g.answer(eps(1, 2, 3, 4, 5), 10.8)
    assert addrs(g.step(11.8)) == [1, 2, 3, 4, 5]
    assert g.counts["changes"] == 2
    g.answer(eps(5, 4, 3, 2, 1), 20.0)  # the same list in another order: nothing new
    assert g.pending is None and g.step(30.0) is None


def test_failures_keep_the_last_good_list_and_say_so() -> None:
    g = Gate(debounce=0.0)
    g.answer(eps(1, 2, 3), 0.0)
    assert addrs(g.step(0.0)) == [1, 2, 3]
    g.fail("dns A web.svc.test: NXDOMAIN (no such name)", 5.0)
    g.fail("dns A web.svc.test: timed out after 2s", 7.0)
    assert g.stale and g.error_since == 5.0 and "timed out" in g.error
    assert g.step(8.0) is None and addrs(g.current) == [1, 2, 3]
    g.answer(eps(1, 2, 3), 9.0)
    assert not g.stale and g.error == "" and g.step(9.0) is None


def test_the_churn_limit_stops_a_source_from_emptying_a_service() -> None:
    g = Gate(debounce=0.0, max_removed=0.25)
    g.answer(eps(*range(1, 21)), 0.0)
    g.step(0.0)
    g.answer(eps(1), 1.0)  # 19 of 20 gone at once
    assert len(g.step(1.0) or ()) == 15 and g.held == 14  # 5 (a quarter of 20) leave now
    assert g.step(30.0) is None and g.next_due() == 1.0 + WINDOW
    assert len(g.step(1.0 + WINDOW) or ()) == 12  # a quarter of 15, a minute later
    t = 1.0 + WINDOW
    while g.held:
        t += WINDOW
        g.step(t)
    assert addrs(g.current) == [1] and g.counts["held"] > 0
    # additions are never held back
    g.answer(eps(*range(1, 41)), t + 1)
    assert len(g.step(t + 1) or ()) == 40


def test_at_least_one_real_may_leave_per_minute_and_a_source_that_changes_its_mind_wins() -> None:
    g = Gate(debounce=0.0, max_removed=0.1)
    g.answer(eps(1, 2, 3), 0.0)
    g.step(0.0)
    g.answer(eps(1), 1.0)
    assert addrs(g.step(1.0)) == [1, 3] and g.held == 1  # one leaves (a tenth of 3 rounds to 0: 1)
    g.answer(eps(1, 3, 4), 2.0)  # .3 is back in the answer before its turn to leave
    assert addrs(g.step(2.0)) == [1, 3, 4] and g.held == 0
    g.answer(eps(1, 3, 4, 5), 3.0)  # ... and a weight change is a change, not a removal
    g.step(3.0)
    g.answer([*eps(1, 3, 4), Endpoint("198.18.1.5", None, 7)], 4.0)
    assert [e.weight for e in g.step(4.0) or ()] == [None, None, None, 7]
