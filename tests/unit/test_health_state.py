"""healthy_state: inhibit/remove, start state, dynamic weights, quorum with hysteresis, sorry server."""

from __future__ import annotations

import socket

from ipvsmgr.config import load_text
from ipvsmgr.ipvs.model import DestKey, ServiceKey
from ipvsmgr.reconcile.health import QuorumState, RealHealth, healthy_state
from ipvsmgr.reconcile.overrides import Overrides

TEXT = """\
virtual_servers:
  - address: 198.18.0.10
    port: 80
    health_check: {type: tcp}
    quorum: {min_up: 2, hysteresis: 1}
    sorry_server: {address: 198.18.9.9, weight: 7}
    reals:
      - {address: 198.18.1.1, weight: 10}
      - {address: 198.18.1.2, weight: 10, health_check: {on_failure: remove}}
      - {address: 198.18.1.3, weight: 10, health_check: {start: up}}
      - {address: 198.18.1.4, weight: 3, health_check: false}
"""
CFG = load_text(TEXT, "t.yaml")
VS = ServiceKey(socket.AF_INET, 6, "198.18.0.10", 80)


def rid(n: int) -> tuple[ServiceKey, DestKey]:
    return (VS, DestKey(socket.AF_INET, f"198.18.1.{n}", 80))


SORRY = DestKey(socket.AF_INET, "198.18.9.9", 80)


def weights(
    health: dict[tuple[ServiceKey, DestKey], RealHealth], before: bool | None = None
) -> tuple[dict[str, int], QuorumState]:
    desired, q = healthy_state(CFG, health, None if before is None else {VS: before})
    return {d.key.addr: d.weight for d in desired.dests[VS].values()}, q[VS]


def test_unchecked_reals_take_their_start_state() -> None:
    w, q = weights({})
    # .1 starts down (inhibit: weight 0), .2 starts down (remove: absent), .3 starts up, .4 has no check
    assert w == {"198.18.1.1": 0, "198.18.1.3": 10, "198.18.1.4": 3}
    assert q == QuorumState(True, 2, 13)


def test_down_reals_are_inhibited_or_removed() -> None:
    all_up = {rid(n): RealHealth(True) for n in (1, 2, 3)}
    w, q = weights(all_up)
    assert w == {"198.18.1.1": 10, "198.18.1.2": 10, "198.18.1.3": 10, "198.18.1.4": 3}
    assert q == QuorumState(True, 4, 33)
    w, _ = weights({**all_up, rid(1): RealHealth(False, None, "connect refused"), rid(2): RealHealth(False)})
    assert w == {"198.18.1.1": 0, "198.18.1.3": 10, "198.18.1.4": 3}


def test_dynamic_weight_only_while_up() -> None:
    w, _ = weights({rid(1): RealHealth(True, 4), rid(3): RealHealth(False, 9)})
    assert w["198.18.1.1"] == 4 and w["198.18.1.3"] == 0


def test_quorum_loss_brings_the_sorry_server_and_hysteresis_delays_its_leaving() -> None:
    down = {rid(n): RealHealth(False) for n in (1, 2, 3)}
    w, q = weights(down, before=True)  # only the unchecked .4 is up: 1 < 2
    assert q.up is False and w == {"198.18.1.1": 0, "198.18.1.3": 0, "198.18.1.4": 3, "198.18.9.9": 7}
    assert SORRY in healthy_state(CFG, down, {VS: True})[0].dests[VS]
    one_back = {**down, rid(1): RealHealth(True)}
    w, q = weights(one_back, before=False)  # 2 up: enough to keep a quorum, not to regain one (needs 3)
    assert q.up is False and "198.18.9.9" in w
    w, q = weights(one_back, before=True)
    assert q.up is True and "198.18.9.9" not in w
    two_back = {**one_back, rid(3): RealHealth(True)}
    w, q = weights(two_back, before=False)
    assert q.up is True and "198.18.9.9" not in w


def test_services_without_quorum_are_always_up_and_unchanged_otherwise() -> None:
    cfg = load_text(
        "virtual_servers:\n  - {address: 198.18.0.10, port: 80, reals: [{address: 198.18.1.1}]}\n", "t"
    )
    desired, q = healthy_state(cfg, {})
    assert q[VS] == QuorumState(True, 1, 1)
    from ipvsmgr.reconcile.desired import desired_state

    assert desired.dests == desired_state(cfg).dests and desired.services == desired_state(cfg).services


def test_drained_reals_keep_weight_zero_and_do_not_count() -> None:
    all_up = {rid(n): RealHealth(True) for n in (1, 2, 3)}
    ov = Overrides(drained=frozenset({rid(1), rid(4)}))
    desired, q = healthy_state(CFG, all_up, {VS: True}, ov)
    w = {d.key.addr: d.weight for d in desired.dests[VS].values()}
    assert w == {"198.18.1.1": 0, "198.18.1.2": 10, "198.18.1.3": 10, "198.18.1.4": 0}
    assert q[VS] == QuorumState(True, 2, 20)
    # A drained real that fails with on_failure: remove is removed all the same.
    ov2 = Overrides(drained=frozenset({rid(2)}))
    desired, _ = healthy_state(CFG, {**all_up, rid(2): RealHealth(False)}, {VS: True}, ov2)
    assert DestKey(socket.AF_INET, "198.18.1.2", 80) not in desired.dests[VS]


def test_a_disabled_virtual_server_has_every_real_at_zero_and_no_sorry_server() -> None:
    all_up = {rid(n): RealHealth(True) for n in (1, 2, 3)}
    desired, q = healthy_state(CFG, all_up, {VS: True}, Overrides(disabled=frozenset({VS})))
    w = {d.key.addr: d.weight for d in desired.dests[VS].values()}
    assert w == {"198.18.1.1": 0, "198.18.1.2": 0, "198.18.1.3": 0, "198.18.1.4": 0}
    assert q[VS].up is False  # nothing counts: the quorum is lost, but no sorry server comes in
    assert VS in desired.services


def test_min_up_0_lets_the_weight_alone_decide_with_its_hysteresis() -> None:
    from ipvsmgr.config.model import Quorum
    from ipvsmgr.reconcile.health import _quorum_up

    q = Quorum(min_up=0, min_weight=2, hysteresis=2)  # keepalived's quorum 3 hysteresis 1
    assert _quorum_up(q, 1, 2, True) and not _quorum_up(q, 1, 1, True)  # lost below 2
    assert not _quorum_up(q, 1, 3, False) and _quorum_up(q, 1, 4, False)  # back at 4, one real is enough
    assert not _quorum_up(Quorum(min_up=1, min_weight=2, hysteresis=2), 1, 4, False)  # min_up counts it too


SLOW = TEXT.replace(
    "    quorum: {min_up: 2, hysteresis: 1}\n",
    "    quorum: {min_up: 2, hysteresis: 1}\n    slow_start: 10s\n",
)


def test_a_real_that_comes_up_ramps_its_weight_over_slow_start() -> None:
    cfg = load_text(SLOW, "t.yaml")
    assert cfg.virtual_servers[0].slow_start == 10.0
    health = {rid(1): RealHealth(True, since=100.0), rid(2): RealHealth(True, 4, since=100.0),
              rid(3): RealHealth(True)}  # fmt: skip  # .3 was up from the start: no ramp
    seen = []
    for now in (100.0, 102.5, 105.0, 109.9, 110.0, 200.0):
        desired, q = healthy_state(cfg, health, now=now)
        seen.append((now, {d.key.addr: d.weight for d in desired.dests[VS].values()}, desired.next_step))
        assert q[VS] == QuorumState(True, 4, 27)  # the quorum counts the full weights: the reals are up
    assert seen == [
        (100.0, {"198.18.1.1": 1, "198.18.1.2": 1, "198.18.1.3": 10, "198.18.1.4": 3}, 100.5),
        (102.5, {"198.18.1.1": 2, "198.18.1.2": 1, "198.18.1.3": 10, "198.18.1.4": 3}, 103.0),
        (105.0, {"198.18.1.1": 5, "198.18.1.2": 2, "198.18.1.3": 10, "198.18.1.4": 3}, 105.5),
        (109.9, {"198.18.1.1": 9, "198.18.1.2": 3, "198.18.1.3": 10, "198.18.1.4": 3}, 110.4),
        (110.0, {"198.18.1.1": 10, "198.18.1.2": 4, "198.18.1.3": 10, "198.18.1.4": 3}, None),
        (200.0, {"198.18.1.1": 10, "198.18.1.2": 4, "198.18.1.3": 10, "198.18.1.4": 3}, None),
    ]
    # without slow_start the same verdicts give the full weights at once
    desired, _ = healthy_state(CFG, health, now=100.0)
    assert {d.key.addr: d.weight for d in desired.dests[VS].values()}["198.18.1.1"] == 10
    assert desired.next_step is None


def test_slow_start_is_refused_for_hashing_schedulers() -> None:
    import pytest

    from ipvsmgr.config import ConfigError

    text = SLOW.replace(
        "    slow_start: 10s\n",
        "    slow_start: 10s\n    scheduler: mh\n    scheduler_flags: [mh-fallback]\n",
    )
    with pytest.raises(ConfigError, match=r"t.yaml:6:17: slow_start cannot ramp a real of the mh scheduler"):
        load_text(text, "t.yaml")
