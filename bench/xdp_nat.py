"""First connections through a Linux SNAT router while the XDP guard is in attack mode.

Three namespaces on the host kernel:

    clients 198.18.100.10.. --- router (SNAT, conntrack) --- load balancer
                                                              guard on its veth,
                                                              a server on VIP 198.18.1.10:80

Each client has its own address and leaves the router as its own public
address (198.18.201.N; `--shared`: all as one, like a carrier-grade NAT),
so every one of them is a source the guard has never verified. The router's
conntrack is at its defaults with nf_conntrack_tcp_be_liberal 0, and with
`--firewall invalid-drop` its forward chain also has the common
`ct state invalid drop`. Attack mode is on for the whole run (attack_syn_rate
1, held 120 s, started before the first client). A client succeeds when its
first connection is made, a request sent and the reply read within
`--deadline` seconds.

    .venv/bin/python -m bench.xdp_nat [--clients 120] [--challenge retransmit|rst-cookie]
                                       [--firewall plain|invalid-drop] [--shared]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

VIP = "198.18.1.10"
ROUTER_IN, ROUTER_OUT, LB = "198.18.100.1", "198.18.200.1", "198.18.200.2"
FIRST = 10  # the first client is 198.18.100.10


def client_address(i: int) -> str:
    return f"198.18.100.{FIRST + i}"


def public_address(i: int) -> str:
    return f"198.18.201.{FIRST + i}"


NAT = """table ip nat {{
 chain post {{
  type nat hook postrouting priority srcnat
  oifname "rl" {snat}
 }}
}}
"""
INVALID_DROP = """table inet filter {
 chain guarded {
  type filter hook forward priority 0
  ct state invalid drop
 }
}
"""


def ruleset(clients: int, firewall: str, shared: bool) -> str:
    if shared:
        snat = "snat to 198.18.201.1"
    else:
        pairs = ", ".join(f"{client_address(i)} : {public_address(i)}" for i in range(clients))
        snat = f"snat to ip saddr map {{ {pairs} }}"
    rules = NAT.format(snat=snat)
    if firewall == "invalid-drop":
        rules += INVALID_DROP
    return rules


def build(tag: str, clients: int, firewall: str, shared: bool) -> tuple[str, str, str]:
    c, r, lb = f"xn-c-{tag}", f"xn-r-{tag}", f"xn-l-{tag}"
    try:
        _build(c, r, lb, clients, firewall, shared)
    except BaseException:
        remove(c, r, lb)
        raise
    return c, r, lb


def remove(*namespaces: str) -> None:
    from ipvsmgr.lab import sh

    for ns in namespaces:
        sh("ip", "netns", "del", ns, check=False)


def _build(c: str, r: str, lb: str, clients: int, firewall: str, shared: bool) -> None:
    from ipvsmgr.lab import sh

    for ns in (c, r, lb):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", c, "link", "add", "c0", "type", "veth", "peer", "name", "rc", "netns", r)
    sh("ip", "-n", r, "link", "add", "rl", "type", "veth", "peer", "name", "l0", "netns", lb)
    for i in range(clients):
        sh("ip", "-n", c, "addr", "add", f"{client_address(i)}/24", "dev", "c0")
    sh("ip", "-n", r, "addr", "add", f"{ROUTER_IN}/24", "dev", "rc")
    sh("ip", "-n", r, "addr", "add", f"{ROUTER_OUT}/24", "dev", "rl")
    sh("ip", "-n", lb, "addr", "add", f"{LB}/24", "dev", "l0")
    sh("ip", "-n", lb, "addr", "add", f"{VIP}/32", "dev", "lo")
    for ns, dev in ((c, "c0"), (r, "rc"), (r, "rl"), (lb, "l0")):
        sh("ip", "-n", ns, "link", "set", dev, "up")
    sh("ip", "-n", c, "route", "add", "default", "via", ROUTER_IN)
    sh("ip", "-n", r, "route", "add", f"{VIP}/32", "via", LB)
    sh("ip", "-n", lb, "route", "add", "198.18.201.0/24", "via", ROUTER_OUT)
    sh("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    nft = ["ip", "netns", "exec", r, "nft", "-f", "-"]
    subprocess.run(nft, input=ruleset(clients, firewall, shared), text=True, check=True)
    # conntrack's own strictness, stated rather than assumed (0 is the default)
    sh("ip", "netns", "exec", r, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=0")


def serve(lsock: socket.socket) -> None:
    """Answer each connection's request line with one line, then close."""

    def one(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                if conn.recv(64):
                    conn.sendall(b"ok\n")
            except OSError:
                pass

    while True:
        try:
            conn, _ = lsock.accept()
        except OSError:
            return
        threading.Thread(target=one, args=(conn,), daemon=True).start()


def first_connection(source: str, deadline: float) -> float | None:
    """Seconds to connect, send a request and read the reply; None past the deadline."""
    t = time.monotonic()
    with socket.socket() as s:
        s.bind((source, 0))
        s.settimeout(deadline)
        try:
            s.connect((VIP, 80))
            s.settimeout(max(0.01, deadline - (time.monotonic() - t)))
            s.sendall(b"GET\n")
            if s.recv(16) != b"ok\n":
                return None
        except OSError:
            return None
    took = time.monotonic() - t
    return took if took <= deadline else None


def run(
    clients: int = 120,
    challenge: str = "retransmit",
    firewall: str = "plain",
    shared: bool = False,
    deadline: float = 3.0,
    parallel: int = 40,
) -> dict[str, Any]:
    from bpf_offload import guard, layout
    from bpf_offload.tables import Tables
    from ipvsmgr.lab import in_netns
    from tests.netns.xdpkit import loaded, services, set_tables, stats

    tag = uuid.uuid4().hex[:6]
    c, r, lb = build(tag, clients, firewall, shared)
    try:

        def listen() -> socket.socket:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((VIP, 80))
            s.listen(1024)
            return s

        lsock = in_netns(lb, listen)
        threading.Thread(target=serve, args=(lsock,), daemon=True).start()
        with loaded("xdp_pass") as peer, loaded() as g:
            # XDP_TX on a veth (the RST cookie's SYN-ACK) needs a program on the peer
            in_netns(r, lambda: peer.attach("rl", "native"))
            settings = layout.GuardSettings(attack_syn_rate=1, attack_hold=120, challenge=challenge)
            set_tables(g, Tables(services=services(VIP), settings=settings))
            in_netns(lb, lambda: g.attach("l0", "native"))

            def start_attack() -> None:  # two SYNs in a second from the router: over 1/s
                for _ in range(2):
                    with socket.socket() as s:
                        s.setblocking(False)
                        s.connect_ex((VIP, 80))
                        time.sleep(0.01)

            in_netns(r, start_attack)
            [attack] = [a for a in guard.read_attack(g.maps, time.monotonic_ns()) if a.address == VIP]
            assert attack.under_attack, attack
            before = stats(g)
            t0 = time.monotonic()

            def all_clients() -> list[float | None]:
                sources = [client_address(i) for i in range(clients)]
                with ThreadPoolExecutor(parallel) as pool:
                    return list(pool.map(partial(first_connection, deadline=deadline), sources))

            times = in_netns(c, all_clients)
            seconds = time.monotonic() - t0
            after = stats(g)
            vips = guard.read_attack(g.maps, time.monotonic_ns())
            still = [a.under_attack for a in vips if a.address == VIP]
            verified = len(g.maps["verified"].key_list())
        lsock.close()
    finally:
        remove(c, r, lb)
    ok = sorted(t for t in times if t is not None)
    return {
        "challenge": challenge,
        "firewall": firewall,
        "nat": "one public address for all" if shared else "one public address per client",
        "clients": clients,
        "deadline_s": deadline,
        "success": len(ok),
        "success_rate": len(ok) / clients,
        "seconds_p50": round(statistics.median(ok), 3) if ok else None,
        "seconds_max": round(ok[-1], 3) if ok else None,
        "run_seconds": round(seconds, 1),
        "under_attack_throughout": bool(still and still[0]),
        "verified_sources": verified,
        "guard_counters": {k: after[k] - before[k] for k in after if after[k] != before[k]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=120)
    ap.add_argument("--challenge", choices=("retransmit", "rst-cookie"), action="append")
    ap.add_argument("--firewall", choices=("plain", "invalid-drop"), action="append")
    ap.add_argument("--shared", action="store_true", help="all clients behind one public address")
    ap.add_argument("--deadline", type=float, default=3.0)
    a = ap.parse_args()
    for ch in a.challenge or ("retransmit", "rst-cookie"):
        for fw in a.firewall or ("plain", "invalid-drop"):
            m = run(a.clients, ch, fw, a.shared, a.deadline)
            print(
                f"{ch:10} {fw:12} {m['nat']}: {m['success']}/{m['clients']} ({m['success_rate']:.1%}) "
                f"within {a.deadline} s, p50 {m['seconds_p50']} s max {m['seconds_max']} s; "
                f"guard {m['guard_counters']}"
            )
            print(json.dumps(m))


if __name__ == "__main__":
    main()
