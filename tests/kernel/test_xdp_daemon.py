"""The XDP guard as the daemon runs it, in the VM with IPVS behind it: status
and counters against `ip link`/bpftool, run-time block and allow, a kill -9
restart that leaves the program attached and adopts it, and a spoofed SYN
flood against IPVS with the guard on and off (the connection table tells)."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

from ipvsmgr import control
from tests.kernel.helpers import Lab, ipvsadm, sh
from tests.kernel.test_daemon_control import Echo, serving
from tests.kernel.test_health import wait_for, weights
from tests.netns.lab import in_netns

REALS = ("198.18.2.5", "198.18.2.6")
VIP, VPORT = "198.18.0.10", 8383
PIN = "/sys/fs/bpf/ipvsmgr-vmtest"
SERVERS = f"""\
virtual_servers:
  - name: web
    address: {VIP}
    port: {VPORT}
    scheduler: rr
    health_check: {{type: tcp, interval: 0.5s, timeout: 0.4s, rise: 1, fall: 2, jitter: 0}}
    reals:
""" + "".join(f"      - {{address: {a}, port: 8080}}\n" for a in REALS)
GUARD = f"""\
xdp:
  interfaces: [lb-cl]
  mode: generic
  pin_path: {PIN}
  attack: {{syn_rate: 200, hold: 20s}}
  blocklist: [198.18.3.99/32]
"""


def xdp_id(ifname: str = "lb-cl") -> int | None:
    xdp = json.loads(sh("ip", "-j", "link", "show", ifname))[0].get("xdp")
    return int(xdp["prog"]["id"]) if xdp else None


def xstatus(lab: Lab) -> dict[str, Any]:
    """What `ipvsmgr xdp status --json` prints, from the socket directly (polled in loops)."""
    try:
        return control.call(lab.socket, "xdp_status", timeout=10)  # type: ignore[no-any-return]
    except control.ControlError as e:
        raise AssertionError(str(e)) from None


def packets(st: dict[str, Any], reason: str) -> int:
    return int(st["counters"][reason]["packets"])


def try_connect(timeout: float = 1.5) -> float | None:
    def body() -> float | None:
        with socket.socket() as s:
            s.settimeout(timeout)
            t = time.monotonic()
            try:
                s.connect((VIP, VPORT))
            except OSError:
                return None
            return time.monotonic() - t

    return in_netns("cl", body)


def send_udp(n: int) -> None:
    def body() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(n):
                s.sendto(b"x", (VIP, 9))

    in_netns("cl", body)


def flood_entries() -> int:
    """IPVS connection entries in SYN_RECV from anyone but the client: the flood's
    (`ipvsadm -Lnc`; the service's Conns counter lags, 6.1 sums it every 2 s)."""
    return sum(
        1
        for line in ipvsadm("-Lnc").splitlines()
        if "SYN_RECV" in line and f"{VIP}:{VPORT}" in line and "198.18.3.2:" not in line
    )


def flood_and_connect(count: int, rate: int, legit: int) -> dict[str, Any]:
    """A bounded spoofed flood from cl while the client connects; IPVS entries it caused."""
    from bench.xdp_flood import start_flood

    cmac = json.loads(sh("ip", "-j", "-n", "cl", "link", "show", "cl0"))[0]["address"]
    lmac = json.loads(sh("ip", "-j", "link", "show", "lb-cl"))[0]["address"]
    proc = start_flood("cl", "cl0", cmac, lmac, VIP, VPORT, count, rate, 512)
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    before = flood_entries()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    time.sleep(1.0)
    times = [try_connect(3.0) for _ in range(legit)]
    running = proc.poll() is None
    proc.stdin.close()
    proc.terminate()
    out = proc.stdout.read().strip().splitlines()
    proc.wait(30)
    sent = json.loads(out[-1])["sent"]
    ok = sorted(t for t in times if t is not None)
    return {
        "sent": sent,
        "flood_running_at_end": running,
        "ipvs_entries": flood_entries() - before,
        "success": len(ok) / legit,
        "p50_ms": 1000 * ok[len(ok) // 2] if ok else None,
        "max_ms": 1000 * ok[-1] if ok else None,
    }


def test_daemon_guard_status_lists_restart_and_flood(ipvs: Lab, nat_lab: None) -> None:
    sh("make", "-s", "-C", str(Path(__file__).resolve().parents[2] / "bpf_offload"))
    cfg = ipvs.write("lb.yaml", SERVERS + GUARD)
    log = Path(ipvs.work / "daemon.log")
    servers = [Echo(a) for a in REALS]
    daemon = ipvs.daemon(cfg, log)
    try:
        wait_for(lambda: list(weights().values()) == [1, 1], 120)
        wait_for(lambda: Path(ipvs.socket).exists(), 30)
        st = json.loads(ipvs.ctl("xdp", "status", "--json").stdout)  # the CLI prints the socket's answer
        assert st.keys() == xstatus(ipvs).keys()
        assert st["state"] == "active", st
        [a] = st["interfaces"]
        assert (a["name"], a["mode"]) == ("lb-cl", "generic")
        prog = a["program_id"]
        assert xdp_id() == prog  # ip link's view
        shown = json.loads(sh("bpftool", "-j", "prog", "show", "id", str(prog)))
        assert shown["name"] == "xdp_guard" and shown["type"] == "xdp"
        assert "XDP guard: program" in ipvs.ctl("status").stdout

        # Through the guard, IPVS and the reals; a port with no service is dropped.
        assert all(try_connect() is not None for _ in range(10))
        send_udp(25)
        time.sleep(0.5)
        st = xstatus(ipvs)
        assert packets(st, "syn") >= 10 and packets(st, "no_service") == 25
        assert any(d["reason"] == "no_service" and d["dport"] == 9 for d in st["drop_samples"])

        # Run-time blocklist: the client is cut off, then let back in; kept on disk.
        r = ipvs.ctl("xdp", "block", "198.18.3.0/24")
        assert r.returncode == 0 and "added to the run-time blocklist" in r.stdout, r.stderr
        assert try_connect() is None
        assert packets(xstatus(ipvs), "blocklist") >= 1
        bad = ipvs.ctl("xdp", "block", "198.18.3.1/24")
        assert bad.returncode == 1 and "the prefix is 198.18.3.0/24" in bad.stderr
        overrides = json.loads((Path(ipvs.state_dir) / "overrides.json").read_text())
        assert overrides["xdp_block"] == [{"prefix": "198.18.3.0/24", "action": "drop"}]
        assert ipvs.ctl("xdp", "block", "198.18.3.0/24", "--remove").returncode == 0
        assert try_connect() is not None

        # kill -9: the program stays attached and keeps filtering; a new daemon adopts it.
        counted = packets(xstatus(ipvs), "no_service")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(30)
        assert xdp_id() == prog
        send_udp(5)  # judged while no daemon runs
        daemon = ipvs.daemon(cfg, log, mode="a")
        wait_for(lambda: serving(ipvs, daemon.pid), 90)
        st = xstatus(ipvs)
        assert st["interfaces"][0]["adopted"] and st["interfaces"][0]["program_id"] == prog == xdp_id()
        assert packets(st, "no_service") == counted + 5

        # A spoofed SYN flood against IPVS: with the guard, IPVS never sees it.
        # The sources are routed back towards the client side, as an edge
        # balancer's default route would (else reverse-path filtering, if an
        # earlier test left it on, drops them before IPVS without the guard).
        sh("ip", "route", "add", "198.18.0.0/15", "via", "198.18.3.2")
        on = flood_and_connect(count=60_000, rate=4000, legit=50)
        st = xstatus(ipvs)
        assert on["flood_running_at_end"] and on["success"] >= 0.99, on
        assert packets(st, "retransmit_wait") >= 0.9 * (on["sent"] - 400)  # the flood was held back
        assert any(v["address"] == VIP and v["attacks"] >= 1 for v in st["vips"])

        # Without the xdp: section (reload): detached, and the flood fills IPVS's table.
        ipvs.write("lb.yaml", SERVERS)
        assert ipvs.ctl("reload").returncode == 0
        wait_for(lambda: xdp_id() is None, 10)
        assert not Path(PIN).exists()
        off = flood_and_connect(count=60_000, rate=4000, legit=50)
        # an entry per spoofed SYN (less the 4-tuples the first flood left in SYN_RECV)
        assert off["ipvs_entries"] > 0.5 * off["sent"], off
        # per flood SYN, the guard let a tenth of that (or less) reach IPVS
        assert on["ipvs_entries"] / on["sent"] < 0.1 * off["ipvs_entries"] / off["sent"], (on, off)
        print(json.dumps({"guard_on": on, "guard_off": off}))
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(60)
        for s in servers:
            s.close()
        sh("ip", "link", "set", "lb-cl", "xdp", "off", check=False)
        sh("ip", "route", "del", "198.18.0.0/15", check=False)
        sh("rm", "-rf", PIN, check=False)
    assert code == 0, log.read_text()[-3000:]
