"""kill -9 of each of the daemon's processes, one at a time, with the whole stack
running (IPVS NAT service with TCP checks, XDP guard, VRRP master holding the
VIP, no peer): what restarts, what the kernel keeps, how long recovery takes,
and that nothing is left advertising. Independent readers: `ipvsadm -Sn` for
IPVS, `ip -j link` for XDP, the VIP's presence (bind() to it), a client in its
own namespace connecting through the VIP, and VRRP adverts captured in that
namespace with kernel timestamps. Figures are printed (the VM console).

The processes: the daemon; its VRRP process (vrrp/child.py); the loader a
reload starts (config/worker.py). ExaBGP is covered by test_bgp_ecmp.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from tests.kernel.helpers import Lab, rules, sh
from tests.kernel.test_daemon_control import Echo, serving, status
from tests.kernel.test_health import wait_for, weights
from tests.kernel.test_xdp_daemon import xdp_id, xstatus
from tests.netns.lab import in_netns
from tests.netns.vrrplab import SO_TIMESTAMPNS, _monotonic, parse_vrrp_frame

VIP, VPORT = "198.18.3.100", 8383
LB = "198.18.3.1"
REALS = ("198.18.2.5", "198.18.2.6")
INTERVAL = 0.1
PIN = "/sys/fs/bpf/ipvsmgr-kill9"


def config(weight: int = 1) -> str:
    reals = "".join(f"      - {{address: {a}, port: 8080, weight: {weight}}}\n" for a in REALS)
    return f"""\
virtual_servers:
  - name: web
    address: {VIP}
    port: {VPORT}
    scheduler: wrr
    health_check: {{type: tcp, interval: 0.5s, timeout: 0.4s, rise: 1, fall: 2, jitter: 0}}
    reals:
{reals}vrrp:
  instances:
    - name: vi_1
      interface: lb-cl
      vrid: 61
      priority: 150
      advert_interval: 100ms
      virtual_addresses: [{VIP}/24]
xdp:
  interfaces: [lb-cl]
  mode: generic
  pin_path: {PIN}
"""


class Watch:
    """Background readers: the VIP's presence on this node, a client connecting
    through it, and the VRRP adverts reaching the client's namespace."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.vip: list[tuple[float, bool]] = []
        self.connects: list[tuple[float, bool]] = []
        self.adverts: list[float] = []
        self.threads = [
            threading.Thread(target=f, daemon=True) for f in (self._vip, self._client, self._sniff)
        ]
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)

    def _vip(self) -> None:
        while not self.stop.is_set():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind((VIP, 0))
                    held = True
                except OSError as e:
                    held = e.errno != errno.EADDRNOTAVAIL
            self.vip.append((time.monotonic(), held))
            time.sleep(0.01)

    def _client(self) -> None:
        def one() -> bool:
            with socket.socket() as s:
                s.settimeout(0.5)
                try:
                    s.connect((VIP, VPORT))
                    return True
                except OSError:
                    return False

        while not self.stop.is_set():
            self.connects.append((time.monotonic(), in_netns("cl", one)))
            time.sleep(0.05)

    def _sniff(self) -> None:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            s.bind(("cl0", 0))
            return s

        with in_netns("cl", make) as s:
            s.settimeout(0.1)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            while not self.stop.is_set():
                try:
                    frame, anc, _, _ = s.recvmsg(2048, 64)
                except TimeoutError:
                    continue
                c = parse_vrrp_frame(frame, _monotonic(anc))
                if c is not None and c.src == LB:
                    self.adverts.append(c.at)

    # ------------------------------------------------------------ figures

    def vip_lost(self, since: float, until: float) -> float:
        """Seconds the VIP was absent between since and until (10 ms samples)."""
        samples = [(t, held) for t, held in self.vip if since <= t <= until]
        lost = 0.0
        for (t0, held), (t1, _) in itertools.pairwise(samples):
            if not held:
                lost += t1 - t0
        return lost

    def failed_connects(self, since: float, until: float) -> tuple[int, int]:
        window = [ok for t, ok in self.connects if since <= t <= until]
        return window.count(False), len(window)

    def adverts_between(self, since: float, until: float) -> list[float]:
        return [t for t in self.adverts if since <= t <= until]


def vrrp_state(lab: Lab) -> str:
    with contextlib.suppress(AssertionError, json.JSONDecodeError):
        return str(status(lab)["vrrp"][0]["state"])
    return "?"


def running(marker: bytes) -> list[int]:
    """Pids of live processes (not zombies) whose command line holds marker."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker in cmdline and state != "Z":
                found.append(int(pid))
    return found


def worker_pids() -> list[int]:
    return running(b"ipvsmgr.config.worker")


def vrrp_children() -> list[int]:
    return running(b"vrrp.child")


def test_kill9_each_process(ipvs: Lab, nat_lab: None) -> None:
    sh("make", "-s", "-C", str(Path(__file__).resolve().parents[2] / "bpf_offload"))
    cfg = ipvs.write("lb.yaml", config())
    log = Path(ipvs.work / "daemon.log")
    servers = [Echo(a) for a in REALS]
    daemon = ipvs.daemon(cfg, log)
    watch: Watch | None = None
    figures: dict[str, Any] = {}
    try:
        wait_for(lambda: list(weights().values()) == [1, 1], 120)
        wait_for(lambda: Path(ipvs.socket).exists(), 30)
        wait_for(lambda: vrrp_state(ipvs) == "master", 60)
        table, prog = rules(), xdp_id()
        assert prog is not None
        watch = Watch()
        time.sleep(1.0)
        assert watch.failed_connects(0, time.monotonic())[0] == 0, "the client fails before any kill"

        # 1. The VRRP process: the daemon starts it again; IPVS, XDP and the daemon are untouched.
        child = status(ipvs)["daemon"]["vrrp_process"]["pid"]
        killed = time.monotonic()
        os.kill(child, signal.SIGKILL)
        wait_for(lambda: status(ipvs)["daemon"]["vrrp_process"]["pid"] not in (child, None), 60)
        restarted = time.monotonic() - killed
        wait_for(lambda: vrrp_state(ipvs) == "master", 60)
        master = time.monotonic() - killed
        time.sleep(0.5)
        end = time.monotonic()
        assert rules() == table and xdp_id() == prog
        assert status(ipvs)["daemon"]["pid"] == daemon.pid
        assert status(ipvs)["daemon"]["vrrp_process"]["restarts"] == 1
        assert len(vrrp_children()) == 1
        failed, tried = watch.failed_connects(killed, end)
        figures["vrrp_process"] = {
            "restarted_s": round(restarted, 2), "master_again_s": round(master, 2),
            "vip_absent_s": round(watch.vip_lost(killed, end), 2), "client_failed": f"{failed}/{tried}",
        }  # fmt: skip

        # 2. The loader of a reload: that reload is refused, saying why; nothing changes; the next one works.
        ipvs.write("lb.yaml", config(weight=2))
        daemon.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while not (seen := worker_pids()) and time.monotonic() < deadline:
            time.sleep(0.002)
        assert seen, "no loader process seen"
        for pid in seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: (status(ipvs)["daemon"]["last_reload"] or {}).get("ok") is False, 60)
        problems = status(ipvs)["daemon"]["last_reload"]["problems"]
        assert any("killed by signal 9" in p for p in problems), problems
        assert rules() == table and xdp_id() == prog and vrrp_state(ipvs) == "master"
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: list(weights().values()) == [2, 2], 60)
        table = rules()
        figures["loader"] = {"refused_with": problems[0][-90:]}

        # 3. The daemon: its VRRP process stops advertising and exits (no orphan), the
        #    VIP stays (no peer to hand to), so IPVS and XDP go on serving with no daemon.
        child = status(ipvs)["daemon"]["vrrp_process"]["pid"]
        killed = time.monotonic()
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(30)
        wait_for(lambda: not vrrp_children(), 30)
        gone = time.monotonic()
        time.sleep(1.0)
        quiet_end = time.monotonic()
        assert not watch.adverts_between(gone + 3 * INTERVAL, quiet_end), "an orphan kept advertising"
        assert rules() == table and xdp_id() == prog
        assert watch.vip_lost(killed, quiet_end) == 0.0
        failed, tried = watch.failed_connects(killed, quiet_end)
        assert failed == 0, f"{failed}/{tried} connects failed with no daemon"
        started = time.monotonic()
        daemon = ipvs.daemon(cfg, log, mode="a")
        wait_for(lambda: serving(ipvs, daemon.pid), 120)
        answering = time.monotonic() - started
        wait_for(lambda: vrrp_state(ipvs) == "master", 60)
        master = time.monotonic() - started
        time.sleep(0.5)
        end = time.monotonic()
        assert rules() == table and xdp_id() == prog
        assert xstatus(ipvs)["interfaces"][0]["adopted"]
        failed, tried = watch.failed_connects(started, end)
        figures["daemon"] = {
            "child_exited_after_s": round(gone - killed, 2),
            "adverts_after_child_exit": len(watch.adverts_between(gone, quiet_end)),
            "restart_answering_s": round(answering, 2), "master_again_s": round(master, 2),
            "vip_absent_during_restart_s": round(watch.vip_lost(started, end), 2),
            "client_failed_during_restart": f"{failed}/{tried}",
        }  # fmt: skip
        print("KILL9 " + json.dumps(figures))
    finally:
        if watch is not None:
            watch.close()
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        except Exception:
            daemon.kill()
        for s in servers:
            s.close()
        sh("ip", "link", "set", "lb-cl", "xdp", "off", check=False)
        sh("ip", "link", "set", "lb-cl", "xdpgeneric", "off", check=False)
        sh("rm", "-rf", PIN, check=False)
