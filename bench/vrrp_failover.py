"""Benchmark: VIP outage seen by a client when the VRRP master crashes or stops, ipvsmgr vs keepalived.

    python -m bench.vrrp_failover [--runs 5] [--intervals 1,0.1] [--modes crash,graceful]

A fresh LAN of namespaces per run (tests/netns/vrrplab.py: nodes a and b on
a bridge, client c). A pair of the same implementation runs on a (priority
150, master) and b (priority 100, backup), VRRPv3, VIP 198.18.10.100/24.
Once a has been master for 3 intervals, c pings the VIP every 10 ms (ICMP
echo, raw socket) and after 1 s the master is:

- crash: killed with SIGKILL and its switch port taken down (a killed VRRP
  daemon leaves its VIP configured, and a crashed host stops answering);
- graceful: sent SIGTERM (it advertises priority 0 and releases the VIP).

The outage is the longest gap between two echo replies at c around the
event (10 ms is no outage: that is the ping interval). c's switch port is
sniffed: after the new master has answered for 1 s, adverts with a
priority above 0 must come from one node only ("two masters" otherwise).
Every run is bounded: pings stop 5 s + 4 intervals after the event.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.netns.lab import sh  # noqa: E402
from tests.netns.vrrplab import VIP4, Pinger, VrrpLab, ipvsmgr_conf, keepalived, keepalived_conf  # noqa: E402


def one_run(impl: str, interval: float, mode: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vrrpbench-") as work:
        lab = VrrpLab(Path(work))
        try:
            lab.setup()
            lab.sniff("pc")
            if impl == "ipvsmgr":
                every = f"{round(interval * 1000)}ms"
                master = lab.ipvsmgr("a", ipvsmgr_conf(150, interval=every), "a")
                lab.ipvsmgr("b", ipvsmgr_conf(100, interval=every), "b")
            else:
                master = lab.keepalived("a", keepalived_conf(150, interval=f"{interval:g}"), "a")
                lab.keepalived("b", keepalived_conf(100, interval=f"{interval:g}"), "b")
            lab.wait_for(
                lambda: lab.has_address("a", VIP4) and not lab.has_address("b", VIP4), 30, "a master"
            )
            time.sleep(3 * interval + 0.5)
            pinger = Pinger(lab.ns("c"), VIP4, 1.0 + 5.0 + 4 * interval)
            pinger.start()
            time.sleep(1.0)
            event = time.monotonic()
            if mode == "crash":
                os.killpg(master.pid, signal.SIGKILL)
                lab.link("a", up=False)
            else:
                os.killpg(master.pid, signal.SIGTERM)
            pinger.join()
            outage = pinger.outage(event)
            # Adverts once the new master has answered for 1 s: from b only.
            settled = event + (outage or 0.0) + 1.0
            masters = sorted({c.src for c in lab.captured if c.at >= settled and c.vrrp[2] > 0})
            return {
                "impl": impl, "interval": interval, "mode": mode,
                "outage_s": outage, "pings": pinger.sent, "replies": len(pinger.replies),
                "masters_after": masters, "two_masters": len(masters) > 1,
                "b_has_vip": lab.has_address("b", VIP4),
            }  # fmt: skip
        finally:
            lab.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--intervals", default="1,0.1")
    ap.add_argument("--modes", default="crash,graceful")
    ap.add_argument("--impls", default="ipvsmgr,keepalived")
    ap.add_argument("--json", help="write every run here")
    args = ap.parse_args()
    impls = args.impls.split(",")
    if "keepalived" in impls and keepalived() is None:
        raise SystemExit("keepalived is not installed (apt-get install keepalived)")
    runs: list[dict[str, Any]] = []
    for interval in (float(x) for x in args.intervals.split(",")):
        for mode in args.modes.split(","):
            for impl in impls:
                for i in range(args.runs):
                    r = one_run(impl, interval, mode)
                    runs.append(r)
                    out = "no reply after" if r["outage_s"] is None else f"{1000 * r['outage_s']:.0f} ms"
                    flag = " TWO MASTERS" if r["two_masters"] else ""
                    print(f"{impl:10} {interval:g}s {mode:8} run {i + 1}: outage {out}{flag}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    print()
    print("| advert | event | ipvsmgr median / max | keepalived median / max | two masters |")
    print("|---|---|---|---|---|")
    for interval in (float(x) for x in args.intervals.split(",")):
        for mode in args.modes.split(","):
            cells = []
            for impl in ("ipvsmgr", "keepalived"):
                xs = [
                    r["outage_s"]
                    for r in runs
                    if (r["impl"], r["interval"], r["mode"]) == (impl, interval, mode)
                ]
                ok = [x for x in xs if x is not None]
                if not xs:
                    cells.append("-")
                elif len(ok) < len(xs):
                    cells.append(f"{len(xs) - len(ok)} of {len(xs)} never recovered")
                else:
                    cells.append(f"{1000 * statistics.median(ok):.0f} / {1000 * max(ok):.0f} ms")
            two = sum(r["two_masters"] for r in runs if (r["interval"], r["mode"]) == (interval, mode))
            print(f"| {interval:g} s | {mode} | {cells[0]} | {cells[1]} | {two} |")
    leftover = [ns for ns in sh("ip", "netns", "list").split() if ns.startswith("vr-")]
    if leftover:
        print("left over namespaces:", leftover, file=sys.stderr)


if __name__ == "__main__":
    main()
