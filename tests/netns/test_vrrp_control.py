"""The control socket of a VRRP daemon, driven with the real CLI: status, a
hand-over on `vrrp release` with keepalived as the peer, release kept across
a restart, `reclaim`, and reload refusing an invalid file."""

from __future__ import annotations

import json
import time

import pytest

from tests.netns.vrrplab import VIP4, Pinger, VrrpLab, ipvsmgr_conf, keepalived, keepalived_conf

pytestmark = pytest.mark.skipif(keepalived() is None, reason="keepalived is not installed (scripts/setup.sh)")


def state(lab: VrrpLab, name: str) -> dict[str, object]:
    st = json.loads(lab.ctl(name, "status", "--json").stdout)
    inst: dict[str, object] = st["vrrp"][0]
    return inst


def test_release_hands_over_without_a_gap_and_survives_a_restart(vrrp_lab: VrrpLab) -> None:
    lab = vrrp_lab
    lab.keepalived("b", keepalived_conf(100), "ka")
    im = lab.ipvsmgr("a", ipvsmgr_conf(150), "im")
    lab.wait_for(lambda: lab.has_address("a", VIP4), 15, "ipvsmgr as master")
    lab.wait_for(lambda: lab.socket("im").exists(), 15, "the control socket")
    text = lab.ctl("im", "status").stdout
    assert "vi_1" in text and "MASTER" in text and "150/150" in text
    ping = Pinger(lab.ns("c"), VIP4, 2.5)
    ping.start()
    time.sleep(0.5)
    event = time.monotonic()
    out = lab.ctl("im", "vrrp", "release", "vi_1").stdout
    assert out.strip() == "vi_1: released, now backup"
    ping.join()
    assert lab.has_address("b", VIP4) and not lab.has_address("a", VIP4)
    outage = ping.outage(event)
    assert outage is not None and outage < 0.1, outage  # the VIP was kept until keepalived spoke
    inst = state(lab, "im")
    assert inst["state"] == "backup" and inst["priority"] == 1 and inst["released"] is True
    # A restart keeps the operator's decision: still released, keepalived stays master.
    lab.stop(im)
    lab.ipvsmgr("a", ipvsmgr_conf(150), "im")
    lab.wait_for(lambda: lab.socket("im").exists(), 15, "the control socket again")
    time.sleep(1.0)
    assert state(lab, "im")["released"] is True
    assert lab.has_address("b", VIP4) and not lab.has_address("a", VIP4)
    # reclaim: the configured priority again; with preemption ipvsmgr takes the VIP back.
    lab.ctl("im", "vrrp", "reclaim", "vi_1")
    lab.wait_for(lambda: lab.has_address("a", VIP4), 5, "ipvsmgr taking the VIP back")
    assert state(lab, "im")["released"] is False


def test_bad_names_and_an_invalid_reload_change_nothing(vrrp_lab: VrrpLab) -> None:
    lab = vrrp_lab
    lab.ipvsmgr("a", ipvsmgr_conf(150), "im")
    lab.wait_for(lambda: lab.has_address("a", VIP4), 15, "ipvsmgr as master")
    lab.wait_for(lambda: lab.socket("im").exists(), 15, "the control socket")
    r = lab.ctl("im", "vrrp", "release", "nope", check=False)
    assert (
        r.returncode == 1 and r.stderr.strip() == "ipvsmgr: no VRRP instance named 'nope' (instances: vi_1)"
    )
    r = lab.ctl("im", "drain", "web", "198.18.1.1", check=False)
    assert (
        r.returncode == 1 and "no virtual server named 'web' (virtual servers: none configured)" in r.stderr
    )
    # An invalid file: every problem printed with FILE:LINE:COL, exit 1, the old config keeps running.
    conf = lab.work / "im.yaml"
    conf.write_text(ipvsmgr_conf(150).replace("vrid: 51", "vrid: 0"))
    r = lab.ctl("im", "reload", check=False)
    assert r.returncode == 1
    assert f"{conf}:5:13:" in r.stderr and "still running the previous configuration" in r.stderr
    st = json.loads(lab.ctl("im", "status", "--json").stdout)
    assert st["daemon"]["last_reload"]["ok"] is False
    assert st["vrrp"][0]["state"] == "master" and lab.has_address("a", VIP4)
    # A valid change (priority) is applied in place: no flap.
    conf.write_text(ipvsmgr_conf(120))
    assert lab.ctl("im", "reload").stdout.strip() == "reloaded"
    lab.wait_for(lambda: state(lab, "im")["priority"] == 120, 5, "the new priority")
    assert state(lab, "im")["transitions"] == 2  # init -> backup -> master, nothing since


def test_an_emptied_file_keeps_the_vips(vrrp_lab: VrrpLab) -> None:
    """A template that rendered empty (or the package's all-comment file) must not release the VIPs."""
    lab = vrrp_lab
    lab.ipvsmgr("a", ipvsmgr_conf(150), "im")
    lab.wait_for(lambda: lab.has_address("a", VIP4), 15, "ipvsmgr as master")
    lab.wait_for(lambda: lab.socket("im").exists(), 15, "the control socket")
    conf = lab.work / "im.yaml"
    for text in ("", "# vrrp:\n#   instances: []\n"):
        conf.write_text(text)
        r = lab.ctl("im", "reload", check=False)
        assert r.returncode == 1 and "holds no settings" in r.stderr, r.stderr
        time.sleep(0.5)  # a released VIP would be gone by now
        assert lab.has_address("a", VIP4)
        assert state(lab, "im")["state"] == "master"
    # Every VIP gone is refused too, until forced.
    conf.write_text("vrrp:\n  instances: []\n")
    r = lab.ctl("im", "reload", check=False)
    assert r.returncode == 1 and "every VRRP VIP" in r.stderr, r.stderr
    assert lab.has_address("a", VIP4)
    assert lab.ctl("im", "reload", "--force").returncode == 0
    lab.wait_for(lambda: not lab.has_address("a", VIP4), 5, "the VIP released when forced")
