"""A SYN flood that hurts without the XDP guard, in the VM with IPVS (issue 17).

The victims are the reals behind a NAT virtual server, as a busy or badly
tuned backend is: SYN cookies off and a listen backlog of 64 in their
namespace, so a flood of spoofed SYNs that IPVS forwards fills their SYN
queues within 50 ms, and IPVS's connection table, which holds an entry per
SYN. The backlog is room for the clients below (20 handshakes per real at
once) beside the few flood SYNs that pass before attack mode starts, each
held for a minute: with 16, a slow machine dropped a client's retransmitted
SYN at the full queue, and its next retransmission came after its 3 s.
tcp_max_syn_backlog is raised so that the queue, not that sysctl, is what
fills: past 3/4 of it, without cookies, the kernel drops only SYNs of hosts
it has not talked to before, and the clients would pass the flood.
Legitimate clients: 20 addresses on the client side, and 20 behind a Linux
SNAT router (conntrack strict, `ct state invalid drop`) each leaving as its
own public address, so every one is a source the guard has never seen. Each
makes 5 connections (connect, a line echoed back, within 3 s) while a
bounded spoofed flood runs: first with the daemon's guard (its default
challenge), then, after a reload without the `xdp:` section, without it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.kernel.helpers import Lab, ipvsadm, sh
from tests.kernel.test_health import wait_for, weights
from tests.kernel.test_xdp_daemon import packets, xdp_id, xstatus
from tests.netns.lab import in_netns

REALS = ("198.18.2.5", "198.18.2.6")
VIP, VPORT = "198.18.0.10", 8484
PIN = "/sys/fs/bpf/ipvsmgr-vmhurt"
DIRECT = [f"198.18.3.{10 + i}" for i in range(20)]  # on the client side
HOME = [f"198.18.4.{10 + i}" for i in range(20)]  # behind the SNAT router ...
PUBLIC = [f"198.18.3.{40 + i}" for i in range(20)]  # ... leaving as these
SERVERS = f"""\
virtual_servers:
  - name: web
    address: {VIP}
    port: {VPORT}
    scheduler: rr
    reals:
""" + "".join(f"      - {{address: {a}, port: 8080}}\n" for a in REALS)
GUARD = f"""\
xdp:
  interfaces: [lb-cl]
  mode: generic
  pin_path: {PIN}
  attack: {{syn_rate: 10, hold: 30s}}  # low: a handful of spoofed SYNs fills these reals
"""
ROUTER = (
    "table ip nat {\n chain post {\n  type nat hook postrouting priority srcnat\n"
    '  oifname "cl0" snat to ip saddr map { '
    + ", ".join(f"{h} : {p}" for h, p in zip(HOME, PUBLIC, strict=True))
    + " }\n }\n}\n"
    "table inet filter {\n chain guarded {\n  type filter hook forward priority 0\n"
    "  ct state invalid drop\n }\n}\n"
)


def build_home() -> None:
    """The home namespace behind `cl`, which becomes a SNAT router."""
    sh("ip", "netns", "add", "home")
    sh("ip", "-n", "cl", "link", "add", "clh", "type", "veth", "peer", "name", "h0", "netns", "home")
    sh("ip", "-n", "cl", "addr", "add", "198.18.4.1/24", "dev", "clh")
    sh("ip", "-n", "cl", "link", "set", "clh", "up")
    for a in DIRECT + PUBLIC:
        sh("ip", "-n", "cl", "addr", "add", f"{a}/24", "dev", "cl0")
    for a in HOME:
        sh("ip", "-n", "home", "addr", "add", f"{a}/24", "dev", "h0")
    sh("ip", "-n", "home", "link", "set", "h0", "up")
    sh("ip", "-n", "home", "link", "set", "lo", "up")
    sh("ip", "-n", "home", "route", "add", "default", "via", "198.18.4.1")
    sh("ip", "netns", "exec", "cl", "sysctl", "-qw", "net.ipv4.ip_forward=1")
    subprocess.run(["ip", "netns", "exec", "cl", "nft", "-f", "-"], input=ROUTER, text=True, check=True)
    sh("ip", "netns", "exec", "cl", "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=0")
    # the reals' answers to the spoofed sources go towards the client side and die there
    sh("ip", "route", "add", "198.19.0.0/16", "via", "198.18.3.2")
    sh("ip", "-n", "cl", "route", "add", "blackhole", "198.19.0.0/16")


class SmallBacklog:
    """An echo server per real, listen backlog 64, in a namespace without SYN cookies."""

    def __init__(self) -> None:
        sh("ip", "netns", "exec", "rs", "sysctl", "-qw", "net.ipv4.tcp_syncookies=0")
        sh("ip", "netns", "exec", "rs", "sysctl", "-qw", "net.ipv4.tcp_max_syn_backlog=4096")

        def make(addr: str) -> socket.socket:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, 8080))
            s.listen(64)
            return s

        self.socks = [in_netns("rs", lambda a=a: make(a)) for a in REALS]
        for s in self.socks:
            threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    @staticmethod
    def _accept(s: socket.socket) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.settimeout(2)
                if data := conn.recv(64):
                    conn.sendall(data)

    def close(self) -> None:
        for s in self.socks:
            s.close()


def one_client(source: str, connections: int = 5, deadline: float = 3.0) -> list[float | None]:
    out: list[float | None] = []
    for _ in range(connections):
        t = time.monotonic()
        try:
            with socket.socket() as s:
                s.bind((source, 0))
                s.settimeout(deadline)
                s.connect((VIP, VPORT))
                s.sendall(b"hello\n")
                ok = s.recv(16) == b"hello\n"
        except OSError:
            ok = False
        took = time.monotonic() - t
        out.append(took if ok and took <= deadline else None)
    return out


def all_clients() -> dict[str, list[float | None]]:
    """Every client at once, each making its connections one after another."""

    def side(ns: str, sources: list[str]) -> list[float | None]:
        def body() -> list[float | None]:
            with ThreadPoolExecutor(len(sources)) as pool:
                return [t for ts in pool.map(one_client, sources) for t in ts]

        return in_netns(ns, body)

    with ThreadPoolExecutor(2) as pool:
        direct = pool.submit(side, "cl", DIRECT)
        home = pool.submit(side, "home", HOME)
        return {"direct": direct.result(), "behind_nat": home.result()}


def flood_entries() -> int:
    """IPVS entries in SYN_RECV from the spoofed range (`ipvsadm -Lnc`, the independent reader)."""
    return sum(1 for line in ipvsadm("-Lnc").splitlines() if "SYN_RECV" in line and " 198.19." in line)


def under_flood(count: int = 90_000, rate: int = 3000) -> dict[str, Any]:
    from bench.xdp_flood import start_flood

    cmac = json.loads(sh("ip", "-j", "-n", "cl", "link", "show", "cl0"))[0]["address"]
    lmac = json.loads(sh("ip", "-j", "link", "show", "lb-cl"))[0]["address"]
    proc = start_flood("cl", "cl0", cmac, lmac, VIP, VPORT, count, rate, 4096, net16=19)
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.stdin.write("go\n")
    proc.stdin.flush()
    time.sleep(2.0)  # the flood is on, and the reals' queues full if it reaches them
    times = all_clients()
    running = proc.poll() is None
    proc.stdin.close()
    proc.terminate()
    out = proc.stdout.read().strip().splitlines()
    proc.wait(30)
    result: dict[str, Any] = {"flood_sent": json.loads(out[-1])["sent"], "flood_running_at_end": running,
                              "ipvs_flood_entries": flood_entries()}  # fmt: skip
    for side, ts in times.items():
        ok = sorted(t for t in ts if t is not None)
        result[side] = {"success": len(ok) / len(ts), "p50_s": round(ok[len(ok) // 2], 3) if ok else None,
                        "max_s": round(ok[-1], 3) if ok else None}  # fmt: skip
    all_ts = times["direct"] + times["behind_nat"]
    result["success"] = sum(1 for t in all_ts if t is not None) / len(all_ts)
    return result


def test_the_guard_keeps_clients_alive_through_a_flood_that_takes_the_reals_down(
    ipvs: Lab, nat_lab: None
) -> None:
    assert shutil.which("nft"), "nft (nftables) is needed for the SNAT router"
    sh("make", "-s", "-C", str(Path(__file__).resolve().parents[2] / "bpf_offload"))
    build_home()
    servers = SmallBacklog()
    cfg = ipvs.write("lb.yaml", SERVERS + GUARD)
    log = Path(ipvs.work / "daemon.log")
    daemon = ipvs.daemon(cfg, log)
    try:
        wait_for(lambda: list(weights().values()) == [1, 1], 120)
        wait_for(lambda: Path(ipvs.socket).exists(), 30)
        wait_for(lambda: xdp_id() is not None, 30)
        on = under_flood()
        st = xstatus(ipvs)
        held = packets(st, "retransmit_wait") + packets(st, "retransmit_early")

        ipvs.write("lb.yaml", SERVERS)  # the same service, unguarded
        assert ipvs.ctl("reload").returncode == 0
        wait_for(lambda: xdp_id() is None, 10)
        off = under_flood()
        print(json.dumps({"guard_on": on, "guard_off": off, "held_back_by_the_guard": held}))

        assert on["flood_running_at_end"] and off["flood_running_at_end"]
        # with the guard: every client, behind the NAT router too, at the cost of one RTO once
        assert on["success"] >= 0.99, on
        assert on["behind_nat"]["success"] >= 0.99 and on["direct"]["success"] >= 0.99, on
        assert held >= 0.9 * (on["flood_sent"] - 100), (held, on)
        # without it the same flood fills the reals' queues and IPVS's table
        assert off["success"] <= 0.5, off
        assert off["ipvs_flood_entries"] > 10 * max(1, on["ipvs_flood_entries"]), (on, off)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        servers.close()
        sh("ip", "link", "set", "lb-cl", "xdp", "off", check=False)
        sh("ip", "route", "del", "198.19.0.0/16", check=False)
        sh("ip", "netns", "del", "home", check=False)
