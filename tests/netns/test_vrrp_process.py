"""VRRP in a process of its own, with keepalived 2.2.7 as the backup peer:

- the daemon's loop frozen (SIGSTOP: the worst a reload, a big reconcile or
  a scrape storm can do to it) does not delay one advert, and keepalived
  never takes over;
- the VRRP process killed with SIGKILL is started again by the daemon and
  takes mastership back;
- the daemon killed with SIGKILL takes the VRRP process with it, which
  hands over (priority 0) instead of advertising unmanaged.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.netns.vrrplab import ADDR4, VIP4, VrrpLab, ipvsmgr_conf, keepalived, keepalived_conf

pytestmark = pytest.mark.skipif(keepalived() is None, reason="keepalived is not installed (scripts/setup.sh)")
INTERVAL = 0.1


def vrrp_process(lab: VrrpLab) -> dict[str, Any]:
    st = json.loads(lab.ctl("im", "status", "--json").stdout)
    proc: dict[str, Any] = st["daemon"]["vrrp_process"]
    return proc


def adverts_from(lab: VrrpLab, node: str, since: float) -> list[float]:
    return [c.at for c in lab.captured if c.src == ADDR4[node] and c.at >= since]


def max_gap(times: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))


def alive(pid: int) -> bool:
    """Running (a zombie waiting for whoever adopted it is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def ipvsmgr_master(lab: VrrpLab, peer: bool = True) -> subprocess.Popen[bytes]:
    """ipvsmgr (150) master on a, keepalived (100) backup on b unless peer=False; control socket up."""
    if peer:
        lab.keepalived("b", keepalived_conf(100), "ka")
    im = lab.ipvsmgr("a", ipvsmgr_conf(150), "im")
    lab.wait_for(lambda: lab.has_address("a", VIP4), 15, "ipvsmgr as master")
    lab.wait_for(lambda: lab.socket("im").exists(), 15, "the control socket")
    return im


def test_a_frozen_daemon_does_not_stop_the_adverts(vrrp_lab: VrrpLab) -> None:
    lab = vrrp_lab
    im = ipvsmgr_master(lab)
    lab.sniff()
    time.sleep(0.5)
    start = time.monotonic()
    os.kill(im.pid, signal.SIGSTOP)  # the daemon, not its VRRP process
    time.sleep(2.0)
    os.kill(im.pid, signal.SIGCONT)
    end = time.monotonic()
    sent = adverts_from(lab, "a", start)
    sent = [t for t in sent if t <= end]
    assert len(sent) >= 15, len(sent)
    assert max_gap([start, *sent, end]) <= 2 * INTERVAL, max_gap([start, *sent, end])
    assert not adverts_from(lab, "b", start), "keepalived took over while the daemon was frozen"
    assert not lab.has_address("b", VIP4)
    assert vrrp_process(lab)["restarts"] == 0


BUSY = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end:\n    pass\n"


def sched(pid: int) -> list[str]:
    """Every thread's policy and real-time priority, as ps reads them (e.g. ['RR 10', 'RR 10'])."""
    out = subprocess.run(["ps", "-L", "-o", "cls=,rtprio=", "-p", str(pid)], capture_output=True, text=True)
    return [" ".join(line.split()) for line in out.stdout.splitlines()]


def test_a_busy_machine_does_not_delay_the_adverts(vrrp_lab: VrrpLab) -> None:
    """Four busy processes per CPU for 3 s (bounded: they stop by themselves), the
    load of health checks, a reload worker and a reconcile on a small machine: the
    VRRP process runs SCHED_RR (vrrp.realtime_priority, default 10), so its adverts
    keep their interval (kernel receive times on the switch)."""
    lab = vrrp_lab
    im = ipvsmgr_master(lab, peer=False)
    child = vrrp_process(lab)
    assert child["scheduling"]["policy"] == "rr", child
    assert set(sched(child["pid"])) == {"RR 10"}, sched(child["pid"])
    assert set(sched(im.pid)) == {"TS -"}, sched(im.pid)  # the daemon itself is not real-time
    lab.sniff()
    time.sleep(0.5)
    busy = [
        subprocess.Popen([sys.executable, "-c", BUSY.format(s=3.0)]) for _ in range(4 * (os.cpu_count() or 1))
    ]
    try:
        time.sleep(0.3)
        start = time.monotonic()
        time.sleep(2.5)
        end = time.monotonic()
    finally:
        for p in busy:
            p.wait(10)
    sent = [t for t in adverts_from(lab, "a", start) if t <= end]
    gap = max_gap([start, *sent, end])
    assert gap <= 2 * INTERVAL, f"max advert gap {gap * 1000:.0f} ms with {len(busy)} busy processes"
    assert vrrp_process(lab)["scheduling"]["demotions"] == 0


def test_realtime_priority_0_is_normal_scheduling(vrrp_lab: VrrpLab) -> None:
    lab = vrrp_lab
    im = lab.ipvsmgr("a", "vrrp:\n  realtime_priority: 0\n" + ipvsmgr_conf(150).removeprefix("vrrp:\n"), "im")
    lab.wait_for(lambda: lab.socket("im").exists(), 15, "the control socket")
    lab.wait_for(lambda: bool(vrrp_process(lab).get("scheduling")), 15, "the VRRP process's status")
    assert set(sched(vrrp_process(lab)["pid"])) == {"TS -"}
    assert "SCHED_RR" not in lab.ctl("im", "status").stdout
    im.terminate()
    im.wait(30)
    log = lab.log("im")
    assert "stopped" in log and "IPVS services" not in log  # a VRRP-only node has none to speak of


def test_a_killed_vrrp_process_is_restarted(vrrp_lab: VrrpLab) -> None:
    lab = vrrp_lab
    ipvsmgr_master(lab)
    first = vrrp_process(lab)
    lab.sniff()
    killed = time.monotonic()
    os.kill(first["pid"], signal.SIGKILL)
    lab.wait_for(lambda: vrrp_process(lab)["pid"] != first["pid"], 15, "the VRRP process restarted")
    second = vrrp_process(lab)
    assert second["restarts"] == 1 and alive(second["pid"])
    # keepalived covered the gap; the new process preempts it back (150 > 100).
    lab.wait_for(lambda: bool(adverts_from(lab, "b", killed)), 5, "keepalived taking over")
    lab.wait_for(
        lambda: lab.has_address("a", VIP4) and not lab.has_address("b", VIP4), 15, "ipvsmgr master again"
    )
    back = time.monotonic() - killed
    assert back < 10, back
    st = json.loads(lab.ctl("im", "status", "--json").stdout)
    assert st["vrrp"][0]["state"] == "master"


def test_a_killed_daemon_leaves_nothing_advertising(vrrp_lab: VrrpLab) -> None:
    lab = vrrp_lab
    im = ipvsmgr_master(lab)
    child = vrrp_process(lab)["pid"]
    lab.sniff()
    killed = time.monotonic()
    os.kill(im.pid, signal.SIGKILL)  # the daemon only
    im.wait(5)
    # The VRRP process hands over: keepalived is master within its skew time
    # (priority 0 received), not after Master_Down_Interval.
    took = lab.wait_for(lambda: lab.has_address("b", VIP4), 5, "keepalived taking over")
    assert took < 3 * INTERVAL, took
    lab.wait_for(lambda: not alive(child), 10, "the VRRP process exiting")
    assert not lab.has_address("a", VIP4)
    quiet = time.monotonic()
    time.sleep(5 * INTERVAL)
    assert not adverts_from(lab, "a", quiet), "an orphan kept advertising"
    assert adverts_from(lab, "a", killed)[-1] >= killed  # the priority-0 hand-over went out


def test_a_killed_daemon_without_a_peer_leaves_the_vips_serving(vrrp_lab: VrrpLab) -> None:
    """No backup to hand over to: the VRRP process stops advertising but leaves the
    VIP, so IPVS keeps serving until the restarted daemon decides (as a kill -9 left it
    before VRRP had a process of its own); the restart takes the VIP over again."""
    lab = vrrp_lab
    im = ipvsmgr_master(lab, peer=False)
    child = vrrp_process(lab)["pid"]
    lab.sniff()
    os.kill(im.pid, signal.SIGKILL)
    im.wait(5)
    lab.wait_for(lambda: not alive(child), 10, "the VRRP process exiting")
    quiet = time.monotonic()
    time.sleep(5 * INTERVAL)
    assert not adverts_from(lab, "a", quiet), "an orphan kept advertising"
    assert lab.has_address("a", VIP4)
    assert "no successor answered the hand-over" in lab.log("im")
    lab.ipvsmgr("a", ipvsmgr_conf(150), "im2")
    lab.wait_for(lambda: bool(adverts_from(lab, "a", quiet)), 15, "the restarted daemon advertising")
    lab.wait_for(lambda: lab.has_address("a", VIP4), 15, "the VIP held by the restarted daemon")
