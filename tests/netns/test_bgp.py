"""BGP through ExaBGP against a real BIRD 2 router, on the host kernel.

Nodes a and b run `ipvsmgr run` (BGP only: no virtual servers, so no IPVS
needed; `when: always`); node c runs BIRD with `merge paths on`, so the
independent reader is c's kernel routing table: one next hop per node that
announces the VIP. Each test runs with Debian's ExaBGP 4.2 and with
ExaBGP 5 from PyPI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipvsmgr.lab import next_hops
from tests.netns.lab import in_netns, sh
from tests.netns.vrrplab import ADDR4, VrrpLab

VIP = "198.18.100.1"
ROUTER_AS, NODE_AS = 65000, 65001
SPEAKERS = {
    "exabgp-4.2": "/usr/sbin/exabgp",
    "exabgp-5": str(Path(sys.executable).parent / "exabgp"),
}

pytestmark = pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 is not installed")


def bird_conf(sock_dir: Path, password: str | None = None) -> str:
    secret = f'password "{password}"; ' if password else ""
    peers = "\n".join(
        f"protocol bgp {n} {{ local {ADDR4['c']} as {ROUTER_AS}; neighbor {ADDR4[n]} as {NODE_AS}; "
        f"hold time 3; connect retry time 1; error wait time 1, 2; {secret}"
        "ipv4 { import all; export none; }; }"
        for n in ("a", "b")
    )
    return f"""\
router id {ADDR4["c"]};
log "{sock_dir}/bird.log" all;
protocol device {{}}
protocol kernel {{ ipv4 {{ export all; }}; merge paths on; }}
{peers}
"""


def node_conf(node: str, exabgp: str, grace: str = "1s", password: str | None = None) -> str:
    secret = f", password: {json.dumps(password)}" if password else ""
    return f"""\
bgp:
  local_as: {NODE_AS}
  router_id: {ADDR4[node]}
  hold_time: 3s
  withdraw_grace: {grace}
  exabgp: [{exabgp}]
  peers:
    - {{address: {ADDR4["c"]}, as: {ROUTER_AS}, local_address: {ADDR4[node]}{secret}}}
  announce:
    - {{prefix: {VIP}, when: always, med: 10, communities: ["65000:100"]}}
"""


class Router:
    def __init__(self, lab: VrrpLab) -> None:
        self.lab = lab
        self.sock = lab.work / "bird.ctl"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, password: str | None = None) -> None:
        conf = self.lab.work / "bird.conf"
        conf.write_text(bird_conf(self.lab.work, password))
        self.proc = self.lab.spawn("c", ["bird", "-f", "-c", str(conf), "-s", str(self.sock)], "bird")

    def stop(self) -> None:
        assert self.proc is not None
        self.lab.stop(self.proc)

    def next_hops(self) -> set[str]:
        """The gateways of c's kernel route to the VIP: what the router forwards to."""
        return next_hops(self.lab.ns("c"), f"{VIP}/32")

    def route_attributes(self) -> str:
        return subprocess.run(
            ["birdc", "-s", str(self.sock), "show", "route", "all", f"{VIP}/32"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout  # fmt: skip


@pytest.fixture(params=sorted(SPEAKERS))
def speaker(request: pytest.FixtureRequest) -> str:
    exe = SPEAKERS[request.param]
    if not os.access(exe, os.X_OK):
        pytest.skip(f"{request.param} is not installed at {exe}")
    return exe


@pytest.fixture
def bgp_lab(vrrp_lab: VrrpLab) -> Iterator[tuple[VrrpLab, Router]]:
    router = Router(vrrp_lab)
    router.start()
    yield vrrp_lab, router


def status(lab: VrrpLab, name: str) -> dict:  # type: ignore[type-arg]
    return json.loads(lab.ctl(name, "status", "--json").stdout)["bgp"]  # type: ignore[no-any-return]


def both(a: str, b: str) -> set[str]:
    return {ADDR4[a], ADDR4[b]}


def test_ecmp_drain_node_and_stop(bgp_lab: tuple[VrrpLab, Router], speaker: str) -> None:
    lab, router = bgp_lab
    lab.ipvsmgr("a", node_conf("a", speaker), "a")
    pb = lab.ipvsmgr("b", node_conf("b", speaker), "b")
    lab.wait_for(lambda: router.next_hops() == both("a", "b"), 30, "two next hops")
    attrs = router.route_attributes()
    assert "BGP.med: 10" in attrs and "(65000,100)" in attrs, attrs
    st = status(lab, "a")
    assert st["neighbors"][ADDR4["c"]]["state"] == "up"
    assert st["announced"] == [f"{VIP}/32"]

    # drain-node: a's next hop goes, b's stays; a's daemon and ExaBGP keep running.
    t0 = time.monotonic()
    lab.ctl("a", "drain-node")
    took = lab.wait_for(lambda: router.next_hops() == {ADDR4["b"]}, 5, "a withdrawn")
    assert took < 1.0, f"drain-node took {time.monotonic() - t0:.3f}s to reach the router"
    assert "NODE DRAINED" in lab.ctl("a", "status").stdout
    assert status(lab, "a")["neighbors"][ADDR4["c"]]["state"] == "up"  # the session stays
    lab.ctl("a", "undrain-node")
    lab.wait_for(lambda: router.next_hops() == both("a", "b"), 5, "a back")

    # The VIP is on lo while the daemon runs (bgp.vip_interface), so IPVS would see its traffic.
    assert lab.has_address("b", VIP, dev="lo")
    # SIGTERM: b withdraws first and serves on for withdraw_grace, then exits cleanly.
    os.killpg(pb.pid, signal.SIGTERM)
    lab.wait_for(lambda: router.next_hops() == {ADDR4["a"]}, 5, "b withdrawn on stop")
    assert pb.poll() is None, "b exited before its grace period"
    assert pb.wait(timeout=20) == 0
    assert "withdrawing 1 BGP routes; serving on for 1 s" in lab.log("b")
    assert not lab.has_address("b", VIP, dev="lo")  # taken away after the grace
    assert "exabgp" not in _comms(lab, "b")


def _comms(lab: VrrpLab, node: str) -> str:
    pids = sh("ip", "netns", "pids", lab.ns(node), check=False).split()
    names = []
    for pid in pids:
        try:
            names.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return "\n".join(names)


def test_exabgp_killed_router_restarted_daemon_killed(bgp_lab: tuple[VrrpLab, Router], speaker: str) -> None:
    lab, router = bgp_lab
    pa = lab.ipvsmgr("a", node_conf("a", speaker), "a")
    lab.ipvsmgr("b", node_conf("b", speaker), "b")
    lab.wait_for(lambda: router.next_hops() == both("a", "b"), 30, "two next hops")

    # ExaBGP dies: the daemon restarts it (back-off 1 s) and announces again.
    pid = status(lab, "a")["exabgp_pid"]
    os.kill(pid, signal.SIGKILL)
    lab.wait_for(lambda: router.next_hops() == {ADDR4["b"]}, 10, "a's session gone")
    back = lab.wait_for(lambda: router.next_hops() == both("a", "b"), 20, "a re-announced")
    st = status(lab, "a")
    assert st["exabgp_pid"] != pid and st["counters"]["crashes"] == 1 and st["counters"]["starts"] == 2
    assert back < 10, back

    # The router restarts: both sessions come back with the routes.
    router.stop()
    assert router.next_hops() == set()
    router.start()
    lab.wait_for(lambda: router.next_hops() == both("a", "b"), 30, "sessions re-established")
    assert status(lab, "a")["neighbors"][ADDR4["c"]]["ups"] >= 2

    # The daemon is killed: its ExaBGP must not announce on unsupervised.
    exabgp_pid = status(lab, "a")["exabgp_pid"]
    os.killpg(pa.pid, signal.SIGKILL)
    lab.wait_for(lambda: router.next_hops() == {ADDR4["b"]}, 10, "a withdrawn after the daemon died")
    lab.wait_for(lambda: _gone(exabgp_pid), 10, "ExaBGP gone with its daemon")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_garbage_from_exabgp_is_counted_and_harmless(bgp_lab: tuple[VrrpLab, Router], speaker: str) -> None:
    """Whatever arrives on the message FIFO (a misbehaving speaker) is counted; routes stay."""
    lab, router = bgp_lab
    lab.ipvsmgr("a", node_conf("a", speaker), "a")
    lab.wait_for(lambda: router.next_hops() == {ADDR4["a"]}, 30, "a announced")
    (evt,) = (lab.work / "a-state" / "bgp").glob("evt.*")
    fd = os.open(evt, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, b"{not json\n[1]\n" + b'{"type": "state", "neighbor": 7}\n' + b"\xff\xfe\n")
    finally:
        os.close(fd)
    lab.wait_for(lambda: status(lab, "a")["counters"].get("messages_malformed") == 4, 5, "4 counted")
    assert status(lab, "a")["neighbors"][ADDR4["c"]]["state"] == "up"
    text = in_netns(
        lab.ns("a"), lambda: urllib.request.urlopen("http://127.0.0.1:9474/metrics", timeout=10).read()
    )
    metrics = text.decode()
    assert "ipvsmgr_bgp_messages_malformed_total 4.0" in metrics
    assert f'ipvsmgr_bgp_prefix_announced{{prefix="{VIP}/32"}} 1.0' in metrics
    assert f'ipvsmgr_bgp_peer_state{{peer="{ADDR4["c"]}",state="up"}} 1.0' in metrics
    lab.ctl("a", "drain-node")  # still in control
    lab.wait_for(lambda: router.next_hops() == set(), 5, "withdrawn")


def test_tcp_md5_password(vrrp_lab: VrrpLab) -> None:
    """RFC 2385 signatures: the right key gets a session and the route, a wrong one nothing."""
    router = Router(vrrp_lab)
    router.start(password="s3cret-key")
    exe = SPEAKERS["exabgp-4.2"]
    vrrp_lab.ipvsmgr("a", node_conf("a", exe, password="s3cret-key"), "a")
    vrrp_lab.ipvsmgr("b", node_conf("b", exe, password="wrong-key"), "b")
    vrrp_lab.wait_for(lambda: router.next_hops() == {ADDR4["a"]}, 30, "a's signed session")
    time.sleep(4)  # b keeps trying; its unsigned-to-the-router segments are dropped
    assert router.next_hops() == {ADDR4["a"]}
    assert status(vrrp_lab, "b")["neighbors"][ADDR4["c"]]["state"] != "up"
    conf = (vrrp_lab.work / "a-state" / "bgp" / "exabgp.conf").stat()
    assert conf.st_mode & 0o077 == 0  # the key is in there: owner only
