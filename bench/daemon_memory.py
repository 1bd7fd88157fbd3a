"""Benchmark: resident memory of the daemon with 1,000 services x 10 reals and a
TCP health check on every real, against keepalived with the same table.

    python -m bench.daemon_memory [--services 1000] [--reals 10] [--interval 30] [--settle 60]

Boots the test VM (IPVS), and inside it, for each tool in turn on an empty
table: starts the daemon, waits until its table is in the kernel (ipvsadm
counts the services and reals), lets the checks run for --settle seconds,
then reads VmRSS, VmHWM and PSS (smaps_rollup: shared pages split between
the processes that map them) of every process of the daemon from /proc. The
reals (198.19.x.y, bench/gen.py) sit behind a veth in a namespace where a
local route for the whole /16 and one listener on port 8000 accept every
check (all reals up, the steady state of a healthy site).

ipvsmgr: `ipvsmgr run` (metrics and control socket on, as a service runs).
keepalived: `keepalived -n` (parent, checker and VRRP processes), the same
virtual_server / real_server blocks with TCP_CHECK, delay_loop = --interval.
Both run one VRRP instance too (on a dummy interface, advert 1 s), so both
trees are complete: ipvsmgr's daemon and its VRRP process, keepalived's
parent, checker and VRRP processes.
Targets: issue 5, ipvsmgr RSS <= 60 MB (one process then); issue 15, the
total PSS of all of ipvsmgr's processes <= 70 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gen import config, real, real_port, vip  # noqa: E402

PY = sys.executable
TARGET_MB = 60
PSS_TARGET_MB = 70
VRRP_YAML = """\
vrrp:
  instances:
    - {name: mem, interface: mem1, vrid: 77, priority: 150, advert_interval: 1s,
       virtual_addresses: [198.18.77.100/24]}
"""
VRRP_KEEPALIVED = """\
vrrp_instance mem {
  state BACKUP
  interface mem1
  virtual_router_id 77
  priority 150
  advert_int 1
  virtual_ipaddress {
    198.18.77.100/24
  }
}
"""


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def pss_by_kind(pid: int) -> dict[str, float]:
    """PSS in MiB by mapping: the brk heap (main malloc arena), other anonymous
    memory (pymalloc arenas, thread malloc arenas, big buffers), thread stacks,
    and files (the interpreter, libraries, extension modules)."""
    kinds: dict[str, float] = {}
    kind = "anon"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            name = head[5] if len(head) > 5 else ""
            kind = (
                "heap"
                if name == "[heap]"
                else "stack"
                if name.startswith("[stack")
                else ("file" if name.startswith("/") else "anon")
            )
        elif line.startswith("Pss:"):
            kinds[kind] = kinds.get(kind, 0.0) + int(head[1]) / 1024
    return {k: round(v, 1) for k, v in sorted(kinds.items())}


def sh(*argv: str, check: bool = True) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {p.stderr}")
    return p.stdout


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def tree(pid: int) -> list[int]:
    out = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        out += tree(int(child))
    return out


def table_size() -> tuple[int, int]:
    lines = sh("ipvsadm", "-Sn").splitlines()
    return sum(1 for x in lines if x.startswith("-A")), sum(1 for x in lines if x.startswith("-a"))


def setup_reals() -> None:
    sh("ip", "netns", "add", "memrs")
    sh("ip", "link", "add", "mem0", "type", "veth", "peer", "name", "eth0", "netns", "memrs")
    sh("ip", "addr", "add", "198.18.255.1/30", "dev", "mem0")
    sh("ip", "link", "set", "mem0", "up")
    sh("ip", "-n", "memrs", "addr", "add", "198.18.255.2/30", "dev", "eth0")
    sh("ip", "-n", "memrs", "link", "set", "eth0", "up")
    sh("ip", "-n", "memrs", "link", "set", "lo", "up")
    sh("ip", "-n", "memrs", "route", "add", "local", "198.19.0.0/16", "dev", "lo")
    sh("ip", "-n", "memrs", "route", "add", "default", "via", "198.18.255.1")
    sh("ip", "route", "add", "198.19.0.0/16", "via", "198.18.255.2")


def listen_for_reals() -> None:
    """One socket on 0.0.0.0:8000 in the reals' namespace answers all 10,000 addresses."""
    import socket
    import threading

    from ipvsmgr.lab import enter

    ready = threading.Event()

    def body() -> None:
        enter("memrs")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 8000))
        s.listen(4096)
        ready.set()
        while True:
            conn, _ = s.accept()
            conn.close()

    threading.Thread(target=body, daemon=True).start()
    ready.wait(10)


def keepalived_conf(services: int, reals: int, interval: int) -> str:
    out = ["global_defs {", "  router_id membench", "}"]
    for i in range(services):
        out.append(f"virtual_server {vip(i)} 80 {{\n  delay_loop {interval}")
        out.append("  lb_algo wrr\n  lb_kind NAT\n  protocol TCP")
        for j in range(reals):
            n = i * reals + j
            out.append(
                f"  real_server {real(n)} {real_port(n)} {{\n    weight 1\n    inhibit_on_failure\n"
                "    TCP_CHECK {\n      connect_timeout 2\n    }\n  }"
            )
        out.append("}")
    return "\n".join(out) + "\n"


def measure(
    argv: list[str], services: int, reals: int, settle: float, work: Path, name: str
) -> dict[str, object]:
    sh("ipvsadm", "-C")
    log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while table_size() != (services, services * reals):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {(work / f'{name}.log').read_text()[-3000:]}")
            if time.monotonic() - start > 1800:
                raise RuntimeError(f"{name}: table not complete after 30 min: {table_size()}")
            time.sleep(1.0)
        loaded = time.monotonic() - start
        time.sleep(settle)
        pids = tree(proc.pid)
        per: dict[str, dict[str, Any]] = {
            str(p): {
                "rss_mib": status_kib(p, "VmRSS") / 1024,
                "hwm_mib": status_kib(p, "VmHWM") / 1024,
                "pss_mib": pss_kib(p) / 1024,
                "pss_by_kind": pss_by_kind(p),
                "threads": status_kib(p, "Threads"),
            }
            for p in pids
        }
        return {
            "tool": name,
            "loaded_s": loaded,
            "processes": per,
            "rss_mib": sum(v["rss_mib"] for v in per.values()),
            "hwm_mib": sum(v["hwm_mib"] for v in per.values()),
            "pss_mib": sum(v["pss_mib"] for v in per.values()),
        }
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def inside(services: int, reals: int, interval: int, settle: float) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="membench-"))
    setup_reals()
    listen_for_reals()
    sh("ip", "link", "add", "mem1", "type", "dummy")
    sh("ip", "addr", "add", "198.18.77.1/24", "dev", "mem1")
    sh("ip", "link", "set", "mem1", "up")
    try:
        cfg = (
            config(services, reals).replace(
                "    scheduler: wrr\n",
                f"    scheduler: wrr\n    health_check: {{type: tcp, interval: {interval}s, timeout: 2s}}\n",
            )
            + VRRP_YAML
        )
        (work / "lb.yaml").write_text(cfg)
        argv = [
            PY, "-m", "ipvsmgr", "run", "-c", str(work / "lb.yaml"), "--state-dir", str(work / "state"),
            "--socket", str(work / "ctl.sock"), "--metrics", "127.0.0.1:19474",
        ]  # fmt: skip
        runs = [measure(argv, services, reals, settle, work, "ipvsmgr")]
        exe = "/usr/sbin/keepalived"
        if os.path.exists(exe):
            (work / "k.conf").write_text(keepalived_conf(services, reals, interval) + VRRP_KEEPALIVED)
            kargv = [
                exe, "-n", "-l", "-G", "-f", str(work / "k.conf"),
                "-p", str(work / "k.pid"), "-c", str(work / "c.pid"), "-r", str(work / "v.pid"),
            ]  # fmt: skip
            runs.append(measure(kargv, services, reals, settle, work, "keepalived"))
        return {"services": services, "reals": reals, "interval": interval, "settle": settle, "runs": runs}
    finally:
        sh("ipvsadm", "-C", check=False)
        sh("ip", "route", "del", "198.19.0.0/16", check=False)
        sh("ip", "link", "del", "mem0", check=False)
        sh("ip", "link", "del", "mem1", check=False)
        sh("ip", "netns", "del", "memrs", check=False)


def report(r: dict[str, object]) -> str:
    lines = [
        f"{r['services']} services x {r['reals']} reals, TCP check on every real every {r['interval']} s, "
        f"measured {r['settle']} s after the table was complete"
    ]
    runs = r["runs"]
    assert isinstance(runs, list)
    for run in runs:
        procs = ", ".join(f"{v['rss_mib']:.1f}/{v['pss_mib']:.1f}" for v in run["processes"].values())
        kinds = "; ".join(f"{v['pss_by_kind']} {v['threads']} threads" for v in run["processes"].values())
        lines.append(
            f"  {run['tool']:<10} PSS {run['pss_mib']:6.1f} MiB, RSS {run['rss_mib']:6.1f} MiB "
            f"(processes RSS/PSS: {procs}); peak RSS {run['hwm_mib']:6.1f} MiB; "
            f"table complete after {run['loaded_s']:.0f} s\n    PSS by mapping (MiB): {kinds}"
        )
    ours = runs[0]["pss_mib"] * 1.048576  # MiB -> MB
    lines.append(
        f"  target: ipvsmgr PSS <= {PSS_TARGET_MB} MB: {'met' if ours <= PSS_TARGET_MB else 'NOT met'}"
    )
    if len(runs) > 1:
        lines.append(f"  ratio ipvsmgr / keepalived (PSS): {runs[0]['pss_mib'] / runs[1]['pss_mib']:.1f}x")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--reals", type=int, default=10)
    ap.add_argument("--interval", type=int, default=30, help="seconds between checks of one real")
    ap.add_argument("--settle", type=float, default=60.0, help="seconds of checking before the reading")
    ap.add_argument("--json", help="also write the raw figures here")
    args = ap.parse_args()
    if os.environ.get("IPVSMGR_IN_VM") == "1":
        print(json.dumps(inside(args.services, args.reals, args.interval, args.settle)))
        return
    from bench.vmrun import run_module_in_vm

    argv = ["--services", str(args.services), "--reals", str(args.reals)]
    argv += ["--interval", str(args.interval), "--settle", str(args.settle)]
    r = run_module_in_vm("bench.daemon_memory", argv, timeout=7200)
    print(report(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
