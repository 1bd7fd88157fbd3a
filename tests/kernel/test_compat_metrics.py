"""Drop-in series against the real program (issue 22): Debian's prometheus-node-exporter runs its
IPVS collector against the same kernel as the daemon, and every node_ipvs_* series (name, labels,
value, help and type) that it serves, ipvsmgr serves the same. The table holds what dashboards meet:
TCP with NAT reals (one down at weight 0), UDP, IPv6, a fwmark service, connections active and
inactive, and traffic in the totals. The daemon's VRRP instance is served as keepalived_* with the
keepalived exporter's encoding (2: MASTER)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.kernel.helpers import Lab, connect, sh
from tests.kernel.test_daemon_control import Echo, echo_ok
from tests.kernel.test_health import wait_for, weights

IPVSMGR = "127.0.0.1:19474"
NODE_EXPORTER = "127.0.0.1:19100"

CONFIG = """\
vrrp:
  instances:
    - name: VI_1
      interface: dummy0
      vrid: 51
      priority: 255
      advert_interval: 1s
      virtual_addresses: [198.18.9.10/32]
virtual_servers:
  - name: web
    address: 198.18.0.10
    port: 8484
    scheduler: rr
    health_check: {type: tcp, interval: 0.3s, timeout: 0.3s, rise: 1, fall: 1, jitter: 0}
    reals:
      - {address: 198.18.2.2, port: 8080}
      - {address: 198.18.2.3, port: 8080, weight: 3}
      - {address: 198.18.2.7, port: 8080}  # no server: down, weight 0
  - name: dns
    address: 198.18.0.10
    port: 53
    protocol: udp
    reals:
      - {address: 198.18.2.4, port: 5353, weight: 2}
  - name: web6
    address: 2001:db8::10
    port: 80
    reals:
      - {address: "2001:db8:1::2", port: 8080, weight: 5}
  - name: marked
    fwmark: 42
    reals:
      - {address: 198.18.2.5, port: 8080, weight: 7}
"""


def scrape(address: str) -> dict[str, tuple[str, str, dict[tuple[tuple[str, str], ...], float]]]:
    """{family: (help, type, {labels: value})} of the node_ipvs_* and keepalived_* series."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith(("node_ipvs", "keepalived")):
            values = {tuple(sorted(s.labels.items())): s.value for s in fam.samples}
            out[fam.name] = (fam.documentation, fam.type, values)
    return out


def test_node_ipvs_series_are_node_exporters(ipvs: Lab, nat_lab: None) -> None:
    exporter = shutil.which("prometheus-node-exporter")
    if exporter is None:
        pytest.fail("prometheus-node-exporter is missing (scripts/setup.sh installs it)")
    servers = [Echo(a) for a in ("198.18.2.2", "198.18.2.3")]
    sh("ip", "link", "add", "dummy0", "type", "dummy")
    sh("ip", "link", "set", "dummy0", "up")
    sh("ip", "addr", "add", "198.18.9.1/24", "dev", "dummy0")
    log = Path(ipvs.work / "daemon.log")
    daemon = ipvs.daemon(ipvs.write("lb.yaml", CONFIG), log, "--metrics", IPVSMGR)
    only_ipvs = ["--collector.disable-defaults", "--collector.ipvs"]
    node = subprocess.Popen(
        [exporter, f"--web.listen-address={NODE_EXPORTER}", *only_ipvs],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    held: list[socket.socket] = []
    try:
        wait_for(lambda: weights().get("198.18.2.7:8080") == 0 and weights().get("198.18.2.2:8080") == 1, 90)
        wait_for(lambda: scrape(IPVSMGR).get("keepalived_vrrp_state") is not None, 30)
        # connections: four held open (active), two closed (inactive), with traffic in the totals
        held = [connect("cl", "198.18.0.10", 8484) for _ in range(6)]
        assert all(echo_ok(c) for c in held)
        for c in held[4:]:
            c.close()
        time.sleep(1.0)
        for _ in range(50):  # both up and agreeing (a connection's state may move between two scrapes)
            try:
                ours, theirs = scrape(IPVSMGR), scrape(NODE_EXPORTER)
            except OSError:
                time.sleep(0.2)
                continue
            # the totals (/proc/net/ip_vs_stats) move only on the kernel's estimator tick (2 s or
            # more): wait for the six connections to be counted there too
            counted = theirs.get("node_ipvs_connections", ("", "", {}))[2].get((), 0) >= 6
            if counted and {k: v for k, v in ours.items() if k.startswith("node_ipvs")} == theirs:
                break
            time.sleep(0.5)
        node_ipvs = {k: v for k, v in ours.items() if k.startswith("node_ipvs")}
        assert set(theirs) == {
            "node_ipvs_connections", "node_ipvs_incoming_packets", "node_ipvs_outgoing_packets",
            "node_ipvs_incoming_bytes", "node_ipvs_outgoing_bytes", "node_ipvs_backend_connections_active",
            "node_ipvs_backend_connections_inactive", "node_ipvs_backend_weight",
        }, theirs  # fmt: skip
        for name in theirs:
            assert node_ipvs.get(name) == theirs[name], (name, node_ipvs.get(name), theirs[name])
        active = theirs["node_ipvs_backend_connections_active"][2]
        assert sum(active.values()) == 4 and len(active) == 6, active
        weight = theirs["node_ipvs_backend_weight"][2]
        fwmark = [k for k in weight if dict(k)["proto"] == "FWM"]
        assert fwmark and dict(fwmark[0])["local_mark"] == "0000002A" and weight[fwmark[0]] == 7
        assert theirs["node_ipvs_connections"][2][()] >= 6
        print({"node_ipvs_series": sum(len(v[2]) for v in theirs.values()), "families": len(theirs)})

        # keepalived exporter's encoding of the VRRP instance (priority 255: master at once)
        state = ours["keepalived_vrrp_state"][2]
        assert state == {
            (("iname", "VI_1"), ("intf", "dummy0"), ("ip_address", "198.18.9.10"), ("vrid", "51")): 2
        }
        sent = ours["keepalived_advertisements_sent"][2]
        (labels, n), *_ = sent.items()
        assert dict(labels)["state"] == "MASTER" and n >= 1
        assert ours["keepalived_become_master"][2][labels] == 1
    finally:
        for c in held:
            c.close()
        node.send_signal(signal.SIGTERM)
        node.wait(10)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        for s in servers:
            s.close()
        sh("ip", "link", "del", "dummy0", check=False)
        print(log.read_text()[-3000:])
    assert code == 0
