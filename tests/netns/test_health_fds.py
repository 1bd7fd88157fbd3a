"""Thousands of silent reals and a few healthy ones, under a real open-files
limit: the daemon's health part as it runs (its fd limit logic and the
scheduler with real tcp checks), in a process started with 1,024 open files
and without CAP_SYS_RESOURCE, so it cannot raise its hard limit.

3,000 reals routed into the server namespace, which drops their SYNs (no
forwarding, no ICMP), each check holding a socket for its whole timeout;
40 healthy reals on the server namespace's port 80. Default timings (2 s
interval, 1 s timeout, rise 2, fall 3): about 1,500 sockets in flight,
beyond 1,024. No healthy real may change state, and each must be checked
every interval (the server counts the connections each address gets).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.netns.lab import SERVER4, Lab, have_root, sh

pytestmark = pytest.mark.skipif(not have_root(), reason="namespaces need root")

ROOT = Path(__file__).resolve().parents[2]
DEAD, HEALTHY, SECONDS = 3000, 40, 24
HEALTHY_ADDRS = [f"198.18.200.{10 + i}" for i in range(HEALTHY)]

HARNESS = r"""
import asyncio, json, sys
from healthchecks.checkers.tcp import TcpCheck
from healthchecks.result import Target
from healthchecks.scheduler import ScheduledCheck, Scheduler
from ipvsmgr import fdlimit

async def main():
    dead, healthy, seconds = (int(x) for x in sys.argv[1:4])
    limit = fdlimit.raise_for(fdlimit.needed(dead + healthy))  # what the health part does
    s = Scheduler(budget=limit.budget)
    changes = []
    s.subscribe(lambda key, t, r: changes.append([list(key), t.up, r.reason]))
    opts = dict(interval=2.0, timeout=1.0, rise=2, fall=3, jitter=0.1)
    tcp = TcpCheck()
    specs = [ScheduledCheck(("dead", i), tcp, Target(f"198.18.{208 + i // 250}.{i % 250 + 1}", 80), **opts)
             for i in range(dead)]
    specs += [ScheduledCheck(("ok", i), tcp, Target(f"198.18.200.{10 + i}", 80), initially_up=True, **opts)
              for i in range(healthy)]
    s.update(specs)
    fds_max = 0
    for _ in range(int(seconds / 0.25)):
        await asyncio.sleep(0.25)
        fds_max = max(fds_max, fdlimit.open_fds())
    st = s.snapshot()
    await s.close()
    print(json.dumps({"soft": limit.soft, "hard": limit.hard, "budget": limit.budget, "changes": changes,
                      "not_run": st.not_run_by, "in_flight_max": st.in_flight_max, "fds_max": fds_max,
                      "runs": st.runs, "failures": st.failures}))

asyncio.run(main())
"""


def run_harness(lab: Lab) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [
        "nsenter", f"--net=/run/netns/{lab.client}",
        # no CAP_SYS_RESOURCE after exec: the hard limit of 1,024 stays
        "setpriv", "--bounding-set=-sys_resource", "--inh-caps=-sys_resource",
        "prlimit", "--nofile=1024:1024",
        sys.executable, "-c", HARNESS, str(DEAD), str(HEALTHY), str(SECONDS),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=SECONDS + 60, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_silent_reals_cannot_take_the_healthy_checks_file_descriptors(lab: Lab) -> None:
    # 198.18.208.0/20 goes to the server namespace, which does not forward: silence
    sh("ip", "-n", lab.client, "route", "add", "198.18.208.0/20", "via", SERVER4)
    for a in HEALTHY_ADDRS:
        sh("ip", "-n", lab.server, "addr", "add", f"{a}/24", "dev", "veth0")
    served: Counter[str] = Counter()

    lsock = lab.closing_listener("0.0.0.0", 80, 4096, served)
    try:
        got = run_harness(lab)
    finally:
        lsock.close()
    print(json.dumps({k: v for k, v in got.items() if k != "changes"}))
    assert (got["soft"], got["hard"]) == (1024, 1024)  # it could not raise the limit
    healthy_changes = [c for c in got["changes"] if c[0][0] == "ok"]  # type: ignore[attr-defined, index]
    assert healthy_changes == [], healthy_changes
    # every healthy real was checked about every 2 s all along (12 intervals)
    assert set(served) == set(HEALTHY_ADDRS) and min(served.values()) >= 10, served
    # the silent ones stayed down, failing their checks, rationed: the process stayed under its limit
    assert not [c for c in got["changes"] if c[0][0] == "dead"]  # type: ignore[attr-defined, index]
    assert got["failures"] > DEAD, got["failures"]  # type: ignore[operator]
    assert got["not_run"], got["not_run"]
    assert got["fds_max"] < 1024, got["fds_max"]  # type: ignore[operator]
