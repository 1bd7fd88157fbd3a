"""The VRRP state machine against RFC 5798 section 6, with numbers for time."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vrrp.machine import Become, Machine, Params, Send, State, master_down_interval, skew_time
from vrrp.packet import Advert

V4 = ipaddress.IPv4Address
ME = V4("198.18.0.11")
PEER_HIGH = V4("198.18.0.12")
PEER_LOW = V4("198.18.0.10")
VIP = (V4("198.18.0.100"),)


def machine(priority: int = 100, interval_cs: int = 100, **kw: object) -> Machine:
    return Machine(Params(vrid=51, priority=priority, interval_cs=interval_cs, **kw), ME)  # type: ignore[arg-type]


def advert(priority: int, interval_cs: int = 100, version: int = 3) -> Advert:
    return Advert(version, 51, priority, interval_cs, VIP)


def test_timer_arithmetic_from_the_rfc() -> None:
    # Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256 (v3, centiseconds)
    assert skew_time(100, 100, 3) == pytest.approx(156 / 256)
    assert skew_time(254, 10, 3) == pytest.approx(2 * 0.1 / 256)
    assert master_down_interval(100, 100, 3) == pytest.approx(3 + 156 / 256)
    assert master_down_interval(150, 10, 3) == pytest.approx(0.3 + 106 * 0.1 / 256)
    # v2: Skew_Time = (256 - Priority) / 256 seconds, whatever the interval
    assert master_down_interval(100, 300, 2) == pytest.approx(9 + 156 / 256)


def test_startup_goes_backup_then_master_after_master_down_interval() -> None:
    m = machine()
    assert m.start(0.0) == [Become(State.INIT, State.BACKUP, "started")]
    down = master_down_interval(100, 100, 3)
    assert m.deadline() == pytest.approx(down)
    assert m.timer(down - 0.001) == []
    actions = m.timer(down)
    assert actions == [Send(100), Become(State.BACKUP, State.MASTER, "no advert from the master")]
    assert m.deadline() == pytest.approx(down + 1.0)
    assert m.timer(down + 1.0) == [Send(100)]  # Adver_Timer
    assert m.deadline() == pytest.approx(down + 2.0)


def test_address_owner_is_master_at_once() -> None:
    m = machine(priority=255)
    actions = m.start(0.0)
    assert actions[0] == Send(255)
    assert isinstance(actions[1], Become) and actions[1].new is State.MASTER
    assert m.set_priority(10, 1.0) == []  # tracking never lowers an owner


def test_backup_adverts_reset_master_down_and_learn_the_interval() -> None:
    m = machine()
    m.start(0.0)
    for t in (1.0, 2.0, 3.0, 4.0):
        assert m.receive(advert(200), PEER_HIGH, t) == []
    assert m.deadline() == pytest.approx(4.0 + master_down_interval(100, 100, 3))
    m.receive(advert(200, interval_cs=10), PEER_HIGH, 5.0)  # the master now says 0.1 s
    assert m.master_interval_cs == 10
    assert m.deadline() == pytest.approx(5.0 + master_down_interval(100, 10, 3))
    assert m.master_address == PEER_HIGH


def test_v2_does_not_learn_the_interval() -> None:
    m = machine(version=2)
    m.start(0.0)
    m.receive(advert(200, interval_cs=300, version=2), PEER_HIGH, 1.0)
    assert m.master_interval_cs == 100


def test_backup_with_preempt_ignores_a_lower_master_and_takes_over() -> None:
    m = machine(priority=150)
    m.start(0.0)
    m.receive(advert(200), PEER_HIGH, 0.5)  # a higher master: stay backup
    deadline = m.deadline()
    assert deadline is not None
    m.receive(advert(100), PEER_LOW, 1.0)  # lower: discarded, the timer is not reset
    assert m.deadline() == deadline
    assert m.timer(deadline)[-1] == Become(State.BACKUP, State.MASTER, "no advert from the master")


def test_backup_without_preempt_follows_any_master() -> None:
    m = machine(priority=150, preempt=False)
    m.start(0.0)
    for t in (1.0, 2.0, 3.0, 4.0, 5.0):
        m.receive(advert(100), PEER_LOW, t)
    assert m.state is State.BACKUP
    assert m.deadline() == pytest.approx(5.0 + master_down_interval(150, 100, 3))


def test_preempt_delay() -> None:
    m = machine(priority=150, preempt_delay=10.0)
    m.start(0.0)
    for t in range(1, 11):  # for 10 s after it is first heard, the lower master is followed
        m.receive(advert(100), PEER_LOW, float(t))
        assert m.deadline() == pytest.approx(t + master_down_interval(150, 100, 3))
    at10 = m.deadline()
    m.receive(advert(100), PEER_LOW, 11.0)  # the delay has run out: discarded from now on
    m.receive(advert(100), PEER_LOW, 12.0)
    assert m.deadline() == at10
    assert at10 is not None
    assert m.timer(at10)[-1].new is State.MASTER  # type: ignore[union-attr]


def test_priority_zero_means_take_over_after_skew_time() -> None:
    m = machine(priority=100)
    m.start(0.0)
    m.receive(advert(200), PEER_HIGH, 1.0)
    m.receive(advert(0), PEER_HIGH, 1.5)
    assert m.deadline() == pytest.approx(1.5 + skew_time(100, 100, 3))


def master_at(t: float, priority: int = 150) -> Machine:
    m = machine(priority=priority)
    m.start(0.0)
    m.timer(master_down_interval(priority, 100, 3))
    assert m.state is State.MASTER
    return m


def test_master_yields_to_a_higher_priority() -> None:
    m = master_at(0)
    actions = m.receive(advert(200, interval_cs=50), PEER_HIGH, 10.0)
    assert actions == [Become(State.MASTER, State.BACKUP, f"higher priority master {PEER_HIGH} (200)")]
    assert m.master_interval_cs == 50
    assert m.deadline() == pytest.approx(10.0 + master_down_interval(150, 50, 3))


def test_equal_priority_the_higher_address_wins() -> None:
    m = master_at(0)
    assert m.receive(advert(150), PEER_LOW, 10.0) == [Send(150)]  # we (…11) beat …10
    assert m.state is State.MASTER
    assert m.receive(advert(150), PEER_HIGH, 11.0)[-1].new is State.BACKUP  # type: ignore[union-attr]


def test_master_answers_a_lower_master_and_a_leaving_one_at_once() -> None:
    m = master_at(0)
    assert m.receive(advert(100), PEER_LOW, 10.0) == [Send(150)]
    assert m.deadline() == pytest.approx(11.0)
    assert m.receive(advert(0), PEER_LOW, 10.5) == [Send(150)]
    assert m.state is State.MASTER


def test_shutdown_sends_priority_zero_from_master_only() -> None:
    m = master_at(0)
    assert m.shutdown(20.0) == [Send(0), Become(State.MASTER, State.INIT, "shutdown")]
    assert m.deadline() is None
    b = machine()
    b.start(0.0)
    assert b.shutdown(1.0) == [Become(State.BACKUP, State.INIT, "shutdown")]
    assert m.start(30.0)[0] == Become(State.INIT, State.BACKUP, "started")


def test_fault_and_recovery() -> None:
    m = master_at(0)
    assert m.set_fault(True, 10.0, "eth0 down") == [Send(0), Become(State.MASTER, State.FAULT, "eth0 down")]
    assert m.deadline() is None
    assert m.timer(100.0) == []
    m.receive(advert(50), PEER_LOW, 101.0)
    assert m.state is State.FAULT
    assert m.set_fault(False, 200.0, "eth0 up") == [Become(State.FAULT, State.BACKUP, "eth0 up")]


def test_tracking_priority_change_is_advertised_at_once() -> None:
    m = master_at(0)
    assert m.set_priority(90, 10.0) == [Send(90)]
    assert m.set_priority(90, 10.1) == []
    assert m.set_priority(-20, 11.0) == [Send(1)]  # clamped: 0 would mean "leaving"
    assert m.set_priority(900, 12.0) == [Send(254)]  # and never the owner's 255


Event = tuple[str, float, int]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["advert", "timer", "prio", "fault", "unfault", "stop", "start"]),
            st.floats(0, 5),
            st.integers(0, 255),
        ),
        max_size=60,
    )
)
def test_random_inputs_keep_the_invariants(events: list[Event]) -> None:
    m = machine(priority=120)
    now = 0.0
    m.start(now)
    for kind, dt, n in events:
        now += dt
        if kind == "advert":
            actions = m.receive(advert(n), PEER_HIGH if n % 2 else PEER_LOW, now)
        elif kind == "timer":
            d = m.deadline()
            actions = m.timer(max(now, d) if d is not None else now)
        elif kind == "prio":
            actions = m.set_priority(n, now)
        elif kind == "fault":
            actions = m.set_fault(True, now)
        elif kind == "unfault":
            actions = m.set_fault(False, now)
        elif kind == "stop":
            actions = m.shutdown(now)
        else:
            actions = m.start(now)
        for a in actions:
            if isinstance(a, Send):
                assert 0 <= a.priority <= 255
        # A master always has an advert timer, a backup a master-down timer, others none.
        d = m.deadline()
        assert (d is not None) == (m.state in (State.MASTER, State.BACKUP))


def test_release_hands_over_and_comes_back_if_nobody_takes_it() -> None:
    m = Machine(Params(vrid=1, priority=150, interval_cs=100), ipaddress.ip_address("198.18.0.1"))
    m.start(0.0)
    m.timer(m.deadline() or 0.0)
    assert m.state is State.MASTER
    actions = m.release(10.0)
    assert actions[0] == Send(0)  # the backups take over after their skew time
    assert isinstance(actions[1], Become) and actions[1].new is State.BACKUP
    assert m.priority == 1
    # Nobody took over: Master again after Master_Down_Interval (at priority 1).
    down = master_down_interval(1, 100, 3)
    assert m.deadline() == pytest.approx(10.0 + down)
    assert any(isinstance(a, Become) and a.new is State.MASTER for a in m.timer(10.0 + down))
    assert m.release(20.0) != [] and m.release(20.0) == []  # only a Master has something to hand over


def test_counts_for_the_keepalived_exporter_series() -> None:
    """become_master / release_master / priority zero received, as keepalived counts them."""
    m = machine()
    m.start(0.0)
    m.timer(master_down_interval(100, 100, 3))  # BACKUP -> MASTER
    assert (m.became_master, m.released_master) == (1, 0)
    m.receive(advert(200), PEER_HIGH, 5.0)  # a higher master: MASTER -> BACKUP
    assert (m.became_master, m.released_master) == (1, 1)
    m.receive(advert(0), PEER_HIGH, 6.0)  # it leaves
    assert m.zero_received == 1
    m.timer(10.0)  # takes over after skew time
    m.shutdown(11.0)  # MASTER -> INIT: a release too
    assert (m.became_master, m.released_master, m.zero_received) == (2, 2, 1)
    assert m.transitions == 5
