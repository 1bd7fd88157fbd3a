"""End to end in the VM, on the topology `ipvsmgr lab` builds (ipvsmgr/lab.py):
a VRRP pair of load balancers running `ipvsmgr run` (IPVS direct routing,
connection sync), three real servers, a client; real traffic, read from the
client's side and from `ipvsadm` in each balancer's namespace."""

from __future__ import annotations

import time
from pathlib import Path

from ipvsmgr.lab import HOSTS, NET, WEIGHTS, Conversation, Lab, wait


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
        # wrr 1:2:3 over 600 sequential connections: that share each (give or take
        # where in its cycle the scheduler started), and not one failure.
        got = lab.requests(600)
        assert set(got) == {"rs1", "rs2", "rs3"}, got
        for name, share in (("rs1", 100), ("rs2", 200), ("rs3", 300)):
            assert abs(got[name] - share) <= 3, got

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
