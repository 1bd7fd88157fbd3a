"""A fleet on one configuration in etcd, in the VM with real IPVS (issue 21): three daemons in
three namespaces (each its own IPVS table) follow one key; a new revision reaches all three; a
bad one is refused by all three, its problems and positions in their reports, and `ipvsmgr fleet
status` says so. Readers: `ipvsadm` in each namespace, etcd's keys."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.kernel.helpers import ROOT, Lab, sh
from tests.kernel.test_health import wait_for
from tests.netns.etcdlab import etcd

NODES = 3
PREFIX = "/ipvsmgr/fleet/"


def config(reals: int, port: int = 9000) -> str:
    rs = "".join(f"      - {{address: 198.18.9.{i + 1}, port: 8080}}\n" for i in range(reals))
    return f"virtual_servers:\n  - name: web\n    address: 198.18.0.10\n    port: {port}\n    reals:\n{rs}"


def table(i: int) -> list[str]:
    out = sh("ip", "netns", "exec", f"fl{i}", "ipvsadm", "-Sn")
    return sorted(line for line in out.splitlines() if line.strip())


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "ipvsmgr", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)  # fmt: skip


def test_three_nodes_follow_one_key_and_refuse_a_bad_revision_together(ipvs: Lab) -> None:
    work = ipvs.work
    daemons: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(NODES):
            sh("ip", "netns", "add", f"fl{i}")
            sh("ip", "link", "add", f"fl{i}h", "type", "veth", "peer", "name", "eth0", "netns", f"fl{i}")
            sh("ip", "addr", "add", f"198.18.7.{4 * i + 1}/30", "dev", f"fl{i}h")
            sh("ip", "link", "set", f"fl{i}h", "up")
            sh("ip", "-n", f"fl{i}", "addr", "add", f"198.18.7.{4 * i + 2}/30", "dev", "eth0")
            sh("ip", "-n", f"fl{i}", "link", "set", "eth0", "up")
            sh("ip", "-n", f"fl{i}", "link", "set", "lo", "up")
        with etcd(work, listen="0.0.0.0") as e:
            local = f"http://127.0.0.1:{e.port}"
            first = e.put(PREFIX + "config", config(1))
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            for i in range(NODES):
                argv = ["ip", "netns", "exec", f"fl{i}", sys.executable, "-m", "ipvsmgr", "run",
                        "-c", str(work / f"n{i}.yaml"), "--state-dir", str(work / f"s{i}"),
                        "--socket", str(work / f"c{i}.sock"), "--metrics", "off", "--resync", "2s",
                        "--fleet-etcd", f"http://198.18.7.{4 * i + 1}:{e.port}",
                        "--node", f"n{i}"]  # fmt: skip
                with (work / f"n{i}.log").open("w") as out:
                    daemons.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env))
            one = ["-A -t 198.18.0.10:9000 -s wlc", "-a -t 198.18.0.10:9000 -r 198.18.9.1:8080 -m -w 1"]
            wait_for(lambda: all(table(i) == one for i in range(NODES)), 120)

            def reports() -> dict[str, dict]:  # type: ignore[type-arg]
                r = cli("fleet", "status", "--json", "--fleet-etcd", local)
                assert r.returncode == 0, r.stderr
                return {n["node"]: n for n in json.loads(r.stdout)["nodes"]}

            wait_for(lambda: [r.get("applied") for r in reports().values()] == [first] * NODES, 30)

            # a new revision through `fleet push` (checked here first): every node runs it
            (work / "two.yaml").write_text(config(2))
            t = time.monotonic()
            r = cli("fleet", "push", str(work / "two.yaml"), "--fleet-etcd", local)
            assert r.returncode == 0, r.stderr
            second = int(r.stdout.rsplit(" ", 1)[1])
            two = sorted([*one, "-a -t 198.18.0.10:9000 -r 198.18.9.2:8080 -m -w 1"])
            took = wait_for(lambda: all(table(i) == two for i in range(NODES)), 60)
            print(
                json.dumps({"push_to_all_three_s": round(time.monotonic() - t, 2), "poll_s": round(took, 2)})
            )
            wait_for(lambda: [r.get("applied") for r in reports().values()] == [second] * NODES, 30)

            # push refuses a bad file here; put straight into etcd, each node refuses it
            (work / "bad.yaml").write_text(config(2, port=99999))
            r = cli("fleet", "push", str(work / "bad.yaml"), "--fleet-etcd", local)
            assert r.returncode == 1 and "99999 is above the maximum of 65535" in r.stderr, r
            bad = e.put(PREFIX + "config", config(2, port=99999))
            wait_for(lambda: [r.get("state") for r in reports().values()] == ["refused"] * NODES, 60)
            for rep in reports().values():
                assert rep["applied"] == second and rep["refused"] == bad, rep
                assert rep["problems"] == [
                    f"etcd:{PREFIX}config@{bad}:4:11: 99999 is above the maximum of 65535"
                ], rep
            assert all(table(i) == two for i in range(NODES))  # they run on what they ran
            text = cli("fleet", "status", "--fleet-etcd", local).stdout
            assert f"configuration revision {bad}; 3 node(s) reporting" in text, text
            assert text.count(f"REFUSED {bad}") == NODES, text
            st = cli("status", "--socket", str(work / "c0.sock")).stdout
            assert f"FLEET {PREFIX}config as n0: runs revision {second} (etcd ok)" in st, st
            assert f"REFUSED revision {bad}:" in st, st
            # a good revision after it: applied everywhere, the refusal cleared
            third = e.put(PREFIX + "config", config(1))
            wait_for(lambda: all(table(i) == one for i in range(NODES)), 60)
            wait_for(
                lambda: [(r["state"], r["applied"]) for r in reports().values()] == [("applied", third)] * 3,
                30,
            )
    finally:
        for d in daemons:
            d.send_signal(signal.SIGTERM)
        for d in daemons:
            try:
                d.wait(30)
            except subprocess.TimeoutExpired:
                d.kill()
        for i in range(NODES):
            print(
                f"--- n{i}:",
                (work / f"n{i}.log").read_text()[-1500:] if (work / f"n{i}.log").exists() else "",
            )
            sh("ip", "link", "del", f"fl{i}h", check=False)
            sh("ip", "netns", "del", f"fl{i}", check=False)
