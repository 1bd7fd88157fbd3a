"""What ipvsmgr tells an operator about its VRRP peers, against keepalived 2.2.7:
each condition logged once (not per packet), drops counted per instance, and
`status` naming the master it is about to preempt."""

from __future__ import annotations

import json
import time

import pytest

from tests.netns.vrrplab import ADDR4, VIP4, VrrpLab, ipvsmgr_conf, keepalived, keepalived_conf, sh

pytestmark = pytest.mark.skipif(keepalived() is None, reason="keepalived is not installed (scripts/setup.sh)")


def status(lab: VrrpLab) -> dict:  # type: ignore[type-arg]
    return json.loads(lab.ctl("im", "status", "--json").stdout)  # type: ignore[no-any-return]


def test_a_mismatched_address_list_is_logged_once_and_counted_per_instance(vrrp_lab: VrrpLab) -> None:
    lab = vrrp_lab
    lab.keepalived("b", keepalived_conf(200, vip=f"{VIP4}/24\n        198.18.10.101/24"), "ka")
    lab.wait_for(lambda: lab.has_address("b", VIP4), 15, "keepalived as master")
    lab.ipvsmgr("a", ipvsmgr_conf(100), "im")
    lab.wait_for(lambda: lab.socket("im").exists(), 15, "the control socket")
    time.sleep(2.0)  # 20 adverts dropped
    lines = [line for line in lab.log("im").splitlines() if "dropping adverts from" in line]
    assert len(lines) == 1, lines
    assert f"from {ADDR4['b']}" in lines[0] and "198.18.10.101" in lines[0] and "priority 255" in lines[0]
    r = lab.ctl("im", "status", "--json")
    assert r.returncode == 0


def test_stale_vips_learnt_interval_priority_zero_and_preempt_target(vrrp_lab: VrrpLab) -> None:
    lab = vrrp_lab
    # A VIP left on the interface, as a kill -9 of an older daemon leaves it.
    sh("ip", "-n", lab.ns("a"), "addr", "add", f"{VIP4}/24", "dev", "eth0")
    lab.keepalived("b", keepalived_conf(100, interval="0.2"), "ka")
    # keepalived master first (its Master_Down is 0.72 s), or ipvsmgr, hearing nobody,
    # is master before it and never has anyone to preempt.
    lab.wait_for(lambda: lab.has_address("b", VIP4), 15, "keepalived as master")
    conf = ipvsmgr_conf(150, extra="      preempt_delay: 3s\n")
    lab.ipvsmgr("a", conf, "im")
    lab.wait_for(lambda: lab.socket("im").exists(), 15, "the control socket")
    log = lab.log("im")
    assert "removed 198.18.10.100/24 left on eth0 by an earlier run" in log
    # Waiting to preempt: status names the master it hears, not "-".
    lab.wait_for(lambda: status(lab)["vrrp"][0]["master"] == ADDR4["b"], 3, "the master heard")
    assert status(lab)["vrrp"][0]["state"] == "backup"
    assert "advertises every 0.2s (ours 0.1s)" in lab.log("im")
    lab.wait_for(lambda: lab.has_address("a", VIP4), 10, "ipvsmgr preempting after its delay")
    text = lab.log("im")
    assert text.count("advertises every 0.2s") == 1
    assert text.count("VRRP instance vi_1 BACKUP -> MASTER") == 1


def test_a_master_leaving_with_priority_zero_is_logged(vrrp_lab: VrrpLab) -> None:
    lab = vrrp_lab
    ka = lab.keepalived("b", keepalived_conf(200), "ka")
    lab.wait_for(lambda: lab.has_address("b", VIP4), 15, "keepalived as master")
    lab.ipvsmgr("a", ipvsmgr_conf(100), "im")
    lab.wait_for(lambda: "-> BACKUP" in lab.log("im"), 15, "ipvsmgr as backup")
    lab.stop(ka)  # keepalived advertises priority 0 on a clean stop
    lab.wait_for(lambda: lab.has_address("a", VIP4), 5, "ipvsmgr taking over")
    assert f"master {ADDR4['b']} left (priority 0): taking over after skew time" in lab.log("im")
