"""`ipvsmgr lab`: ipvsmgr at work, inside network namespaces this module builds.

    client 198.18.20.2 ─┐
    lb1 .11 (ipvsmgr) ──┤ one bridge   VIP 198.18.20.100: VRRP between lb1 and lb2,
    lb2 .12 (ipvsmgr) ──┤ (namespace    IPVS direct routing (DR) to the reals,
    rs1 .21  rs2 .22 ───┤  "sw")        IPVS connection sync lb1 <-> lb2
    rs3 .23 ────────────┘

The reals answer `GET` with their name and echo anything else, so the client
can count who served each request and keep a conversation open across a
failover. Everything is created under one tag and removed by close(), also
after an error. Needs root and a kernel with IPVS (the test suite runs this
inside its VM: tests/kernel/test_e2e.py). The same builder backs the
end-to-end tests, so what the lab shows is what the tests assert.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
NET = "198.18.20"
VIP = f"{NET}.100"
PORT = 80
HOSTS = {"client": 2, "lb1": 11, "lb2": 12, "rs1": 21, "rs2": 22, "rs3": 23}
WEIGHTS = {"rs1": 1, "rs2": 2, "rs3": 3}
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*argv: str, check: bool = True) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {p.stderr.strip()}")
    return p.stdout


def enter(ns: str) -> None:
    """Move the calling thread into network namespace `ns`."""
    with open(f"/run/netns/{ns}") as f:
        if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """fn() on a thread that entered namespace ns (sockets it makes stay in ns)."""
    out: list[Any] = []
    err: list[BaseException] = []

    def body() -> None:
        try:
            enter(ns)
            out.append(fn())
        except BaseException as e:
            err.append(e)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]  # type: ignore[no-any-return]


def switch(sw: str) -> None:
    """A namespace holding one bridge, br0, that the nodes' veths are ports of."""
    sh("ip", "netns", "add", sw)
    sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
    sh("ip", "-n", sw, "link", "set", "br0", "up")


def attach(sw: str, ns: str, node: str, address: str) -> None:
    """A new namespace `ns` whose eth0 (address/24) is a port of the bridge br0 in `sw`."""
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p-{node}", "netns", sw)
    sh("ip", "-n", sw, "link", "set", f"p-{node}", "master", "br0", "up")
    sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")


def remove_namespaces(built: list[str]) -> None:
    """Delete the namespaces (the bridge's last); veths first: a namespace's
    veths are freed asynchronously after it goes."""
    for ns in built:
        if not ns.endswith("-sw"):
            sh("ip", "-n", ns, "link", "del", "eth0", check=False)
    for ns in reversed(built):
        sh("ip", "netns", "del", ns, check=False)
    built.clear()


def next_hops(ns: str, prefix: str) -> set[str]:
    """The gateways of ns's kernel route to prefix (one per ECMP next hop)."""
    out = sh("ip", "-n", ns, "-j", "route", "show", prefix, check=False) or "[]"
    hops: set[str] = set()
    for r in json.loads(out):
        if "gateway" in r:
            hops.add(r["gateway"])
        for nh in r.get("nexthops", []):
            hops.add(nh["gateway"])
    return hops


def http_requests(ns: str, address: str, port: int, n: int) -> Counter[str]:
    """n sequential HTTP requests from namespace ns; who answered (or the error)."""

    def body() -> Counter[str]:
        got: Counter[str] = Counter()
        for _ in range(n):
            try:
                with socket.create_connection((address, port), timeout=5) as s:
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    data = b""
                    while chunk := s.recv(4096):
                        data += chunk
                got[data.rsplit(b"\r\n\r\n", 1)[-1].decode().strip() or "empty"] += 1
            except OSError as e:
                got[f"error: {type(e).__name__}"] += 1
        return got

    return in_netns(ns, body)


def lb_config(
    priority: int, checks: str = "http", weights: dict[str, int] | None = None, forwarding: str = "dr"
) -> str:
    """forwarding: dr, or gre (IPVS wraps each packet in GRE to the real, which answers directly)."""
    chosen = WEIGHTS if weights is None else weights
    fwd = "forwarding: dr" if forwarding == "dr" else "forwarding: tunnel\n    tunnel: {type: gre}"
    reals = "".join(f"      - {{address: {NET}.{HOSTS[n]}, weight: {w}}}\n" for n, w in chosen.items())
    return f"""\
ipvs:
  connection_sync: {{interface: eth0, sync_id: 20}}
virtual_servers:
  - name: web
    address: {VIP}
    port: {PORT}
    scheduler: wrr
    {fwd}
    health_check: {{type: {checks}, interval: 0.5s, timeout: 0.4s, rise: 2, fall: 2, jitter: 0}}
    reals:
{reals}vrrp:
  instances:
    - name: vip
      interface: eth0
      vrid: 20
      priority: {priority}
      advert_interval: 100ms
      virtual_addresses: [{VIP}/24]
"""


class RealServer:
    """Answers `GET ...` with its name (HTTP/1.0) and echoes anything else until EOF."""

    def __init__(self, ns: str, name: str) -> None:
        self.ns, self.name = ns, name
        self.served = 0
        self.sock: socket.socket | None = None

    def start(self) -> None:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", PORT))
            s.listen(256)
            return s

        self.sock = in_netns(self.ns, make)
        threading.Thread(target=self._accept, args=(self.sock,), daemon=True).start()

    def stop(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            self.sock = None

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            # Idle conversations outlive a node joining or leaving: under emulation,
            # with a second VM on the machine, a node took over a minute to join.
            conn.settimeout(600)
            first = conn.recv(4096)
            if first.startswith(b"GET "):
                body = f"{self.name}\n".encode()
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                self.served += 1
                return
            data = first
            while data:
                conn.sendall(data)
                data = conn.recv(4096)


@dataclass
class Conversation:
    """A TCP connection from the client through the VIP, echoing a message every
    `every` seconds; records when each answer came and whether it broke."""

    lab: Lab
    every: float = 0.02
    answers: list[float] = field(default_factory=list)
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.sock = in_netns(self.lab.ns("client"), lambda: socket.create_connection((VIP, PORT), timeout=10))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        try:
            while not self._stop.is_set():
                msg = f"{n}\n".encode()
                self.sock.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    chunk = self.sock.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed by the other side")
                    got += chunk
                if got != msg:
                    raise ConnectionError(f"sent {msg!r}, got back {got!r}")
                self.answers.append(time.monotonic())
                n += 1
                time.sleep(self.every)
        except OSError as e:
            self.error = f"{type(e).__name__}: {e}"

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self.sock.close()

    def longest_gap(self, since: float) -> float | None:
        times = [t for t in self.answers if t >= since]
        before = [t for t in self.answers if t < since]
        if not times:
            return None
        if before:
            times.insert(0, before[-1])
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


class Lab:
    def __init__(self, work: Path, say: Callable[[str], object] = print, tag: str | None = None) -> None:
        self.work = work
        self.say = say
        self.tag = tag or uuid.uuid4().hex[:5]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.reals = {n: RealServer(self.ns(n), n) for n in WEIGHTS}
        self.built: list[str] = []

    def ns(self, node: str) -> str:
        return f"ipvl-{self.tag}-{node}"

    # ------------------------------------------------------------ topology

    def build(self) -> None:
        sw = self.ns("sw")
        self.built.append(sw)
        switch(sw)
        for node, host in HOSTS.items():
            ns = self.ns(node)
            self.built.append(ns)  # first: a failed attach is still cleaned up
            attach(sw, ns, node, f"{NET}.{host}")
            if node.startswith("lb"):
                # Direct routing: IPVS sees only the client's side of a connection,
                # so a closed one lingers in FIN_WAIT for minutes; a new connection
                # from a reused client port would then go to the old real even if it
                # has died. Bit 2 of conn_reuse_mode reschedules those too.
                sh("modprobe", "ip_vs", check=False)
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.vs.conn_reuse_mode=3")
            if node.startswith("rs"):
                # Direct routing: the real owns the VIP too, but must never answer ARP for it.
                for conf in ("all", "eth0"):
                    sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv4.conf.{conf}.arp_ignore=1")
                    sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv4.conf.{conf}.arp_announce=2")
                sh("ip", "-n", ns, "addr", "add", f"{VIP}/32", "dev", "lo")
                # GRE tunnelling (lb_config(forwarding="gre")): the namespace's fallback
                # gre0 takes any GRE packet; what comes out of it is for the VIP on lo.
                sh("modprobe", "ip_gre", check=False)
                sh("ip", "-n", ns, "link", "set", "gre0", "up", check=False)
                for conf in ("all", "gre0"):
                    rp = f"net.ipv4.conf.{conf}.rp_filter=0"
                    sh("ip", "netns", "exec", ns, "sysctl", "-qw", rp, check=False)
        for r in self.reals.values():
            r.start()

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
        for r in self.reals.values():
            r.stop()
        remove_namespaces(self.built)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ load balancers

    def socket(self, lb: str) -> Path:
        return self.work / f"{lb}.sock"

    def config_path(self, lb: str) -> Path:
        return self.work / f"{lb}.yaml"

    def start_lb(self, lb: str, priority: int, checks: str = "http") -> subprocess.Popen[bytes]:
        conf = self.config_path(lb)
        if not conf.exists():  # a restart keeps the file as it is
            conf.write_text(lb_config(priority, checks))
        state = self.work / f"{lb}-state"
        state.mkdir(exist_ok=True)
        log = open(self.work / f"{lb}.log", "ab")  # noqa: SIM115 - the child keeps it
        argv = [
            "nsenter", f"--net=/run/netns/{self.ns(lb)}", sys.executable, "-m", "ipvsmgr", "run",
            "-c", str(conf), "--state-dir", str(state), "--socket", str(self.socket(lb)),
            "--metrics", "off", "--resync", "2s",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.procs[lb] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        return self.procs[lb]

    def log(self, lb: str) -> str:
        return (self.work / f"{lb}.log").read_text(errors="replace")

    def ctl(self, lb: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        return subprocess.run(
            [sys.executable, "-m", "ipvsmgr", *args, "--socket", str(self.socket(lb))],
            capture_output=True, text=True, check=False, env=env, timeout=60,
        )  # fmt: skip

    def has_vip(self, lb: str) -> bool:
        return f" {VIP}/24 " in sh("ip", "-n", self.ns(lb), "-o", "addr", "show", "dev", "eth0", check=False)

    def ipvsadm(self, lb: str, *args: str) -> str:
        return sh("ip", "netns", "exec", self.ns(lb), "ipvsadm", *args, check=False)

    def weights(self, lb: str) -> dict[str, int]:
        out = {}
        for line in self.ipvsadm(lb, "-Ln").splitlines():
            parts = line.split()
            if line.strip().startswith("->") and parts[1][0].isdigit():
                out[parts[1].split(":")[0]] = int(parts[3])
        return out

    def crash(self, lb: str) -> None:
        """Kill the daemon and cut the node off the switch (a dead box keeps its VIP)."""
        p = self.procs[lb]
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        sh("ip", "-n", self.ns("sw"), "link", "set", f"p-{lb}", "down")

    # ------------------------------------------------------------ client

    def requests(self, n: int) -> Counter[str]:
        """n sequential HTTP requests to the VIP; who answered (or the error)."""
        return http_requests(self.ns("client"), VIP, PORT, n)


def wait(what: Callable[[], bool], limit: float, step: float = 0.05) -> float:
    start = time.monotonic()
    while not what():
        if time.monotonic() - start > limit:
            raise TimeoutError(f"not within {limit:g}s")
        time.sleep(step)
    return time.monotonic() - start


def run_demo(work: Path, say: Callable[[str], object] = print) -> dict[str, Any]:
    """The whole tour, with progress lines; returns the figures for the summary."""
    out: dict[str, Any] = {}
    with Lab(work, say) as lab:
        say("building: a client, two load balancers, three real servers on one bridge ...")
        lab.build()
        lab.start_lb("lb1", 150)
        lab.start_lb("lb2", 100)
        t = wait(
            lambda: lab.has_vip("lb1")
            and lab.weights("lb1") == {f"{NET}.{HOSTS[n]}": w for n, w in WEIGHTS.items()},
            180,
        )
        say(f"lb1 is VRRP master and its reals passed their checks after {t:.1f}s")
        wait(lambda: len(lab.weights("lb2")) == 3 and all(lab.weights("lb2").values()), 180)

        got = lab.requests(60)
        say(f"60 requests, wrr weights 1:2:3 -> {dict(sorted(got.items()))}")
        out["balanced"] = dict(got)

        lab.reals["rs2"].stop()
        t = wait(lambda: lab.weights("lb1").get(f"{NET}.22") == 0, 30)
        say(f"rs2 stopped: weight 0 on lb1 after {t:.1f}s")
        got = lab.requests(30)
        say(f"30 requests without rs2 -> {dict(sorted(got.items()))}")
        out["without_rs2"] = dict(got)
        lab.reals["rs2"].start()
        t = wait(lambda: lab.weights("lb1").get(f"{NET}.22") == 2, 30)
        say(f"rs2 back: weight 2 again after {t:.1f}s")

        conv = Conversation(lab)
        conv.start()
        time.sleep(3.0)  # the connection reaches lb2 through connection sync (sent every 2 s at most)
        say("a long-lived connection is echoing every 20 ms; crashing lb1 (killed, link down) ...")
        event = time.monotonic()
        lab.crash("lb1")
        t = wait(lambda: lab.has_vip("lb2"), 30)
        time.sleep(2.0)
        conv.stop()
        gap = conv.longest_gap(event)
        out["failover_s"] = t
        out["connection_gap_s"] = gap
        out["connection_error"] = conv.error
        state = "kept" if conv.error is None and gap is not None else f"LOST ({conv.error})"
        say(f"lb2 took the VIP after {t:.2f}s; the connection was {state}, longest silence {gap or 0:.2f}s")
        got = lab.requests(30)
        say(f"30 requests through lb2 -> {dict(sorted(got.items()))}")
        out["after_failover"] = dict(got)
    say("cleaned up: namespaces and processes removed")
    return out
