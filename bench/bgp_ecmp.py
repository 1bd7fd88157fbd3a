"""BGP scale-out figures in the VM: convergence seen at the router, Maglev disruption.

Runs on tests/kernel/bgplab.py's topology (BIRD 2 router, ipvsmgr nodes with
ExaBGP, IPVS mh + direct routing, reals that answer with their name):

- convergence: lba's view of every real fails (its check port closes) ->
  time until the router's kernel route has only lbb; the port opens again ->
  both; `drain-node` / `undrain-node` -> the same. Several runs each.
  Checks every 0.5 s, fall 2, rise 2: the bound is fall x interval + 1 s.
- disruption: 1,000 flows (source ports, mh-port) through lba with 10 reals;
  each real in turn is removed from the configuration, and the share of the
  *other* reals' flows that moved is counted (ideal 0%: the Maglev paper's
  point; IPVS's table has 251 slots, so a few percent move). The same flows
  through lbb must agree (consistency), and the mapping must come back
  exactly when the real returns (ipvsmgr restores the hashing order).

    .venv/bin/python -m bench.bgp_ecmp --json /tmp/bgp.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PORTS = range(20000, 21000)


def convergence(work: Path, runs: int) -> dict[str, Any]:
    from ipvsmgr.control import call
    from ipvsmgr.lab import wait
    from tests.kernel.bgplab import BgpLab

    out: dict[str, list[float]] = {
        "reals_fail": [],
        "reals_recover": [],
        "drain_node": [],
        "undrain_node": [],
    }
    with BgpLab(work, reals=3) as lab:
        lab.build()
        lab.start_bird()
        lab.start_lb("lba")
        lab.start_lb("lbb")
        wait(lambda: lab.next_hops() == lab.hops("lba", "lbb"), 300, step=0.2)
        time.sleep(3)
        for _ in range(runs):
            for name in lab.real_names:
                lab.health[(name, "lba")].stop()
            out["reals_fail"].append(wait(lambda: lab.next_hops() == lab.hops("lbb"), 30, step=0.01))
            for name in lab.real_names:
                lab.health[(name, "lba")].start()
            out["reals_recover"].append(
                wait(lambda: lab.next_hops() == lab.hops("lba", "lbb"), 30, step=0.01)
            )
            time.sleep(1)
            # the control socket itself, not the CLI: a Python start in the VM is 3 s
            t0 = time.monotonic()
            call(str(lab.socket("lba")), "drain_node")
            wait(lambda: lab.next_hops() == lab.hops("lbb"), 30, step=0.01)
            out["drain_node"].append(time.monotonic() - t0)
            t0 = time.monotonic()
            call(str(lab.socket("lba")), "undrain_node")
            wait(lambda: lab.next_hops() == lab.hops("lba", "lbb"), 30, step=0.01)
            out["undrain_node"].append(time.monotonic() - t0)
            time.sleep(1)
    return {k: [round(x, 3) for x in v] for k, v in out.items()}


def disruption(work: Path) -> dict[str, Any]:
    from ipvsmgr.lab import wait
    from tests.kernel.bgplab import CALM_CHECKS, FRONT, BgpLab

    rows: list[dict[str, Any]] = []
    with BgpLab(work, reals=10, checks=CALM_CHECKS) as lab:
        lab.build()
        lab.start_lb("lba")
        lab.start_lb("lbb")
        all_up = {f"{FRONT}.{11 + i}": 1 for i in range(10)}
        wait(lambda: lab.weights("lba") == all_up and lab.weights("lbb") == all_up, 300, step=0.2)
        base = lab.who("lba", PORTS)
        agree = sum(1 for p, r in lab.who("lbb", PORTS).items() if base[p] == r)
        for k, removed in enumerate(lab.real_names):
            rest = [n for n in lab.real_names if n != removed]
            lab.reload("lba", rest)
            gone = f"{FRONT}.{11 + k}"
            wait(lambda gone=gone: gone not in lab.weights("lba"), 60, step=0.2)  # type: ignore[misc]
            now = lab.who("lba", PORTS)
            others = [p for p in PORTS if base[p] != removed]
            moved = sum(1 for p in others if now[p] != base[p])
            errors = sum(1 for r in now.values() if r.startswith("error"))
            rows.append(
                {"removed": removed, "its_flows": len(PORTS) - len(others), "others": len(others),
                 "others_moved": moved, "others_moved_pct": round(100 * moved / len(others), 2),
                 "errors": errors}
            )  # fmt: skip
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            lab.reload("lba", lab.real_names)
            wait(lambda: lab.weights("lba") == all_up, 60, step=0.2)
        restored = lab.who("lba", PORTS)
        back = sum(1 for p in PORTS if restored[p] == base[p])
    pct: list[float] = [r["others_moved_pct"] for r in rows]
    return {
        "flows": len(PORTS), "consistency_lba_lbb": agree, "restored_mapping": back, "per_removal": rows,
        "others_moved_pct_mean": round(statistics.mean(pct), 2), "others_moved_pct_max": max(pct),
    }  # fmt: skip


def inside(runs: int, skip_disruption: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bgpbench-"))
    (work / "c").mkdir()
    (work / "d").mkdir()
    return {
        "convergence": convergence(work / "c", runs) if runs else {},
        "disruption": None if skip_disruption else disruption(work / "d"),
    }


def report(r: dict[str, Any]) -> str:
    lines = ["BGP scale-out (VM, BIRD 2 router, ExaBGP 4.2, IPVS mh + DR)"]
    for k, v in r["convergence"].items():
        lines.append(
            f"  {k:14s} median {statistics.median(v) * 1000:6.0f} ms  "
            f"max {max(v) * 1000:6.0f} ms  ({len(v)} runs)"
        )
    d = r["disruption"]
    if d is None:
        return "\n".join(lines)
    lines.append(
        f"  consistency: {d['consistency_lba_lbb']}/{d['flows']} flows on the same real through both nodes; "
        f"mapping restored after each real came back: {d['restored_mapping']}/{d['flows']}"
    )
    for row in d["per_removal"]:
        lines.append(
            f"  remove {row['removed']}: its {row['its_flows']} flows moved; "
            f"{row['others_moved']}/{row['others']} others moved ({row['others_moved_pct']}%), "
            f"errors {row['errors']}"
        )
    lines.append(f"  others moved: mean {d['others_moved_pct_mean']}%, max {d['others_moved_pct_max']}%")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="convergence runs of each event")
    ap.add_argument("--no-disruption", action="store_true", help="only the convergence runs")
    ap.add_argument("--json", help="also write the raw figures here")
    args = ap.parse_args()
    if os.environ.get("IPVSMGR_IN_VM") == "1":
        print(json.dumps(inside(args.runs, args.no_disruption)))
        return
    from bench.vmrun import run_module_in_vm

    argv = ["--runs", str(args.runs)] + (["--no-disruption"] if args.no_disruption else [])
    r = run_module_in_vm("bench.bgp_ecmp", argv, timeout=7200)
    print(report(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
