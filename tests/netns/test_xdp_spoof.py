"""A SYN flood that spoofs live hosts passes the XDP guard no more than the
per-source budget allows (bench/xdp_spoof.py does the work; passes are
counted by nftables behind the guard). 50 live hosts, 200 SYN/s each for
5 s, a budget of 20 SYN/s with a burst of 40."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.netns.lab import have_root

pytestmark = [
    pytest.mark.skipif(not have_root(), reason="namespaces and XDP need root"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="the independent counter needs nft"),
]


def flood(**kw: object) -> dict[str, object]:
    from bench.xdp_spoof import run

    args: dict[str, object] = {"hosts": 50, "rate": 200, "seconds": 5.0, "budget": 20, "burst": 40, **kw}
    m = run(**args)  # type: ignore[arg-type]
    print(json.dumps(m))
    return m


def test_live_hosts_that_answer_the_rst_cookie_get_only_their_budget() -> None:
    m = flood(challenge="rst-cookie")
    assert m["hosts_verified"] == 50  # the hosts did answer: the attack worked as far as it can
    assert 0 < m["syn_passed"] <= m["budget_allows"], m  # type: ignore[operator]
    # the same flood without a budget (the guard before it had one) passes nearly all
    unbounded = flood(challenge="rst-cookie", budget=0)
    assert unbounded["syn_passed"] >= 0.9 * unbounded["syn_sent"], unbounded  # type: ignore[operator]


def test_the_retransmission_test_sends_live_hosts_nothing() -> None:
    m = flood(challenge="retransmit")
    assert m["sent_to_hosts"] == 0 and m["hosts_verified"] == 0, m
    assert m["syn_passed"] == 0, m


def test_an_attacker_replaying_each_syn_still_gets_only_the_budget() -> None:
    m = flood(challenge="retransmit", replay=True)
    assert m["hosts_verified"] == 50  # every source passed the test once ...
    # ... and then spent its budget: one pass each to verify, the rest within the budget
    assert m["syn_passed"] <= m["budget_allows"] + 50, m  # type: ignore[operator]
