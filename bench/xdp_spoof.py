"""A SYN flood that spoofs live hosts: what passes the XDP guard, per challenge.

Two namespaces on the host kernel joined by a veth: "outside" owns the live
hosts (198.18.150.1.., real addresses its stack answers for) and runs the
attacker, which sends SYNs from those addresses (AF_PACKET, fresh source
port and ISN each) to the VIP in the load balancer's namespace, where the
guard is attached. Attack mode is started first by SYNs from unused
addresses, so that only the flood is measured. What passed the guard is
counted independently by an nftables counter on the load balancer's input
(SYNs to the VIP), beside the guard's own counters.

With the RST cookie, the live hosts answer each challenge with the RST that
verifies them; the per-source budget (verified_syn_rate, verified_syn_burst)
is then all a host's address gets. With the retransmission test the guard
sends them nothing, and only a copy of a SYN at a retransmission interval
passes: `--replay` makes the attacker send every SYN again 1 s later.

    .venv/bin/python -m bench.xdp_spoof [--hosts 50] [--rate 200] [--seconds 5]
                                          [--challenge rst-cookie|retransmit] [--replay]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import socket
import struct
import subprocess
import time
import uuid
from typing import Any

from vrrp.packet import checksum  # RFC 1071

VIP, OUTSIDE, LB = "198.18.1.10", "198.18.150.254", "198.18.150.253"


def host(i: int) -> str:
    return f"198.18.150.{i + 1}"


def syn_frame(dst_mac: bytes, src_mac: bytes, src: str, dst: str, sport: int, seq: int) -> bytes:
    saddr, daddr = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, 80, seq, 0, 0x50, 0x02, 64240, 0, 0)
    pseudo = saddr + daddr + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, saddr, daddr)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + tcp


def mac(ns: str, dev: str) -> bytes:
    from ipvsmgr.lab import sh

    return bytes.fromhex(
        json.loads(sh("ip", "-j", "-n", ns, "link", "show", dev))[0]["address"].replace(":", "")
    )


def syn_counter(ns: str) -> int:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet", "seen"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule:
            for e in rule["expr"]:
                if "counter" in e:
                    return int(e["counter"]["packets"])
    raise AssertionError("no counter in the load balancer's ruleset")


SEEN = """table inet seen {
 chain input {
  type filter hook input priority -300
  ip daddr 198.18.1.10 tcp dport 80 tcp flags & (syn | ack) == syn counter
 }
}
"""


def run(
    challenge: str = "rst-cookie",
    hosts: int = 50,
    rate: int = 200,
    seconds: float = 5.0,
    budget: int = 20,
    burst: int = 40,
    replay: bool = False,
) -> dict[str, Any]:
    """`rate` SYN/s from each of `hosts` live addresses for `seconds`."""
    from bpf_offload import guard, layout
    from bpf_offload.tables import Tables
    from ipvsmgr.lab import in_netns, sh
    from tests.netns.xdpkit import loaded, services, set_tables, stats

    tag = uuid.uuid4().hex[:6]
    out, lb = f"xs-o-{tag}", f"xs-l-{tag}"
    try:
        for ns in (out, lb):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", out, "link", "add", "o0", "type", "veth", "peer", "name", "l0", "netns", lb)
        sh("ip", "-n", out, "addr", "add", f"{OUTSIDE}/24", "dev", "o0")
        for i in range(hosts):
            sh("ip", "-n", out, "addr", "add", f"{host(i)}/24", "dev", "o0")
        sh("ip", "-n", lb, "addr", "add", f"{LB}/24", "dev", "l0")
        sh("ip", "-n", lb, "addr", "add", f"{VIP}/32", "dev", "lo")
        for ns, dev in ((out, "o0"), (lb, "l0")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", lb, "route", "add", "198.18.0.0/15", "via", OUTSIDE)
        sh("ip", "-n", out, "route", "add", f"{VIP}/32", "via", LB)  # the hosts' answers reach the VIP
        subprocess.run(["ip", "netns", "exec", lb, "nft", "-f", "-"], input=SEEN, text=True, check=True)
        out_mac, lb_mac = mac(out, "o0"), mac(lb, "l0")
        sock = in_netns(out, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
        sock.bind(("o0", 0))
        rnd = random.Random(7)

        def frame(src: str) -> bytes:
            return syn_frame(lb_mac, out_mac, src, VIP, rnd.randrange(1024, 65535), rnd.getrandbits(32))

        with loaded("xdp_pass") as peer, loaded() as g:
            in_netns(out, lambda: peer.attach("o0", "native"))  # XDP_TX on a veth needs a program on the peer
            settings = layout.GuardSettings(
                attack_syn_rate=100,
                attack_hold=60,
                challenge=challenge,
                verified_syn_rate=budget,
                verified_syn_burst=burst,
            )
            set_tables(g, Tables(services=services(VIP), settings=settings))
            in_netns(lb, lambda: g.attach("l0", "native"))
            for i in range(300):  # attack mode first, from addresses nobody owns
                sock.send(frame(f"198.18.151.{i % 250 + 1}"))
            time.sleep(0.2)
            [attack] = [a for a in guard.read_attack(g.maps, time.monotonic_ns()) if a.address == VIP]
            assert attack.under_attack, attack
            before, seen_before = stats(g), syn_counter(lb)
            pending: collections.deque[tuple[float, bytes]] = collections.deque()
            total = int(hosts * rate * seconds)
            sent = replayed = 0
            t0 = time.monotonic()
            while sent < total:
                now = time.monotonic()
                due = t0 + sent / (hosts * rate)
                if due > now:
                    time.sleep(due - now)
                f = frame(host(sent % hosts))
                sock.send(f)
                sent += 1
                if replay:
                    pending.append((time.monotonic() + 1.0, f))
                while pending and pending[0][0] <= time.monotonic():
                    sock.send(pending.popleft()[1])
                    replayed += 1
            while pending:  # the replays still owed, at their time
                at, f = pending.popleft()
                time.sleep(max(0.0, at - time.monotonic()))
                sock.send(f)
                replayed += 1
            elapsed = time.monotonic() - t0
            time.sleep(0.2)
            moved = {k: v - before[k] for k, v in stats(g).items() if v != before[k]}
            passed = syn_counter(lb) - seen_before
            verified = {layout.addr_text(k) for k in g.maps["verified"].key_list()}
        sock.close()
    finally:
        for ns in (out, lb):
            sh("ip", "netns", "del", ns, check=False)
    allowed = hosts * (burst + budget * elapsed) if budget else None
    return {
        "challenge": challenge,
        "replay": replay,
        "hosts": hosts,
        "syn_sent": sent + replayed,
        "seconds": round(elapsed, 2),
        "syn_passed": passed,  # counted by nftables behind the guard
        "budget_allows": round(allowed) if allowed is not None else None,
        "hosts_verified": len({host(i) for i in range(hosts)} & verified),
        "sent_to_hosts": moved.get("challenge", 0),
        "guard_counters": moved,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--rate", type=int, default=200, help="SYN/s per spoofed host")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument(
        "--budget", type=int, default=20, help="verified_syn_rate (0: none, the previous behaviour)"
    )
    ap.add_argument("--burst", type=int, default=40)
    ap.add_argument("--challenge", choices=("rst-cookie", "retransmit"), default="rst-cookie")
    ap.add_argument("--replay", action="store_true", help="send every SYN again 1 s later")
    a = ap.parse_args()
    m = run(a.challenge, a.hosts, a.rate, a.seconds, a.budget, a.burst, a.replay)
    print(
        f"{m['challenge']}{' + replay' if m['replay'] else ''}: "
        f"{m['syn_passed']} of {m['syn_sent']} spoofed SYNs "
        f"passed in {m['seconds']} s (the budget allows {m['budget_allows']}); "
        f"{m['hosts_verified']}/{m['hosts']} live hosts verified, {m['sent_to_hosts']} packets sent to them"
    )
    print(json.dumps(m))


if __name__ == "__main__":
    main()
