#!/usr/bin/env python3
"""Write monitoring/ipvsmgr-dashboard.json, the Grafana dashboard shipped in the .deb.

Generated rather than hand-edited: a panel is a title, a kind and its
queries, and the layout (ids, grid positions) follows from the order.
tests/unit/test_monitoring.py checks that the committed file is what this
prints, that every query parses (promtool) and names only series ipvsmgr
serves. Run `python3 scripts/dashboard.py > monitoring/ipvsmgr-dashboard.json`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$node"'  # every query is for the nodes picked at the top
VS = f'{SEL},virtual_server=~"$virtual_server"'

Panel = dict[str, Any]


def q(expr: str, legend: str = "", instant: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"expr": expr, "legendFormat": legend or "__auto", "datasource": DS}
    if instant:
        out |= {"instant": True, "range": False, "format": "table"}
    return out


def timeseries(title: str, unit: str, *targets: dict[str, Any], stack: bool = False) -> Panel:
    return {
        "type": "timeseries", "title": title, "datasource": DS, "targets": list(targets),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {"fillOpacity": 10, "stacking": {"mode": "normal" if stack else "none"}},
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi"}},
    }  # fmt: skip


def stat(title: str, target: dict[str, Any], mappings: list[dict[str, Any]] | None = None,
         thresholds: list[dict[str, Any]] | None = None) -> Panel:  # fmt: skip
    steps = thresholds or [{"color": "green", "value": None}]
    return {
        "type": "stat", "title": title, "datasource": DS, "targets": [target],
        "fieldConfig": {"defaults": {"mappings": mappings or [], "thresholds": {"mode": "absolute", "steps": steps},
                                     "color": {"mode": "thresholds"}}, "overrides": []},
        "options": {"colorMode": "background", "graphMode": "none", "reduceOptions": {"calcs": ["lastNotNull"]},
                    "textMode": "value_and_name"},
    }  # fmt: skip


def state_timeline(title: str, target: dict[str, Any], mappings: list[dict[str, Any]]) -> Panel:
    return {
        "type": "state-timeline", "title": title, "datasource": DS, "targets": [target],
        "fieldConfig": {"defaults": {"mappings": mappings, "color": {"mode": "thresholds"},
                                     "thresholds": {"mode": "absolute", "steps": [{"color": "text", "value": None}]}},
                        "overrides": []},
        "options": {"showValue": "auto", "mergeValues": True, "rowHeight": 0.8},
    }  # fmt: skip


def table(title: str, *targets: dict[str, Any], hide: tuple[str, ...] = ("Time", "__name__")) -> Panel:
    return {
        "type": "table", "title": title, "datasource": DS, "targets": list(targets),
        "fieldConfig": {"defaults": {}, "overrides": []},
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {h: True for h in hide}}},
        ],
        "options": {"showHeader": True},
    }  # fmt: skip


def value_map(pairs: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """{value: (text, color)} as one Grafana value mapping."""
    return [{"type": "value", "options": {v: {"text": t, "color": c, "index": i}
                                          for i, (v, (t, c)) in enumerate(pairs.items())}}]  # fmt: skip


UPDOWN = value_map({"0": ("down", "red"), "1": ("up", "green")})
VRRP = value_map(
    {"0": ("INIT", "blue"), "1": ("BACKUP", "yellow"), "2": ("MASTER", "green"), "3": ("FAULT", "red")}
)
NONZERO_RED: list[dict[str, Any]] = [{"color": "green", "value": None}, {"color": "red", "value": 1}]

SECTIONS: list[tuple[str, list[tuple[Panel, int, int]]]] = [
    ("Services", [
        (timeseries("New connections /s by virtual server", "cps",
                    q(f"sum by (virtual_server) (rate(ipvsmgr_virtual_server_connections_total{{{VS}}}[$__rate_interval]))",
                      "{{virtual_server}}")), 12, 8),
        (timeseries("Traffic by virtual server", "Bps",
                    q(f'sum by (virtual_server) (rate(ipvsmgr_virtual_server_bytes_total{{{VS},direction="in"}}[$__rate_interval]))',
                      "{{virtual_server}} in"),
                    q(f'sum by (virtual_server) (rate(ipvsmgr_virtual_server_bytes_total{{{VS},direction="out"}}[$__rate_interval]))',
                      "{{virtual_server}} out")), 12, 8),
        (stat("Quorum", q(f"min by (virtual_server) (ipvsmgr_virtual_server_quorum_up{{{VS}}})", "{{virtual_server}}"),
              UPDOWN, [{"color": "red", "value": None}, {"color": "green", "value": 1}]), 24, 4),
    ]),
    ("Reals", [
        (timeseries("Active connections by real", "short",
                    q(f"sum by (virtual_server, real) (ipvsmgr_real_active_connections{{{VS}}})",
                      "{{virtual_server}} {{real}}")), 12, 8),
        (timeseries("Weight in the kernel by real", "short",
                    q(f"ipvsmgr_real_weight{{{VS}}}", "{{instance}} {{virtual_server}} {{real}}")), 12, 8),
        (state_timeline("Health by real", q(f"min by (virtual_server, real) (ipvsmgr_real_up{{{VS}}})",
                                            "{{virtual_server}} {{real}}"), UPDOWN), 12, 8),
        (table("Reals down now, with their last failure",
               q(f"ipvsmgr_real_down_reason{{{VS}}} == 1", instant=True), hide=("Time", "__name__", "Value", "job")),
         12, 8),
        (timeseries("Health changes (flapping)", "short",
                    q(f"increase(ipvsmgr_real_health_transitions_total{{{VS}}}[10m]) > 0",
                      "{{virtual_server}} {{real}}")), 12, 8),
        (timeseries("Health checks", "ops",
                    q(f"rate(ipvsmgr_health_checks_total{{{SEL}}}[$__rate_interval])", "{{instance}} run"),
                    q(f"rate(ipvsmgr_health_check_failures_total{{{SEL}}}[$__rate_interval])", "{{instance}} failed"),
                    q(f"sum by (instance) (rate(ipvsmgr_health_checks_not_run_total{{{SEL}}}[$__rate_interval]))",
                      "{{instance}} not run (no fd)")), 12, 8),
    ]),
    ("VRRP", [
        (state_timeline("VRRP role by VIP", q(f"max by (instance, iname, ip_address) (keepalived_vrrp_state{{{SEL}}})",
                                              "{{instance}} {{iname}} {{ip_address}}"), VRRP), 16, 8),
        (stat("Masters per VIP (more than 1: split brain)",
              q("count by (vrid, ip_address) (keepalived_vrrp_state == 2)", "VRID {{vrid}} {{ip_address}}"),
              thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}, {"color": "red", "value": 2}]),
         8, 8),
        (timeseries("Adverts /s", "pps",
                    q(f"rate(keepalived_advertisements_sent_total{{{SEL}}}[$__rate_interval])", "{{instance}} {{iname}} sent"),
                    q(f"rate(keepalived_advertisements_received_total{{{SEL}}}[$__rate_interval])",
                      "{{instance}} {{iname}} received")), 12, 8),
        (timeseries("Dropped VRRP packets /s by reason", "pps",
                    q(f"sum by (instance, reason) (rate(ipvsmgr_vrrp_dropped_packets_total{{{SEL}}}[$__rate_interval]))",
                      "{{instance}} {{reason}}")), 12, 8),
    ]),
    ("BGP", [
        (state_timeline("BGP sessions", q(f'ipvsmgr_bgp_peer_state{{{SEL},state="up"}}', "{{instance}} {{peer}}"),
                        UPDOWN), 12, 8),
        (state_timeline("Announced prefixes", q(f"ipvsmgr_bgp_prefix_announced{{{SEL}}}", "{{instance}} {{prefix}}"),
                        value_map({"0": ("withdrawn", "red"), "1": ("announced", "green")})), 12, 8),
    ]),
    ("XDP guard", [
        (timeseries("Packets /s by verdict", "pps",
                    q(f"sum by (verdict, reason) (rate(ipvsmgr_xdp_packets_total{{{SEL}}}[$__rate_interval]))",
                      "{{verdict}} {{reason}}"), stack=True), 12, 8),
        (timeseries("SYN /s by VIP", "pps", q(f"ipvsmgr_xdp_vip_syn_rate{{{SEL}}}", "{{instance}} {{vip}}")), 6, 8),
        (stat("Attack mode", q(f"max by (vip) (ipvsmgr_xdp_vip_under_attack{{{SEL}}})", "{{vip}}"),
              value_map({"0": ("normal", "green"), "1": ("ATTACK", "red")}), NONZERO_RED), 6, 8),
    ]),
    ("Reloads and sources", [
        (timeseries("Reloads by result", "short",
                    q(f"sum by (result) (increase(ipvsmgr_reloads_total{{{SEL}}}[$__rate_interval]))", "{{result}}"),
                    stack=True), 8, 8),
        (timeseries("IPVS operations and errors /s", "ops",
                    q(f"rate(ipvsmgr_reconcile_operations_total{{{SEL}}}[$__rate_interval])", "{{instance}} operations"),
                    q(f"rate(ipvsmgr_reconcile_errors_total{{{SEL}}}[$__rate_interval])", "{{instance}} errors"),
                    q(f"rate(ipvsmgr_reconcile_drift_repairs_total{{{SEL}}}[$__rate_interval])", "{{instance}} drift")),
         8, 8),
        (table("Discovery sources",
               q(f"ipvsmgr_discovery_stale{{{VS}}}", instant=True),
               q(f"ipvsmgr_discovery_reals{{{VS}}}", instant=True),
               q(f"ipvsmgr_discovery_last_answer_age_seconds{{{VS}}}", instant=True),
               hide=("Time", "__name__", "job")), 8, 8),
    ]),
]  # fmt: skip


def dashboard() -> dict[str, Any]:
    panels: list[Panel] = []
    y, pid = 0, 1
    for section, row in SECTIONS:
        panels.append({"type": "row", "title": section, "id": pid, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})  # fmt: skip
        pid, y = pid + 1, y + 1
        x, line_h = 0, 0
        for panel, w, h in row:
            if x + w > 24:
                x, y, line_h = 0, y + line_h, 0
            targets = [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(panel["targets"])]
            panels.append(
                {"id": pid, "gridPos": {"x": x, "y": y, "w": w, "h": h}, **panel, "targets": targets}
            )
            pid, x, line_h = pid + 1, x + w, max(line_h, h)
        y += line_h
    variables = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
        {"name": "node", "type": "query", "label": "Node", "datasource": DS, "multi": True, "includeAll": True,
         "allValue": ".+", "refresh": 2, "query": {"query": "label_values(ipvsmgr_build_info, instance)",
                                                   "refId": "node"},
         "definition": "label_values(ipvsmgr_build_info, instance)"},
        {"name": "virtual_server", "type": "query", "label": "Virtual server", "datasource": DS, "multi": True,
         "includeAll": True, "allValue": ".*", "refresh": 2,
         "query": {"query": 'label_values(ipvsmgr_real_configured_weight{instance=~"$node"}, virtual_server)',
                   "refId": "vs"},
         "definition": 'label_values(ipvsmgr_real_configured_weight{instance=~"$node"}, virtual_server)'},
    ]  # fmt: skip
    return {
        "title": "ipvsmgr",
        "uid": "ipvsmgr-overview",
        "description": "ipvsmgr load balancers: services, reals and their health, VRRP, BGP, the XDP guard, "
        "reloads and discovery sources. Shipped as /usr/share/ipvsmgr/ipvsmgr-dashboard.json.",
        "tags": ["ipvsmgr", "ipvs", "load-balancer", "vrrp"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "schemaVersion": 39,
        "version": 1,
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def main() -> None:
    json.dump(dashboard(), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
