"""Health events: the bus, and what the daemon emits for a check transition."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from healthchecks.hysteresis import Transition
from healthchecks.result import Result
from ipvsmgr.events import EventBus, QuorumChanged, RealChanged, describe
from ipvsmgr.ipvs.model import DestKey, ServiceKey
from ipvsmgr.reconcile.health import RealHealth
from ipvsmgr.runtime import Daemon

SVC = ServiceKey(socket.AF_INET, 6, "198.18.0.10", 80)
REAL = DestKey(socket.AF_INET, "198.18.1.1", 8080)


def test_bus_fans_out_and_survives_a_failing_listener(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    got: list[object] = []

    def broken(_e: object) -> None:
        raise RuntimeError("listener bug")

    bus.subscribe(broken)
    unsubscribe = bus.subscribe(got.append)
    event = RealChanged(SVC, REAL, False, "connect refused")
    with caplog.at_level(logging.ERROR):
        bus.emit(event)
    assert got == [event] and "listener bug" in caplog.text
    unsubscribe()
    bus.emit(event)
    assert got == [event]


def test_descriptions() -> None:
    assert describe(RealChanged(SVC, REAL, False, "status 503")) == (
        "real 198.18.1.1:8080 of tcp 198.18.0.10:80 DOWN: status 503"
    )
    assert describe(QuorumChanged(SVC, "web", False, 1, "1 reals up, weight 5")) == (
        "virtual server web (tcp 198.18.0.10:80) quorum LOST: 1 reals up, weight 5"
    )


def test_health_part_turns_transitions_into_health_and_events(tmp_path: object) -> None:
    daemon = Daemon("/nonexistent.yaml", str(tmp_path))
    seen: list[object] = []
    daemon.hub.events.subscribe(seen.append)
    checks = daemon.checks
    cid = ("TcpCheck", "the check")
    checks.members[cid] = [(SVC, REAL)]
    checks._on_transition(cid, Transition(False, "timeout after 1s"), Result.down("timeout after 1s"))
    t = time.monotonic()
    checks._on_transition(cid, Transition(True, "", 7), Result.up(7))
    h = checks.health[(SVC, REAL)]
    assert (h.up, h.weight, h.reason) == (True, 7, "")
    assert h.since is not None and t <= h.since <= time.monotonic()  # when it came up: slow start's clock
    checks._on_transition(cid, Transition(True, "", 9), Result.up(9))  # a new weight while up ...
    assert checks.health[(SVC, REAL)] == RealHealth(True, 9, "", h.since)  # ... is no new coming up
    assert seen == [  # flipped: a check's verdict changed it (notify_up / notify_down run)
        RealChanged(SVC, REAL, False, "timeout after 1s", flipped=True),
        RealChanged(SVC, REAL, True, "", 7, flipped=True),
        RealChanged(SVC, REAL, True, "", 9, flipped=False),  # only its weight
    ]
    assert daemon.wake.is_set()


def test_reals_with_the_same_check_share_one() -> None:
    from ipvsmgr.config import load_text
    from ipvsmgr.parts.health import shared_checks

    text = """\
virtual_servers:
  - name: a
    address: 198.18.0.10
    port: 80
    health_check: {type: tcp}
    reals: [{address: 198.18.1.1}, {address: 198.18.1.2}]
  - {name: b, address: 198.18.0.11, port: 80, health_check: {type: tcp}, reals: [{address: 198.18.1.1}]}
  - name: c
    address: 198.18.0.12
    port: 80
    health_check: {type: tcp, interval: 5s}
    reals: [{address: 198.18.1.1}]
"""
    shared = shared_checks(load_text(text, "x.yaml"))
    # 198.18.1.1:80 in a and b: one check; in c with another interval: its own; 198.18.1.2: its own
    assert sorted(len(rids) for _, rids in shared.values()) == [1, 1, 2]
    pair = next(rids for _, rids in shared.values() if len(rids) == 2)
    assert {r[0].addr for r in pair} == {"198.18.0.10", "198.18.0.11"}
