"""CPU per health check, for each check type, as a ratio to the tcp check in the same run.

Two namespaces (tests/netns/lab.py). The servers of the checker tests run in
the server namespace, in this process: http and https (the same handler,
plain and with a certificate of a test CA), dns (UDP), udp echo, smtp,
grpc (its own process), and the kernel for icmp. The checks run in another
process entered into the client namespace (nsenter), so its CPU is the
checks' alone: getrusage of that process and its children (a script
check's process) over `--runs` checks of one type, 10 at a time, each
check's own coroutine as the daemon runs it. gRPC's core threads count too
(they are the process's).

    .venv/bin/python -m bench.health_cpu [--runs 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

CLIENT = r"""
import asyncio, json, resource, sys, time
from healthchecks.checkers.dns import DnsCheck
from healthchecks.checkers.grpc import GrpcCheck
from healthchecks.checkers.http import HttpCheck
from healthchecks.checkers.icmp import IcmpCheck
from healthchecks.checkers.script import ScriptCheck
from healthchecks.checkers.smtp import SmtpCheck
from healthchecks.checkers.tcp import TcpCheck
from healthchecks.checkers.tls import TlsCheck
from healthchecks.checkers.udp import UdpCheck
from healthchecks.result import Target

def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

async def measure(checker, target, runs):
    ok = 0
    async def one():
        nonlocal ok
        r = await checker.check(target, 2.0)
        ok += r.ok
    for _ in range(10):  # warm-up: imports, contexts, a kept channel
        await one()
    ok = 0
    c0, t0 = cpu(), time.monotonic()
    for i in range(0, runs, 10):
        await asyncio.gather(*(one() for _ in range(min(10, runs - i))))
    return {"cpu_s": cpu() - c0, "wall_s": time.monotonic() - t0, "ok": ok}

async def main():
    a = json.loads(sys.argv[1])
    server, runs = a["server"], a["runs"]
    kinds = {
        "tcp": (TcpCheck(), Target(server, 80)),
        "http": (HttpCheck(), Target(server, a["http"])),
        "http + body_regex": (HttpCheck(body_regex="ready"), Target(server, a["http"])),
        "https": (HttpCheck(tls=True, ca_file=a["ca"]), Target(server, a["https"])),
        "tls": (TlsCheck(ca_file=a["ca"]), Target(server, a["https"])),
        "dns": (DnsCheck("www.test", answer=["198.18.0.9"]), Target(server, 53)),
        "udp": (UdpCheck(b"ping", expect=b"ping"), Target(server, 7)),
        "icmp": (IcmpCheck(), Target(server)),
        "smtp": (SmtpCheck(), Target(server, 2525)),
        "grpc": (GrpcCheck(), Target(server, 50051)),
        "script": (ScriptCheck(argv=["/bin/true"]), Target(server, 80)),
    }
    out = {}
    for name, (checker, target) in kinds.items():
        out[name] = await measure(checker, target, runs if name != "script" else max(50, runs // 5))
    print(json.dumps(out))

asyncio.run(main())
"""


def run(runs: int) -> dict[str, Any]:
    from tests.netns.certs import CA
    from tests.netns.lab import SERVER4, make_lab
    from tests.netns.test_check_dns import DnsServer
    from tests.netns.test_check_grpc import SERVER as GRPC_SERVER
    from tests.netns.test_check_grpc import make_cert
    from tests.netns.test_check_http import Server, ok, respond
    from tests.netns.test_check_smtp import SmtpServers
    from tests.netns.test_check_udp import UdpServers

    lab = make_lab()
    work = Path(tempfile.mkdtemp(prefix="ipvsmgr-hcpu-"))
    closers: list[Any] = []
    try:
        closers.append(lab.closing_listener(SERVER4, 80))
        ca = CA(work)
        http = Server(lab, respond(ok(b"ready=1\n")))
        https = Server(lab, respond(ok(b"ready=1\n")), tls=ca.issue(ips=(SERVER4,)).server_context())
        servers = [http, https, DnsServer(lab), UdpServers(lab), SmtpServers(lab)]
        closers.extend(servers)
        cert, key = make_cert(work)
        script, ready = work / "health_server_grpc.py", work / "ready"
        script.write_text(GRPC_SERVER)
        lab.spawn([sys.executable, str(script), str(ready), str(cert), str(key)])
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert time.monotonic() < deadline, "the gRPC server did not start"
            time.sleep(0.05)
        args = {"server": SERVER4, "runs": runs, "http": http.port, "https": https.port, "ca": ca.ca_file}
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.run(
            ["nsenter", f"--net=/run/netns/{lab.client}", sys.executable, "-c", CLIENT, json.dumps(args)],
            capture_output=True, text=True, timeout=1800, env=env, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        got: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        for c in closers:
            c.close()
        lab.close()
    base = got["tcp"]["cpu_s"] / runs
    out: dict[str, Any] = {"runs": runs, "types": {}}
    for name, m in got.items():
        n = runs if name != "script" else max(50, runs // 5)
        per = m["cpu_s"] / n
        out["types"][name] = {"cpu_us_per_check": round(per * 1e6, 1), "x_tcp": round(per / base, 1),
                              "ok": m["ok"], "runs": n}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    a = ap.parse_args()
    r = run(a.runs)
    print(f"{'type':20} {'CPU µs/check':>13} {'x tcp':>7} {'ok':>10}")
    for name, m in r["types"].items():
        print(f"{name:20} {m['cpu_us_per_check']:>13} {m['x_tcp']:>7} {m['ok']:>5}/{m['runs']}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
