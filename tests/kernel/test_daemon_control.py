"""The running daemon as an operator drives it, in the VM with real IPVS:
`ipvsmgr status`, drain/undrain (existing connections go on, new ones go
elsewhere, kept across a kill -9 restart), disable/enable, the Prometheus
endpoint against `ipvsadm --stats`, and connection sync following VRRP."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ipvsmgr import control
from tests.kernel.helpers import Lab, connect, ipvsadm, sh
from tests.kernel.test_health import wait_for, weights
from tests.netns.lab import in_netns

# A port of its own: IPVS keeps a deleted real with connections in its trash
# and hands it back (connection counts included) to whoever adds the same
# service and real next, which would be another test.
REALS = ("198.18.2.2", "198.18.2.3", "198.18.2.4")
VIP, VPORT = "198.18.0.10", 8181
CONFIG = f"""\
virtual_servers:
  - name: web
    address: {VIP}
    port: {VPORT}
    scheduler: rr
    health_check: {{type: tcp, interval: 0.5s, timeout: 0.4s, rise: 1, fall: 2, jitter: 0}}
    reals:
""" + "".join(f"      - {{address: {a}, port: 8080, weight: 5}}\n" for a in REALS)
CLIENT = "198.18.3.2"
METRICS = "127.0.0.1:19474"


class Echo:
    """An echo server on addr:8080 in the real-server namespace that counts its connections."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.accepted = 0  # from the client (the health checks connect too)

        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, 8080))
            s.listen(128)
            return s

        self.sock = in_netns("rs", make)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            if peer[0] == CLIENT:
                self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # health checks close with a reset
            while data := conn.recv(4096):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


def per_real(column: int, *args: str) -> dict[str, int]:
    """One numeric column of `ipvsadm -Ln ARGS` per real ADDRESS:PORT."""
    out = {}
    for line in ipvsadm("-Ln", *args).splitlines():
        parts = line.split()
        if line.strip().startswith("->") and parts[1][0].isdigit():
            out[parts[1]] = int(parts[column])
    return out


def active() -> dict[str, int]:
    return per_real(4)


def echo_ok(c: socket.socket, data: bytes = b"still here") -> bool:
    c.sendall(data)
    return c.recv(100) == data


def status(lab: Lab) -> dict:  # type: ignore[type-arg]
    """What `ipvsmgr status --json` prints, asked on the control socket directly: tests poll it in
    loops, and a CLI process a poll costs seconds in the TCG VM (test_daemon_control's own tests
    run the CLI itself)."""
    try:
        return control.call(lab.socket, "status")  # type: ignore[no-any-return]
    except control.ControlError as e:
        logs = "".join(p.read_text()[-3000:] for p in lab.work.glob("*.log"))
        raise AssertionError(f"status: {e}\n{logs}") from None


def serving(lab: Lab, pid: int) -> bool:
    try:
        return bool(control.call(lab.socket, "status", timeout=10)["daemon"]["pid"] == pid)
    except control.ControlError:
        return False


def test_status_drain_disable_and_metrics(ipvs: Lab, nat_lab: None) -> None:
    cfg = ipvs.write("lb.yaml", CONFIG)
    log = Path(ipvs.work / "daemon.log")
    servers = {a: Echo(a) for a in REALS}
    daemon = ipvs.daemon(cfg, log, "--metrics", METRICS)
    try:
        wait_for(lambda: list(weights().values()) == [5, 5, 5], 90)
        wait_for(lambda: Path(ipvs.socket).exists(), 30)
        st = json.loads(ipvs.ctl("status", "--json").stdout)  # the CLI's JSON is the socket's answer
        assert st["virtual_servers"] == status(ipvs)["virtual_servers"]
        reals = st["virtual_servers"][0]["reals"]
        assert [(r["address"], r["weight"], r["health"]) for r in reals] == [
            (f"{a}:8080", 5, "up") for a in REALS
        ]
        text = ipvs.ctl("status").stdout
        assert f"web  tcp {VIP}:{VPORT}  rr" in text and "5/5" in text

        # A long-lived connection, then drain the real that has it.
        c = connect("cl", VIP, VPORT)
        assert echo_ok(c)
        wait_for(lambda: sum(active().values()) == 1, 5)
        held = next(k for k, v in active().items() if v == 1)
        r = ipvs.ctl("drain", "web", held)
        assert r.returncode == 0 and r.stdout.strip() == f"{held} of web: drained", r.stderr
        wait_for(lambda: weights()[held] == 0, 5)
        assert echo_ok(c)  # the existing connection goes on
        before = servers[held.split(":")[0]].accepted
        for _ in range(30):
            short = connect("cl", VIP, VPORT)
            assert echo_ok(short, b"x")
            short.close()
        assert servers[held.split(":")[0]].accepted == before  # no new connection reached it
        assert echo_ok(c)
        assert [x["drained"] for x in status(ipvs)["virtual_servers"][0]["reals"]] == [
            f"{a}:8080" == held for a in REALS
        ]

        # kill -9 and start again: the drain is still there, the connection too.
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(30)
        daemon = ipvs.daemon(cfg, log, "--metrics", METRICS, mode="a")
        wait_for(lambda: serving(ipvs, daemon.pid), 60)
        time.sleep(2.0)
        assert weights()[held] == 0 and echo_ok(c)
        ipvs.ctl("undrain", "web", held)
        wait_for(lambda: weights()[held] == 5, 5)

        assert ipvs.ctl("disable", "web").returncode == 0
        wait_for(lambda: list(weights().values()) == [0, 0, 0], 5)
        assert echo_ok(c)
        assert ipvs.ctl("enable", "web").returncode == 0
        wait_for(lambda: list(weights().values()) == [5, 5, 5], 5)

        # Wrong names: a clear error listing the valid ones, nothing changes.
        bad = ipvs.ctl("drain", "web", "198.18.2.99")
        assert (
            bad.returncode == 1 and "reals: 198.18.2.2:8080, 198.18.2.3:8080, 198.18.2.4:8080" in bad.stderr
        )

        # Metrics: parsed with prometheus_client; the counters are ipvsadm's.
        with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=30) as resp:
            body = resp.read().decode()
        conns = per_real(2, "--stats", "--exact")
        got: dict[tuple[str, str], float] = {}
        for fam in text_string_to_metric_families(body):
            for s in fam.samples:
                if "real" in s.labels:
                    got[(s.name, s.labels["real"])] = s.value
        for real, n in conns.items():
            assert got[("ipvsmgr_real_connections_total", real)] == n, (real, n, body)
            assert got[("ipvsmgr_real_weight", real)] == weights()[real]
            assert got[("ipvsmgr_real_up", real)] == 1
        assert sum(conns.values()) >= 31
        c.close()
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        for s in servers.values():
            s.close()
    assert code == 0, log.read_text()[-3000:]


SYNC = """\
ipvs:
  connection_sync: {interface: vrrp0, sync_id: 7}
vrrp:
  instances:
    - name: edge
      interface: vrrp0
      vrid: 51
      priority: 150
      advert_interval: 100ms
      virtual_addresses: [198.18.9.100/24]
"""


def daemons() -> str:
    return ipvsadm("-L", "--daemon")


def test_connection_sync_follows_the_vrrp_role(ipvs: Lab, nat_lab: None) -> None:
    sh("ip", "link", "add", "vrrp0", "type", "dummy")
    sh("ip", "addr", "add", "198.18.9.1/24", "dev", "vrrp0")
    sh("ip", "link", "set", "vrrp0", "up")
    cfg = ipvs.write("lb.yaml", CONFIG + SYNC)
    log = Path(ipvs.work / "sync.log")
    servers = {a: Echo(a) for a in REALS}
    daemon = ipvs.daemon(cfg, log)
    try:
        # No peer: master after its master-down interval, and then the sync master runs.
        wait_for(lambda: "master sync daemon" in daemons(), 60)
        assert "syncid=7" in daemons() and "backup sync daemon" not in daemons()
        assert "start sync backup on vrrp0" in log.read_text()  # before the instance was master
        # Released: backup (priority 1) -> the sync backup; nobody takes over, so master again
        # 0.4 s later. That window is too short to catch with ipvsadm polls now that VRRP's
        # timers run in a process of their own: the daemon's log shows the two switches.
        before = len(log.read_text())
        ipvs.ctl("vrrp", "release", "edge")
        wait_for(lambda: "start sync backup on vrrp0" in log.read_text()[before:], 10)
        wait_for(lambda: "master sync daemon" in daemons(), 10)
        st = status(ipvs)["connection_sync"]
        assert st["follow"] == "edge" and st["role"] == "master"
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        for s in servers.values():
            s.close()
        sh("ip", "link", "del", "vrrp0", check=False)
    assert code == 0, log.read_text()[-3000:]
    assert "sync daemon" not in daemons()  # stopped with the daemon


def test_remove_on_stop_deletes_only_our_services(ipvs: Lab, nat_lab: None) -> None:
    ipvsadm("-A", "-t", "198.18.0.77:80", "-s", "rr")  # somebody else's
    cfg = ipvs.write("lb.yaml", CONFIG)
    log = Path(ipvs.work / "stop.log")
    servers = {a: Echo(a) for a in REALS}
    daemon = ipvs.daemon(cfg, log, "--remove-on-stop")
    try:
        wait_for(lambda: list(weights().values()) == [5, 5, 5], 90)
        c = connect("cl", VIP, VPORT)
        assert echo_ok(c)  # a connection in flight does not hold the removal up
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        for s in servers.values():
            s.close()
    assert code == 0, log.read_text()[-3000:]
    table = ipvsadm("-Ln")
    assert f"{VIP}:{VPORT}" not in table and "198.18.0.77:80" in table
    assert "stopped; IPVS services removed" in log.read_text()


def test_nat_traffic_follows_the_weights(ipvs: Lab, nat_lab: None) -> None:
    """NAT (masquerading): 1,000 client connections through the VIP land on the
    reals in the proportion of their wrr weights, counted at the reals."""
    weights_cfg = {"198.18.2.2": 1, "198.18.2.3": 2, "198.18.2.4": 3}
    cfg = ipvs.write(
        "nat.yaml",
        CONFIG.replace("scheduler: rr", "scheduler: wrr").replace(
            "".join(f"      - {{address: {a}, port: 8080, weight: 5}}\n" for a in REALS),
            "".join(f"      - {{address: {a}, port: 8080, weight: {w}}}\n" for a, w in weights_cfg.items()),
        ),
    )
    log = Path(ipvs.work / "nat.log")
    servers = {a: Echo(a) for a in REALS}
    daemon = ipvs.daemon(cfg, log)
    try:
        wait_for(lambda: weights() == {f"{a}:8080": w for a, w in weights_cfg.items()}, 90)
        for _ in range(1000):
            c = connect("cl", VIP, VPORT)
            assert echo_ok(c, b"n")
            c.close()
        got = {a: s.accepted for a, s in servers.items()}
        for a, w in weights_cfg.items():
            assert abs(got[a] - 1000 * w / 6) <= 3, got
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        for s in servers.values():
            s.close()
    assert code == 0, log.read_text()[-3000:]


def test_gre_tunnel_traffic_follows_the_weights(ipvs: Lab, nat_lab: None) -> None:
    """IPVS GRE tunnelling: the balancer wraps each packet in GRE to the real,
    the real (its fallback gre0 device, the VIP on lo) answers the client
    directly. 600 echo round trips all succeed; IPVS spreads the connections
    1:2:3 (its per-real counters, read with ipvsadm: 67 / 133 / 200 in a run)."""
    sh("modprobe", "ip_gre")
    ns = ("ip", "netns", "exec", "rs")
    sh("ip", "-n", "rs", "link", "set", "gre0", "up")  # each namespace gets a fallback gre0
    sh("ip", "-n", "rs", "addr", "add", f"{VIP}/32", "dev", "lo")
    for conf in ("all", "gre0", "rs0"):
        sh(*ns, "sysctl", "-qw", f"net.ipv4.conf.{conf}.rp_filter=0")
    # The replies come back through the balancer with the VIP, one of its own
    # addresses, as their source: it must accept and forward them.
    sh("sysctl", "-qw", "net.ipv4.conf.lb-rs.accept_local=1", "net.ipv4.conf.lb-rs.rp_filter=0")
    weights_cfg = {"198.18.2.2": 1, "198.18.2.3": 2, "198.18.2.4": 3}
    reals = "".join(
        f"      - {{address: {a}, weight: {w}, forwarding: tunnel, tunnel: {{type: gre}}}}\n"
        for a, w in weights_cfg.items()
    )
    cfg = ipvs.write(
        "gre.yaml",
        f"""\
virtual_servers:
  - name: tun
    address: {VIP}
    port: {VPORT + 1}
    scheduler: wrr
    health_check: {{type: tcp, interval: 0.5s, timeout: 0.4s, rise: 1, fall: 2, jitter: 0}}
    reals:
{reals}""",
    )
    log = Path(ipvs.work / "gre.log")
    servers: list[socket.socket] = []

    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", VPORT + 1))  # the VIP (through GRE) and the reals' own addresses (checks)
        s.listen(256)
        return s

    listener = in_netns("rs", make)
    servers.append(listener)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=Echo._echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    daemon = ipvs.daemon(cfg, log)
    try:
        want = {f"{a}:{VPORT + 1}": w for a, w in weights_cfg.items()}
        wait_for(lambda: weights() == want, 90)
        assert ipvsadm("-Ln").count("Tunnel") == 3
        for _ in range(600):
            c = connect("cl", VIP, VPORT + 1)
            assert echo_ok(c, b"g")
            c.close()

        def conns() -> dict[str, int]:
            return {r.split(":")[0]: n for r, n in per_real(2, "--stats", "--exact").items()}

        # The kernel folds its per-CPU counters into what ipvsadm --stats reads only
        # on its estimator's 2 s tick: reading at once missed the last connections
        # (runs counted 147 to 452 of 600), so wait for the tick.
        wait_for(lambda: sum(conns().values()) >= 600, 10)
        total = sum(conns().values())
        assert total == 600, conns()
        for a, w in weights_cfg.items():
            assert conns()[a] == total * w // 6, conns()
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        listener.close()
        sh("ip", "-n", "rs", "addr", "del", f"{VIP}/32", "dev", "lo", check=False)
    assert code == 0, log.read_text()[-3000:]
