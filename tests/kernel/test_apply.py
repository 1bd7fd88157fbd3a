"""Apply/plan against the real kernel IPVS, checked with ipvsadm (inside the VM)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.kernel.helpers import Lab, ipvsadm, rules

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "examples" / "all-methods.yaml"

# What `ipvsadm -Sn` (ipvsadm 1.31) must show after applying all-methods.yaml.
EXPECTED = sorted(
    """\
-A -t 198.18.0.10:80 -s mh -b mh-port
-a -t 198.18.0.10:80 -r 198.18.1.1:8080 -m -w 3
-a -t 198.18.0.10:80 -r 198.18.1.2:80 -g -w 2
-a -t 198.18.0.10:80 -r 198.18.1.3:80 -i -w 1 --tun-type ipip
-a -t 198.18.0.10:80 -r 198.18.1.4:80 -i -w 1 --tun-type gre --tun-csum
-a -t 198.18.0.10:80 -r 198.18.1.5:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum
-a -t 198.18.0.10:80 -r 198.18.1.6:80 -m -w 1
-A -t 198.18.0.11:443 -s wlc -p 600 -M 255.255.255.0
-a -t 198.18.0.11:443 -r 198.18.1.11:443 -m -w 1
-a -t 198.18.0.11:443 -r 198.18.1.12:443 -m -w 1
-A -u 198.18.0.12:53 -s sh -o -b sh-fallback,sh-port
-a -u 198.18.0.12:53 -r 198.18.1.21:53 -m -w 1
-a -u 198.18.0.12:53 -r 198.18.1.22:53 -m -w 1
-A --sctp-service 198.18.0.13:3868 -s fo
-a --sctp-service 198.18.0.13:3868 -r 198.18.1.51:3868 -m -w 100
-a --sctp-service 198.18.0.13:3868 -r 198.18.1.52:3868 -m -w 1
-A -t [2001:db8::10]:80 -s rr -p 60 -M 64
-a -t [2001:db8::10]:80 -r 198.18.1.31:80 -i -w 1 --tun-type ipip
-a -t [2001:db8::10]:80 -r [2001:db8::1:1]:8080 -m -w 1
-A -f 42 -s wrr
-a -f 42 -r 198.18.1.41:0 -i -w 5 --tun-type gue --tun-port 6080 --tun-remcsum
-a -f 42 -r 198.18.1.42:0 -i -w 5 --tun-type gue --tun-port 6080 --tun-nocsum
""".splitlines()
)


def test_apply_example_plan_drift_and_restart(ipvs: Lab) -> None:
    """The acceptance scenario, each step a fresh `ipvsmgr` process (daemon-less restart)."""
    ex = str(EXAMPLE)
    first = ipvs.cli("apply", "--json", config=ex)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["writes"] == len(EXPECTED) + 1  # + timeouts
    assert rules() == EXPECTED
    # -Sn omits thresholds and timeouts: read them too
    assert "198.18.1.6:80                1000       800" in ipvsadm("-Ln", "--thresholds")
    assert ipvsadm("-L", "--timeout").split() == "Timeout (tcp tcpfin udp): 3600 60 120".split()

    plan = ipvs.cli("plan", config=ex)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "No changes" in plan.stdout

    # Drift: a real of the mh service deleted by hand. Added back alone it would
    # come first in the kernel's list (IPVS adds at the head) and Maglev's table
    # would differ from a node that added the reals in order: the reals after it
    # are re-added after it.
    ipvsadm("-d", "-t", "198.18.0.10:80", "-r", "198.18.1.2:80")
    plan = ipvs.cli("plan", "--json", config=ex)
    assert plan.returncode == 2, plan.stderr
    ops = json.loads(plan.stdout)["operations"]
    assert [(o["op"], o["real"]["address"]) for o in ops] == [
        ("delete-real", "198.18.1.3"), ("delete-real", "198.18.1.4"),
        ("delete-real", "198.18.1.5"), ("delete-real", "198.18.1.6"),
        ("add-real", "198.18.1.2"), ("add-real", "198.18.1.3"), ("add-real", "198.18.1.4"),
        ("add-real", "198.18.1.5"), ("add-real", "198.18.1.6"),
    ]  # fmt: skip
    assert {o.get("reason") for o in ops[:4]} == {"re-added to keep the hashing order"}

    again = ipvs.cli("apply", "--json", config=ex)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["writes"] == 9
    assert rules() == EXPECTED
    # the kernel's list (unsorted) is the configuration's order of addition, reversed
    listed = ipvsadm("-Ln", "--nosort", "-t", "198.18.0.10:80")
    order = [
        ln.split()[1]
        for ln in listed.splitlines()
        if ln.strip().startswith("->") and ln.split()[1][0].isdigit()
    ]
    assert order == ["198.18.1.6:80", "198.18.1.5:80", "198.18.1.4:80", "198.18.1.3:80", "198.18.1.2:80",
                     "198.18.1.1:8080"]  # fmt: skip

    # a restart with nothing changed sends no write at all
    idle = ipvs.cli("apply", "--json", config=ex)
    assert idle.returncode == 0, idle.stderr
    assert json.loads(idle.stdout) | {"draining": []} == {
        "changes": 0, "operations": [], "draining": [], "writes": 0, "failures": [],
    }  # fmt: skip
