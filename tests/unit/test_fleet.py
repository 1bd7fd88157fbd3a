"""The fleet's keys, reports and status table (ipvsmgr/fleet.py)."""

from __future__ import annotations

import json

from ipvsmgr.fleet import MAX_PROBLEMS, FleetSpec, parse_report, render, report

SPEC = FleetSpec((("198.18.0.5", 2379),), "/ipvsmgr/fleet/", "lb1")


def test_keys_and_labels() -> None:
    assert (SPEC.config_key, SPEC.node_key) == ("/ipvsmgr/fleet/config", "/ipvsmgr/fleet/nodes/lb1")
    assert SPEC.label(42) == "etcd:/ipvsmgr/fleet/config@42"


def test_reports_say_what_runs_and_what_was_refused() -> None:
    ok = json.loads(report(SPEC, 40, 0, [], "1 virtual server; 2/2 reals up"))
    assert (ok["state"], ok["applied"], ok["refused"], ok["problems"]) == ("applied", 40, None, [])
    many = [f"etcd:/ipvsmgr/fleet/config@41:{i}:1: bad" for i in range(30)]
    bad = json.loads(report(SPEC, 40, 41, many, ""))
    assert (bad["state"], bad["applied"], bad["refused"]) == ("refused", 40, 41)
    assert len(bad["problems"]) == MAX_PROBLEMS + 1 and bad["problems"][-1] == "... and 10 more"
    assert json.loads(report(SPEC, 0, 0, [], ""))["state"] == "waiting"
    assert parse_report("/ipvsmgr/fleet/nodes/lb9", b"{oops")["state"] == "unreadable"


def test_the_table_flags_refusals_and_nodes_behind() -> None:
    now = 1000.0
    reps = [
        {**json.loads(report(SPEC, 40, 0, [], "ok")), "node": "lb1", "at": now - 2},
        {**json.loads(report(SPEC, 38, 0, [], "ok")), "node": "lb2", "at": now - 3},
        {**json.loads(report(SPEC, 40, 41, ["etcd:/ipvsmgr/fleet/config@41:4:11: 99999 is above"], "")),
         "node": "lb3", "at": now - 1},
    ]  # fmt: skip
    text = render(41, reps, now)
    lines = text.splitlines()
    assert lines[0] == "configuration revision 41; 3 node(s) reporting"
    assert lines[1].split() == ["NODE", "RUNS", "STATE", "SEEN", "STATUS"]
    assert lines[2].split()[:3] == ["lb1", "40", "BEHIND"] and lines[3].split()[:3] == ["lb2", "38", "BEHIND"]
    assert lines[4].split()[:4] == ["lb3", "40", "REFUSED", "41"]
    assert lines[-2:] == ["lb3 refused revision 41:", "  etcd:/ipvsmgr/fleet/config@41:4:11: 99999 is above"]
    assert render(40, reps[:1], now).splitlines()[2].split()[:3] == ["lb1", "40", "applied"]
