"""The shipped dashboard and alert rules (monitoring/): promtool checks the rules and runs their
unit tests, every alert has a test that fires it, the dashboard is what scripts/dashboard.py
generates, its layout is sound, and every query parses and names only series ipvsmgr serves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ipvsmgr import compat
from ipvsmgr.metrics import RealView, families
from tests.unit.test_metrics import DK2, SK, TABLE, XDP_STATUS, snapshot

ROOT = Path(__file__).resolve().parents[2]
MON = ROOT / "monitoring"
RULES = MON / "ipvsmgr-alerts.yml"
TESTS = MON / "ipvsmgr-alerts.test.yml"
DASHBOARD = MON / "ipvsmgr-dashboard.json"
SERIES = re.compile(r"\b((?:ipvsmgr|node_ipvs|keepalived)_[a-z0-9_]+)\b")


def promtool(*args: str, cwd: Path = MON) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is missing: apt-get install prometheus (scripts/setup.sh does)")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def served() -> set[str]:
    """Every series name ipvsmgr serves: a scrape of a daemon with every part configured."""
    snap = snapshot()
    snap.reals.append(RealView("web", SK, DK2, 5, "down", None, "file", 3, "connect refused"))
    snap.vrrp = [{**snap.vrrp[0], "interface": "eth0", "vrid": 51, "vips": [["198.18.0.10", "eth0"]]}]
    snap.vrrp_running = True
    snap.bgp = {
        "exabgp_pid": 42, "node_drained": False, "neighbors": {"198.18.0.1": {"state": "up", "ups": 1}},
        "prefixes": {"198.18.100.1/32": {"announce": True}}, "counters": {},
    }  # fmt: skip
    snap.xdp = XDP_STATUS
    snap.discovery = [{"virtual_server": "web", "source": "dns A web.", "stale": False, "reals": 2,
                       "removals_held": 0, "last_answer_s_ago": 1.0, "answers": 1, "failures": 0,
                       "changes": 1}]  # fmt: skip
    snap.fleet = {"applied": 3, "refused": None, "connected": True}
    snap.checks |= {"open_fds": 10, "open_fds_max": 12, "fd_limit": 1024, "in_flight_max": 3}
    snap.checks_not_run = (("tcp", "no file descriptor", 1),)
    totals = compat.Totals(1, 2, 3, 4, 5)
    return {f.name for f in families(snap, TABLE, True, totals) if f.samples}


def test_promtool_checks_the_rules_and_runs_their_tests() -> None:
    r = promtool("check", "rules", RULES.name)
    assert r.returncode == 0, r.stdout + r.stderr
    r = promtool("test", "rules", TESTS.name)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_has_a_test_that_fires_it_and_names_real_series() -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules}
    fired: set[str] = set()
    for t in yaml.safe_load(TESTS.read_text())["tests"]:
        for case in t.get("alert_rule_test", []):
            if case.get("exp_alerts"):
                fired.add(case["alertname"])
    assert set(alerts) == fired, f"alerts without a test that fires them: {set(alerts) - fired}"
    names = served()
    for name, rule in alerts.items():
        used = set(SERIES.findall(rule["expr"]))
        assert used and used <= names, (name, used - names)
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    # the list: two masters, quorum, flapping, reload refused, attack mode, BGP down, stale source
    for must in ("VrrpTwoMasters", "QuorumLost", "RealFlapping", "ReloadRefused", "XdpAttackMode",
                 "BgpSessionDown", "DiscoveryStale"):  # fmt: skip
        assert f"Ipvsmgr{must}" in alerts


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def test_the_dashboard_is_what_the_generator_writes() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "dashboard.py")], capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert (
        out.stdout == DASHBOARD.read_text()
    ), "run: python3 scripts/dashboard.py > monitoring/ipvsmgr-dashboard.json"


def test_the_dashboard_layout_is_sound() -> None:
    d = dashboard()
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
    variables = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "node", "virtual_server"} <= variables
    panels = d["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], int] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = p["id"]
        if p["type"] == "row":
            continue
        assert p["type"] in ("timeseries", "stat", "table", "state-timeline"), p["type"]
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            used = "$" + "$".join(re.findall(r"\$(\w+)", t["expr"]))
            for var in re.findall(r"\$(\w+)", used):
                assert var in variables or var == "__rate_interval", (p["title"], var)
    # what the issue asks the dashboard to cover
    titles = " ".join(p["title"] for p in panels).lower()
    for topic in ("virtual server", "real", "health", "failure", "vrrp", "bgp", "xdp", "reload", "discovery"):
        assert topic in titles, topic


def test_every_dashboard_query_parses_and_names_served_series(tmp_path: Path) -> None:
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    exprs += [
        v["query"]["query"] for v in dashboard()["templating"]["list"] if isinstance(v.get("query"), dict)
    ]
    names = served()
    rules = []
    for i, e in enumerate(exprs):
        used = set(SERIES.findall(e))
        assert used and used <= names, (e, used - names)
        m = re.fullmatch(r"label_values\((.*), *\w+\)", e)  # Grafana's, not PromQL: its selector parses
        promql = m.group(1) if m else e
        promql = (
            promql.replace("$__rate_interval", "1m").replace("$node", ".+").replace("$virtual_server", ".*")
        )
        rules.append({"record": f"dashboard:query_{i}", "expr": promql})
    f = tmp_path / "queries.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = promtool("check", "rules", str(f), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
