"""XDP guard: nanoseconds per packet for each path on the attached program under
a flood (the kernel's BPF run-time statistics), beside BPF_PROG_TEST_RUN.

Two namespaces joined by a veth (tests/netns/lab.py); the guard is attached
native on the server's end, primed as bench/xdp_paths.py primes it, and a
sender in the client namespace floods it with one path's packets at a time
(AF_PACKET, `--packets` per path, as fast as one Python process sends).
With kernel.bpf_stats_enabled=1 the kernel adds up the program's run time
and run count; their deltas over one path's flood give its ns per packet,
the program alone (not the veth, the stack or the reply's transmission).
The baseline is xdp_pass attached the same way under a flood of VIP ACKs.
Paths whose packets must differ (a first SYN of the retransmission test,
the RST cookie's challenge from fresh sources) get a new source and ISN
for every packet; a passing retransmission is each of those sent again
one RTO later. The PROG_TEST_RUN figures come from bench/xdp_paths.py in
the same run.

    .venv/bin/python -m bench.xdp_costs [--packets 200000]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench import xdp_paths
from bench.xdp_paths import fresh_syns, paths, tables
from bench.xdp_spoof import mac


def prog_stats(prog_id: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) as bpftool, an independent reader, reports them."""
    out = json.loads(
        subprocess.run(
            ["bpftool", "-j", "prog", "show", "id", str(prog_id)], capture_output=True, text=True, check=True
        ).stdout
    )
    return int(out.get("run_time_ns", 0)), int(out.get("run_cnt", 0))


def flood(send: Callable[[bytes], int], packets: list[bytes], count: int) -> None:
    n = len(packets)
    for i in range(count):
        while True:
            try:
                send(packets[i % n])
                break
            except OSError as e:  # ENOBUFS/EAGAIN: the queue is full; retry
                if e.errno not in (11, 105):
                    raise


def measured(prog_id: int, go: Callable[[], None]) -> tuple[float, int]:
    t0, c0 = prog_stats(prog_id)
    go()
    time.sleep(0.2)  # the last packets are through the veth's NAPI
    t1, c1 = prog_stats(prog_id)
    return (t1 - t0) / max(1, c1 - c0), c1 - c0


def run(count: int, repeat: int, rounds: int, calls: int) -> dict[str, Any]:
    from bpf_offload import layout
    from tests.netns.lab import in_netns, make_lab, sh
    from tests.netns.xdpkit import loaded, set_tables, stats

    test_run = xdp_paths.run(repeat, rounds, calls)
    lab = make_lab()
    stats_switch = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = stats_switch.read_text().strip()
    try:
        stats_switch.write_text("1")
        smac, cmac = mac(lab.server, "veth0"), mac(lab.client, "veth0")
        sock = in_netns(lab.client, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
        sock.bind(("veth0", 0))

        def on_wire(pkts: list[bytes]) -> list[bytes]:
            return [smac + cmac + p[12:] for p in pkts]

        results: dict[str, Any] = {}
        with loaded("xdp_pass") as peer, loaded("xdp_pass") as empty:
            in_netns(lab.client, lambda: peer.attach("veth0", "native"))  # XDP_TX on a veth needs it
            ack = on_wire([next(p.packet for p in paths() if p.reason == "vip")])
            in_netns(lab.server, lambda: empty.attach("veth0", "native"))
            base, _ = measured(empty.prog_id, partial(flood, sock.send, ack, count))
            sh("ip", "-n", lab.server, "link", "set", "veth0", "xdp", "off")
            with xdp_paths.guard_with_state() as g:
                answer = on_wire([xdp_paths.rst_answer(g)])[0]
                in_netns(lab.server, lambda: g.attach("veth0", "native"))
                start = 0
                for p in paths():
                    set_tables(g, tables(p.settings))
                    if p.kind == "fresh" or p.kind == "retransmission":
                        pkts = on_wire(fresh_syns(min(count, 60_000), start))
                        start += len(pkts)
                        if p.kind == "retransmission":
                            flood(sock.send, pkts, len(pkts))  # their first copies, then one RTO
                            time.sleep(1.0)
                        ns, n = measured(g.prog_id, partial(flood, sock.send, pkts, len(pkts)))
                    elif p.reason == "challenge":  # a challenge to each of many sources
                        pkts = on_wire(fresh_syns(min(count, 60_000), start))
                        start += len(pkts)
                        ns, n = measured(g.prog_id, partial(flood, sock.send, pkts, len(pkts)))
                    else:
                        one = on_wire([answer if p.reason == "challenge_passed" else p.packet])
                        ns, n = measured(g.prog_id, partial(flood, sock.send, one, count))
                    g.maps["verified"].delete(layout.addr16("198.18.0.23"))
                    results[p.name] = {
                        "reason": p.reason,
                        "attached_ns": round(ns, 1),
                        "runs": n,
                        "test_run_ns": test_run["paths"][p.name]["ns"],
                    }
                reasons = {p.reason for p in paths()}
                counters = {k: v for k, v in stats(g).items() if k in reasons}
        sock.close()
    finally:
        stats_switch.write_text(old)
        lab.close()
    return {
        "attached_empty_ns": round(base, 1),
        "test_run_empty_ns": test_run["empty_ns"],
        "test_run_one_run_overhead_ns": test_run["one_run_overhead_ns"],
        "packets_per_path": count,
        "paths": results,
        "guard_counters": counters,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=200_000, help="flood packets per path")
    ap.add_argument("--repeat", type=int, default=200_000, help="PROG_TEST_RUN repeat (bench.xdp_paths)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args()
    r = run(a.packets, a.repeat, a.rounds, a.calls)
    print(f"empty program: attached {r['attached_empty_ns']} ns, PROG_TEST_RUN {r['test_run_empty_ns']} ns")
    print(f"PROG_TEST_RUN single-run overhead (subtracted): {r['test_run_one_run_overhead_ns']} ns")
    print(f"{'path':48} {'attached':>9} {'test run':>9} {'runs':>8}")
    for name, p in r["paths"].items():
        print(f"{name:48} {p['attached_ns']:>9} {p['test_run_ns']:>9} {p['runs']:>8}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    main()
