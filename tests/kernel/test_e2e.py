"""End to end in the VM, on the topology `ipvsmgr lab` builds (ipvsmgr/lab.py):
a VRRP pair of load balancers running `ipvsmgr run` (IPVS direct routing,
connection sync), three real servers, a client; real traffic, read from the
client's side and from `ipvsadm` in each balancer's namespace."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from ipvsmgr.lab import HOSTS, NET, WEIGHTS, Conversation, Lab, lb_config, wait
from tests import vm


def assert_shares(got: Counter[str], n: int) -> None:
    assert set(got) == set(WEIGHTS), got
    total = sum(WEIGHTS.values())
    for name, w in WEIGHTS.items():
        assert abs(got[name] - n * w / total) <= 3, got


@vm.slow("the same lab scenario is CI's main command: scripts/lab.sh, checked by scripts/check_lab.py")
def test_balanced_by_weight_real_failure_and_a_failover_that_keeps_connections(tmp_path: Path) -> None:
    with Lab(tmp_path, print) as lab:
        lab.build()
        lab.start_lb("lb1", 150)
        lab.start_lb("lb2", 100)
        full = {f"{NET}.{HOSTS[n]}": w for n, w in WEIGHTS.items()}
        try:
            wait(lambda: lab.has_vip("lb1") and lab.weights("lb1") == full, 180)
            wait(lambda: lab.weights("lb2") == full, 180)
        except TimeoutError:
            raise AssertionError(lab.log("lb1")[-3000:] + lab.log("lb2")[-3000:]) from None
        assert not lab.has_vip("lb2")
        # wrr 1:2:3 over 1,000 sequential connections, counted by who answered:
        # that share each (give or take where in its cycle the scheduler
        # started), and not one failure.
        assert_shares(lab.requests(1000), 1000)

        # A real dies: out of rotation within fall x interval + timeout (+ reconcile); nothing fails after.
        lab.reals["rs2"].stop()
        took = wait(lambda: lab.weights("lb1").get(f"{NET}.22") == 0, 10)
        print(f"rs2 out of rotation after {took:.2f}s")
        got = lab.requests(60)
        assert set(got) == {"rs1", "rs3"} and sum(got.values()) == 60, got
        lab.reals["rs2"].start()
        wait(lambda: lab.weights("lb1").get(f"{NET}.22") == 2, 10)

        # The master crashes (process killed, link down) with a connection open:
        # lb2 takes the VIP, and the connection, synced to lb2, keeps working.
        conv = Conversation(lab)
        conv.start()
        time.sleep(3.0)  # the sync master sends at least every 2 s
        synced = lab.ipvsadm("lb2", "-Lnc")
        assert f"{NET}.{HOSTS['client']}" in synced, synced
        event = time.monotonic()
        lab.crash("lb1")
        took = wait(lambda: lab.has_vip("lb2"), 5)
        time.sleep(2.0)
        conv.stop()
        gap = conv.longest_gap(event)
        print(f"VIP on lb2 after {took:.2f}s; connection error {conv.error}; longest silence {gap}")
        assert conv.error is None, conv.error + lab.log("lb2")[-2000:]
        assert gap is not None and gap <= 1.0, gap
        got = lab.requests(30)
        assert sum(n for k, n in got.items() if k.startswith("rs")) == 30, got


def test_reloads_and_a_kill_9_restart_under_load_lose_nothing(tmp_path: Path) -> None:
    """1,000 sequential requests and 50 open connections while the file loses a
    real, gets an invalid edit, gets the real back, and the daemon is killed
    with -9 and started again: no request fails, no connection breaks, and the
    restarted daemon adopts the kernel's table without one IPVS write."""
    with Lab(tmp_path, print) as lab:
        lab.build()
        lab.start_lb("lb1", 150)
        full = {f"{NET}.{HOSTS[n]}": w for n, w in WEIGHTS.items()}
        try:
            wait(lambda: lab.has_vip("lb1") and lab.weights("lb1") == full, 180)
        except TimeoutError:
            raise AssertionError(lab.log("lb1")[-3000:]) from None
        convs = [Conversation(lab, every=0.25) for _ in range(50)]
        for c in convs:
            c.start()
        results: list[Counter[str]] = []
        load = threading.Thread(target=lambda: results.append(lab.requests(1000)))
        load.start()
        conf = lab.config_path("lb1")

        def reload() -> subprocess.CompletedProcess[str]:
            return lab.ctl("lb1", "reload")

        time.sleep(2.0)
        conf.write_text(lb_config(150, weights={"rs1": 1, "rs2": 2}))  # rs3 leaves: drained
        assert reload().returncode == 0
        wait(lambda: lab.weights("lb1").get(f"{NET}.23") in (0, None), 10)
        time.sleep(2.0)
        conf.write_text(lb_config(150).replace("scheduler: wrr", "scheduler: no-such"))
        bad = reload()
        assert bad.returncode == 1 and f"{conf}:" in bad.stderr, bad.stderr
        conf.write_text(lb_config(150))  # rs3 back
        assert reload().returncode == 0
        wait(lambda: lab.weights("lb1") == full, 10)
        time.sleep(2.0)

        lab.procs["lb1"].send_signal(signal.SIGKILL)
        lab.procs["lb1"].wait(30)
        lab.start_lb("lb1", 150)
        wait(lambda: lab.ctl("lb1", "status", "--json").returncode == 0, 120)
        wait(lambda: lab.has_vip("lb1"), 30)
        load.join(timeout=600)
        for c in convs:
            c.stop()
        st = json.loads(lab.ctl("lb1", "status", "--json").stdout)
        got = results[0]
        assert sum(n for k, n in got.items() if k.startswith("rs")) == 1000, got
        broken = [c.error for c in convs if c.error is not None]
        assert not broken, broken
        # Adopted: the restarted daemon found its table in the kernel and wrote nothing.
        assert st["daemon"]["counters"].get("reconcile_operations", 0) == 0, st["daemon"]["counters"]
        assert lab.weights("lb1") == full


@vm.slow("GRE forwarding by weight: test_daemon_control.py::test_gre_tunnel_traffic_follows_the_weights")
def test_gre_tunnels_balance_by_weight(tmp_path: Path) -> None:
    """IPVS GRE tunnelling on the lab: each real (its fallback gre0, the VIP on
    lo) answers the client directly; 1,000 requests, counted by who answered."""
    with Lab(tmp_path, print) as lab:
        lab.build()
        lab.config_path("lb1").write_text(lb_config(150, forwarding="gre"))
        lab.start_lb("lb1", 150)
        full = {f"{NET}.{HOSTS[n]}": w for n, w in WEIGHTS.items()}
        try:
            wait(lambda: lab.has_vip("lb1") and lab.weights("lb1") == full, 180)
        except TimeoutError:
            raise AssertionError(lab.log("lb1")[-3000:]) from None
        assert lab.ipvsadm("lb1", "-Ln").count("Tunnel") == 3
        assert_shares(lab.requests(1000), 1000)
