"""A spoofed SYN flood against a guarded service: legitimate connects with the
XDP guard on vs off (the kernel's own SYN cookies only), in the same run.

Two namespaces joined by a veth (tests/netns/lab.py): the server listens on
198.18.200.2:80 (backlog 128); from the client namespace a separate process
sends a fixed number of SYNs from random spoofed sources in 198.18.0.0/15
(AF_PACKET, prebuilt frames) while this process opens `--legit` connections
one after another from 198.18.200.1 and times each connect(). The flood is
bounded by its packet count (and stopped early once the legitimate client
is done); the namespaces are deleted afterwards.

Guard on: attached native on the server's veth (xdp_pass on the client's,
which XDP_TX on a veth needs), attack mode above `--attack-rate` SYN/s,
`--challenge` retransmit (the default) or rst-cookie. Guard off: nothing
attached; the kernel answers with cookies.

    .venv/bin/python -m bench.xdp_flood [--flood 2000000] [--legit 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from vrrp.packet import checksum  # RFC 1071

ROOT = Path(__file__).resolve().parents[1]
SOURCES = 16384  # distinct spoofed sources in the prebuilt frames


def frames(
    dst_mac: bytes,
    src_mac: bytes,
    dst: str,
    port: int,
    seed: int,
    sources: int = SOURCES,
    net16: int | None = None,
) -> list[bytes]:
    """SYN frames from random sources in 198.18.0.0/15 (or 198.<net16>.0.0/16),
    outside the lab's 198.18.200.0/24."""
    rnd = random.Random(seed)
    daddr = socket.inet_aton(dst)
    out: list[bytes] = []
    while len(out) < sources:
        n = rnd.getrandbits(17)
        second = 18 + (n >> 16) if net16 is None else net16
        saddr = bytes([198, second, (n >> 8) & 0xFF, n & 0xFF])
        if saddr[1:3] == bytes([18, 200]) or saddr[3] in (0, 255):
            continue
        tcp = struct.pack("!HHIIBBHHH", rnd.randrange(1024, 65535), port, rnd.getrandbits(32), 0, 0x50, 0x02,
                          64240, 0, 0)  # fmt: skip
        pseudo = saddr + daddr + struct.pack("!BBH", 0, 6, len(tcp))
        tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, saddr, daddr)
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        out.append(dst_mac + src_mac + b"\x08\x00" + ip + tcp)
    return out


def next_port(frame: bytearray) -> None:
    """Source port + 1, with the TCP checksum updated incrementally (RFC 1624)."""
    old = frame[34] << 8 | frame[35]
    new = old + 1 if old < 65535 else 1024
    frame[34:36] = new.to_bytes(2, "big")
    s = (~(frame[50] << 8 | frame[51]) & 0xFFFF) + (~old & 0xFFFF) + new
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    frame[50:52] = (~s & 0xFFFF).to_bytes(2, "big")


def sender(
    ifname: str,
    src_mac: str,
    dst_mac: str,
    dst: str,
    port: int,
    count: int,
    rate: int,
    seed: int,
    sources: int,
    net16: int | None = None,
) -> None:
    """The flood process: waits for a line on stdin, sends `count` frames, reports."""
    mac = bytes.fromhex
    built = frames(
        mac(dst_mac.replace(":", "")), mac(src_mac.replace(":", "")), dst, port, seed, sources, net16
    )
    fr = [bytearray(f) for f in built]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # stopped early: still report what was sent
    print("ready", flush=True)
    sys.stdin.readline()
    send = s.send
    t = time.monotonic()
    sent = 0
    n = len(fr)
    burst = 500
    try:
        while sent < count:
            # paced: `rate` SYN/s in bursts, so both modes face the same offered load
            due = t + sent / rate if rate else 0.0
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            for _ in range(min(burst, count - sent)):
                while True:
                    try:
                        send(fr[sent % n])
                        break
                    except OSError as e:  # ENOBUFS/EAGAIN: the device queue is full; retry
                        if e.errno not in (11, 105):
                            raise
                sent += 1
                if sent % n == 0:
                    for f in fr:  # a new round of source ports: every SYN is a new 4-tuple
                        next_port(f)
    except KeyboardInterrupt:
        pass
    print(json.dumps({"sent": sent, "seconds": time.monotonic() - t}), flush=True)


def start_flood(
    ns: str,
    ifname: str,
    src_mac: str,
    dst_mac: str,
    dst: str,
    port: int,
    count: int,
    rate: int,
    sources: int,
    net16: int | None = None,
) -> subprocess.Popen[str]:
    """The flood process in namespace ns; it sends after a line on its stdin."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [ifname, src_mac, dst_mac, dst, str(port), str(count), str(rate), str(sources)]
    if net16 is not None:
        args.append(str(net16))
    argv = ["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-m", "bench.xdp_flood", "--send", *args]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def nstat(ns: str) -> dict[str, int]:
    out = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "nstat", "-az", "--json"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    raw = json.loads(out)
    return {k: int(v) for k, v in raw.get("kernel", raw).items()}


def run_mode(
    guard_on: bool,
    flood: int,
    rate: int,
    legit: int,
    attack_rate: int,
    timeout: float,
    challenge: str = "retransmit",
) -> dict[str, Any]:
    from bpf_offload import layout
    from bpf_offload.tables import Tables
    from tests.netns.lab import CLIENT4, SERVER4, in_netns, make_lab, sh
    from tests.netns.xdpkit import loaded, services, set_tables, stats

    lab = make_lab()
    try:
        sh("ip", "-n", lab.server, "route", "add", "default", "via", CLIENT4)  # replies to spoofed sources
        mac = json.loads(sh("ip", "-j", "-n", lab.server, "link", "show", "veth0"))[0]["address"]
        cmac = json.loads(sh("ip", "-j", "-n", lab.client, "link", "show", "veth0"))[0]["address"]

        def listen() -> socket.socket:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((SERVER4, 80))
            s.listen(128)
            return s

        lsock = in_netns(lab.server, listen)

        def accept() -> None:
            while True:
                try:
                    c, _ = lsock.accept()
                except OSError:
                    return
                c.close()

        threading.Thread(target=accept, daemon=True).start()
        with loaded("xdp_pass") as peer, loaded() as g:
            lab.in_client(lambda: peer.attach("veth0", "native"))
            if guard_on:
                # One client stands in for many here (1,000 connects a second from
                # one address): its verified budget is theirs.
                set_tables(g, Tables(services=services(SERVER4), settings=layout.GuardSettings(
                    attack_syn_rate=attack_rate, attack_hold=5.0, challenge=challenge,
                    verified_syn_rate=5000, verified_syn_burst=5000)))  # fmt: skip
                lab.in_server(lambda: g.attach("veth0", "native"))
            proc = start_flood(lab.client, "veth0", cmac, mac, SERVER4, 80, flood, rate, SOURCES)
            assert proc.stdin is not None and proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            before = nstat(lab.server)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            time.sleep(0.3)  # the flood is on (and attack mode with it) before the first legitimate SYN

            def client() -> list[float | None]:
                times: list[float | None] = []
                for _ in range(legit):
                    with socket.socket() as s:
                        s.settimeout(timeout)
                        t = time.monotonic()
                        try:
                            s.connect((SERVER4, 80))
                            times.append(time.monotonic() - t)
                        except OSError:
                            times.append(None)
                return times

            t0 = time.monotonic()
            times = lab.in_client(client)
            legit_seconds = time.monotonic() - t0
            flood_running = proc.poll() is None
            proc.stdin.close()  # stop early: the measurement is over
            proc.terminate()
            report = proc.stdout.read().strip().splitlines()
            proc.wait()
            after = nstat(lab.server)
            counters = stats(g) if guard_on else {}
        lsock.close()
    finally:
        lab.close()
    ok = [t for t in times if t is not None]
    ms = sorted(t * 1000 for t in ok)
    sent = json.loads(report[-1]) if report else {"sent": None, "seconds": None}
    names = (
        "TcpExtSyncookiesSent",
        "TcpExtListenOverflows",
        "TcpExtListenDrops",
        "TcpExtTCPReqQFullDoCookies",
    )
    kernel = {k: after.get(k, 0) - before.get(k, 0) for k in names}
    return {
        "guard": "on" if guard_on else "off",
        "legit": legit,
        "success": len(ok),
        "success_rate": len(ok) / legit,
        "connect_ms_p50": round(statistics.median(ms), 3) if ms else None,
        "connect_ms_p99": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3) if ms else None,
        "connect_ms_max": round(ms[-1], 3) if ms else None,
        "legit_seconds": round(legit_seconds, 2),
        "connects_over_10ms": sum(1 for t in ms if t > 10),
        "flood_still_running_at_end": flood_running,
        "flood_sent": sent.get("sent"),
        "flood_pps": round(sent["sent"] / sent["seconds"]) if sent.get("seconds") else None,
        "server_kernel": kernel,
        "guard_counters": {k: v for k, v in counters.items() if v},
    }


def compare(
    flood: int,
    rate: int,
    legit: int,
    attack_rate: int = 2000,
    timeout: float = 3.0,
    challenge: str = "retransmit",
) -> dict[str, Any]:
    on = run_mode(True, flood, rate, legit, attack_rate, timeout, challenge)
    off = run_mode(False, flood, rate, legit, attack_rate, timeout)
    return {"on": on, "off": off}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--send":
        # --send IFNAME SRC_MAC DST_MAC DST PORT COUNT RATE SOURCES [NET16]
        ifname, src_mac, dst_mac, dst = sys.argv[2:6]
        port, count, rate, sources = (int(x) for x in sys.argv[6:10])
        net16 = int(sys.argv[10]) if len(sys.argv) > 10 else None
        sender(ifname, src_mac, dst_mac, dst, port, count, rate, 7, sources, net16)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flood", type=int, default=1_000_000, help="SYNs in the flood (its bound)")
    ap.add_argument("--rate", type=int, default=200_000, help="flood SYN/s (0: as fast as it can)")
    ap.add_argument("--legit", type=int, default=1000, help="legitimate connections, one after another")
    ap.add_argument("--attack-rate", type=int, default=2000, help="SYN/s per VIP that starts attack mode")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--challenge", choices=("retransmit", "rst-cookie"), default="retransmit")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args()
    results = [compare(a.flood, a.rate, a.legit, a.attack_rate, challenge=a.challenge) for _ in range(a.runs)]
    for r in results:
        for mode in ("on", "off"):
            m = r[mode]
            print(
                f"guard {mode:3}: legit {m['success']}/{m['legit']} ({m['success_rate']:.1%}), "
                f"connect p50 {m['connect_ms_p50']} ms p99 {m['connect_ms_p99']} ms "
                f"max {m['connect_ms_max']} ms "
                f"({m['connects_over_10ms']} over 10 ms, {m['legit_seconds']} s in all); "
                f"flood {m['flood_sent']} SYNs at {m['flood_pps']}/s (running to the end: "
                f"{m['flood_still_running_at_end']}); server kernel {m['server_kernel']}"
            )
            if m["guard_counters"]:
                print(f"           guard counters {m['guard_counters']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
