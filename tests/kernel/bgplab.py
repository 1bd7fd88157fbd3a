"""An ECMP scale-out lab inside the VM: a BGP router in front of ipvsmgr nodes.

    client 198.18.41.2 ── router .1 (BIRD 2 or FRR bgpd; ECMP, L4 hash)
                              │ 198.18.40.1
    ─────────────── bridge 198.18.40.0/24 ───────────────
    lba .2  lbb .3  lbc .4   (ipvsmgr + ExaBGP; IPVS mh, DR)
    probe .50                (talks to one chosen node)
    rs0 .. rs9  .11 .. .20   (VIP on lo; answer GET with their name)

Each node checks the reals on a port of its own (lba 8081, lbb 8082, lbc
8083), so one node's view of the reals can fail while the data path and
the other nodes' checks stay up. The router's kernel route to the VIP is
the independent reader of what was announced.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path

from ipvsmgr.lab import RealServer, attach, in_netns, next_hops, remove_namespaces, sh, switch

FRONT, OUTSIDE = "198.18.40", "198.18.41"
VIP = "198.18.100.1"
LBS = {"lba": 2, "lbb": 3, "lbc": 4}
HEALTH_PORT = {"lba": 8081, "lbb": 8082, "lbc": 8083}
ROUTER_AS, NODE_AS = 65000, 65001
LINGER0 = struct.pack("ii", 1, 0)


FAST_CHECKS = "interval: 0.5s, timeout: 0.4s, rise: 2, fall: 2"
# Under emulation a loaded node can miss a 0.4 s timeout; for tests that must
# not see a real flap (the hashing ones) the checks are forgiving.
CALM_CHECKS = "interval: 1s, timeout: 1s, rise: 2, fall: 4"


def node_config(
    lb: str,
    reals: Iterable[str],
    exabgp: str = "/usr/sbin/exabgp",
    checks: str = FAST_CHECKS,
    watermarks: str = "",
) -> str:
    extra = f", watermarks: {watermarks}" if watermarks else ""
    rs = "".join(f"      - {{address: {FRONT}.{11 + int(r[2:])}}}\n" for r in reals)
    return f"""\
ipvs:
  sysctl: {{sloppy_tcp: true, conn_reuse_mode: 3}}
virtual_servers:
  - name: web
    address: {VIP}
    port: 80
    scheduler: mh
    scheduler_flags: [mh-port, mh-fallback]
    forwarding: dr
    health_check:
      {{type: tcp, port: {HEALTH_PORT[lb]}, {checks}, jitter: 0}}
    reals:
{rs}bgp:
  local_as: {NODE_AS}
  router_id: {FRONT}.{LBS[lb]}
  hold_time: 3s
  withdraw_grace: 1s
  exabgp: [{exabgp}]
  peers:
    - {{address: {FRONT}.1, as: {ROUTER_AS}, local_address: {FRONT}.{LBS[lb]}}}
  announce:
    - {{prefix: {VIP}{extra}}}
"""


class HealthPort:
    """A listener a node's checks connect to on every real (closed = that node sees the reals down)."""

    def __init__(self, ns: str, port: int) -> None:
        self.ns, self.port = ns, port
        self.sock: socket.socket | None = None

    def start(self) -> None:
        def make() -> socket.socket:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", self.port))
            s.listen(64)
            return s

        self.sock = in_netns(self.ns, make)
        threading.Thread(target=self._accept, args=(self.sock,), daemon=True).start()

    def _accept(self, s: socket.socket) -> None:
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            c.close()

    def stop(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            self.sock = None


class BgpLab:
    def __init__(
        self, work: Path, reals: int = 10, tag: str | None = None, checks: str = FAST_CHECKS
    ) -> None:
        self.checks = checks
        self.work = work
        self.tag = tag or uuid.uuid4().hex[:5]
        self.real_names = [f"rs{i}" for i in range(reals)]
        self.reals = {n: RealServer(self.ns(n), n) for n in self.real_names}
        self.health = {
            (n, lb): HealthPort(self.ns(n), p) for n in self.real_names for lb, p in HEALTH_PORT.items()
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.built: list[str] = []

    def ns(self, node: str) -> str:
        return f"bgpl-{self.tag}-{node}"

    # ------------------------------------------------------------ topology

    def _node(self, node: str, address: str) -> str:
        ns = self.ns(node)
        self.built.append(ns)
        attach(self.ns("sw"), ns, node, address)
        return ns

    def build(self, by_hand: tuple[str, ...] = ()) -> None:
        """The topology; the reals in `by_hand` are left for the test to set up (through the CLI)."""
        from ipvsmgr import realserver
        from vrrp.netlink import Host

        sw = self.ns("sw")
        self.built.append(sw)
        switch(sw)
        router = self._node("router", f"{FRONT}.1")
        client = self.ns("client")
        sh("ip", "netns", "add", client)
        self.built.append(client)
        sh("ip", "-n", client, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1", "netns", router)
        sh("ip", "-n", client, "addr", "add", f"{OUTSIDE}.2/24", "dev", "eth0")
        sh("ip", "-n", router, "addr", "add", f"{OUTSIDE}.1/24", "dev", "eth1")
        for ns, dev in ((client, "eth0"), (router, "eth1")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", client, "link", "set", "lo", "up")
        sh("ip", "-n", client, "route", "add", "default", "via", f"{OUTSIDE}.1")
        sh("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # Spread flows over the next hops by ports too (L4), not only by addresses.
        sh("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1")
        sh("modprobe", "ip_vs", check=False)
        for lb, host in LBS.items():
            ns = self._node(lb, f"{FRONT}.{host}")
            # no VIP here: ipvsmgr puts the announced address on lo itself (bgp.vip_interface)
            sh("ip", "-n", ns, "route", "add", "default", "via", f"{FRONT}.1")
        self._node("probe", f"{FRONT}.50")
        for i, name in enumerate(self.real_names):
            ns = self._node(name, f"{FRONT}.{11 + i}")
            sh("ip", "-n", ns, "route", "add", "default", "via", f"{FRONT}.1")
            if name not in by_hand:  # in this process: a Python start per real is slow in the VM

                def setup() -> None:
                    host = Host()
                    try:
                        import ipaddress

                        for item in realserver.items(host, [ipaddress.IPv4Address(VIP)], "dr"):
                            if not item.ok:
                                item.fix()
                    finally:
                        host.close()

                in_netns(ns, setup)
        for r in self.reals.values():
            r.start()
        for h in self.health.values():
            h.start()

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
        for r in self.reals.values():
            r.stop()
        for h in self.health.values():
            h.stop()
        remove_namespaces(self.built)

    def __enter__(self) -> BgpLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ processes

    def spawn(self, node: str, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        p = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns(node)}", *argv],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        log.close()
        self.procs[name] = p
        return p

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text(errors="replace")

    def start_bird(self) -> None:
        peers = "\n".join(
            f"protocol bgp {lb} {{ local {FRONT}.1 as {ROUTER_AS}; neighbor {FRONT}.{h} as {NODE_AS}; "
            "hold time 3; connect retry time 1; error wait time 1, 2; ipv4 { import all; export none; }; }"
            for lb, h in LBS.items()
        )
        conf = self.work / "bird.conf"
        conf.write_text(
            f"router id {FRONT}.1;\nprotocol device {{}}\n"
            "protocol kernel { ipv4 { export all; }; merge paths on; }\n" + peers + "\n"
        )
        self.spawn("router", ["bird", "-f", "-c", str(conf), "-s", str(self.work / "bird.ctl")], "router")

    def start_frr(self) -> None:
        """zebra + bgpd (FRR) as the router: eBGP multipath over the nodes."""
        d = self.work / "frr"
        d.mkdir(exist_ok=True)
        neighbors = "".join(f" neighbor {FRONT}.{h} remote-as {NODE_AS}\n neighbor {FRONT}.{h} timers 1 3\n"
                            for h in LBS.values())  # fmt: skip
        (d / "bgpd.conf").write_text(
            f"router bgp {ROUTER_AS}\n bgp router-id {FRONT}.1\n no bgp ebgp-requires-policy\n"
            f" no bgp network import-check\n{neighbors}"
            " address-family ipv4 unicast\n  maximum-paths 8\n exit-address-family\n"
        )
        (d / "zebra.conf").write_text("")
        common = ["-u", "root", "-g", "frrvty", "-z", str(d / "zserv.api"), "--vty_socket", str(d)]
        self.spawn("router", ["/usr/lib/frr/zebra", *common, "-i", str(d / "zebra.pid"),
                              "-f", str(d / "zebra.conf")], "zebra")  # fmt: skip
        import time

        deadline = time.monotonic() + 30
        while not (d / "zserv.api").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("zebra did not start: " + self.log("zebra")[-2000:])
            time.sleep(0.1)
        self.spawn("router", ["/usr/lib/frr/bgpd", *common, "-i", str(d / "bgpd.pid"), "-p", "179",
                              "-f", str(d / "bgpd.conf")], "router")  # fmt: skip

    def stop_router(self) -> None:
        for name in ("router", "zebra"):
            p = self.procs.pop(name, None)
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=20)

    def start_lb(
        self,
        lb: str,
        reals: Iterable[str] | None = None,
        exabgp: str = "/usr/sbin/exabgp",
        watermarks: str = "",
    ) -> None:
        conf = self.work / f"{lb}.yaml"
        listed = self.real_names if reals is None else reals
        conf.write_text(node_config(lb, listed, exabgp, self.checks, watermarks))
        state = self.work / f"{lb}-state"
        state.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "ipvsmgr", "run", "-c", str(conf), "--state-dir", str(state),
                "--socket", str(self.socket(lb)), "--metrics", "off", "--resync", "2s"]  # fmt: skip
        self.spawn(lb, argv, lb)

    def socket(self, lb: str) -> Path:
        return self.work / f"{lb}.sock"

    def ctl(self, lb: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        return subprocess.run(
            [sys.executable, "-m", "ipvsmgr", *args, "--socket", str(self.socket(lb))],
            capture_output=True, text=True, check=False, env=env, timeout=120,
        )  # fmt: skip

    def reload(self, lb: str, reals: Iterable[str]) -> None:
        (self.work / f"{lb}.yaml").write_text(node_config(lb, reals, checks=self.checks))
        r = self.ctl(lb, "reload")
        assert r.returncode == 0, r.stderr

    # ------------------------------------------------------------ readers

    def next_hops(self) -> set[str]:
        return next_hops(self.ns("router"), f"{VIP}/32")

    def hops(self, *lbs: str) -> set[str]:
        return {f"{FRONT}.{LBS[lb]}" for lb in lbs}

    def weights(self, lb: str) -> dict[str, int]:
        out = {}
        text = sh("ip", "netns", "exec", self.ns(lb), "ipvsadm", "-Ln", check=False)
        for line in text.splitlines():
            parts = line.split()
            if line.strip().startswith("->") and parts[1][0].isdigit():
                out[parts[1].split(":")[0]] = int(parts[3])
        return out

    def order(self, lb: str) -> list[str]:
        """The reals in the kernel's list order (`--nosort`: ipvsadm sorts by default)."""
        text = sh("ip", "netns", "exec", self.ns(lb), "ipvsadm", "-Ln", "--nosort", check=False)
        return [
            ln.split()[1]
            for ln in text.splitlines()
            if ln.strip().startswith("->") and ln.split()[1][0].isdigit()
        ]

    def transitions(self, lb: str) -> list[str]:
        """The daemon's log lines about reals going down or up (a flap changes the hashing)."""
        return [
            ln
            for ln in self.log(lb).splitlines()
            if " DOWN: " in ln or (" UP: " in ln and "passed" not in ln)
        ]

    def who(self, via: str, ports: range, parallel: int = 8) -> dict[int, str]:
        """From the probe, through node `via` only: for each source port, which real answered."""
        sh("ip", "-n", self.ns("probe"), "route", "replace", f"{VIP}/32", "via", f"{FRONT}.{LBS[via]}")
        result: dict[int, str] = {}
        lock = threading.Lock()
        todo = list(ports)

        def worker() -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    port = todo.pop()
                try:
                    s = socket.socket()
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.settimeout(10)
                    s.bind((f"{FRONT}.50", port))
                    s.connect((VIP, 80))
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    data = b""
                    while chunk := s.recv(4096):
                        data += chunk
                    s.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, LINGER0
                    )  # no TIME_WAIT: ports are reused
                    s.close()
                    answer = data.rsplit(b"\r\n\r\n", 1)[-1].decode().strip() or "empty"
                except OSError as e:
                    answer = f"error: {type(e).__name__}"
                with lock:
                    result[port] = answer

        def run() -> None:
            threads = [
                threading.Thread(target=lambda: in_netns(self.ns("probe"), worker)) for _ in range(parallel)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        run()
        return result
