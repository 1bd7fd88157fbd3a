"""A switched LAN of namespaces for VRRP tests: nodes a and b (the VRRP
peers) and c (a client) hang off a bridge in namespace sw.

    a: 198.18.10.1  2001:db8:10::1     b: .2 / ::2     c: .3 / ::3
    VIP 198.18.10.100/24, 2001:db8:10::100/64

DAD is off so link-local addresses are usable at once. A sniffer (AF_PACKET
on a's switch port, an independent reader of what is on the wire) records
the VRRP packets a sends and receives.
Daemons run as processes entered into a node's namespace with nsenter; the
lab kills them and deletes its namespaces on close.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.netns.lab import enter, in_netns, sh
from vrrp.packet import checksum

ROOT = Path(__file__).resolve().parents[2]
ADDR4 = {"a": "198.18.10.1", "b": "198.18.10.2", "c": "198.18.10.3"}
ADDR6 = {"a": "2001:db8:10::1", "b": "2001:db8:10::2", "c": "2001:db8:10::3"}
VIP4, VIP6 = "198.18.10.100", "2001:db8:10::100"
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


@dataclass(frozen=True)
class Captured:
    at: float  # time.monotonic()
    src_mac: bytes
    src: str
    dst: str
    ttl: int
    tos: int
    vrrp: bytes  # the VRRP message


FRR_DIR = Path("/usr/lib/frr")


def frr() -> bool:
    """FRR's zebra and vrrpd are installed (and the frrvty group they want)."""
    try:
        import grp

        grp.getgrnam("frrvty")
    except KeyError:
        return False
    return (
        all(os.access(FRR_DIR / d, os.X_OK) for d in ("zebra", "vrrpd")) and shutil.which("vtysh") is not None
    )


def keepalived() -> str | None:
    return shutil.which("keepalived") or (
        "/usr/sbin/keepalived" if os.path.exists("/usr/sbin/keepalived") else None
    )


@dataclass(frozen=True)
class FrrRouter:
    dir: Path  # config, logs, vty sockets
    zebra: subprocess.Popen[bytes]
    vrrpd: subprocess.Popen[bytes]


@dataclass
class VrrpLab:
    work: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    captured: list[Captured] = field(default_factory=list)
    announced: list[tuple[float, bytes, str]] = field(default_factory=list)  # (at, sender MAC, address)
    frames: list[tuple[float, str, bytes]] = field(
        default_factory=list
    )  # (at, port, source MAC): sent by the node
    _stop: threading.Event = field(default_factory=threading.Event)
    _sniffers: list[threading.Thread] = field(default_factory=list)

    def ns(self, node: str) -> str:
        return f"vr-{node}-{self.tag}"

    def setup(self) -> None:
        sw = self.ns("sw")
        sh("ip", "netns", "add", sw)
        sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
        sh("ip", "-n", sw, "link", "set", "br0", "up")
        for node in ("a", "b", "c"):
            ns = self.ns(node)
            sh("ip", "netns", "add", ns)
            for key in ("all", "default"):
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0")
            sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{node}", "netns", sw)
            sh("ip", "-n", sw, "link", "set", f"p{node}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{ADDR4[node]}/24", "dev", "eth0")
            sh("ip", "-n", ns, "addr", "add", f"{ADDR6[node]}/64", "dev", "eth0", "nodad")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def close(self) -> None:
        self._stop.set()
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
        for t in self._sniffers:
            t.join(timeout=5)
        for node in ("a", "b", "c", "sw"):
            sh("ip", "netns", "del", self.ns(node), check=False)

    # ------------------------------------------------------------ daemons

    def spawn(self, node: str, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        err = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
        p = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns(node)}", *argv],
            stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT, cwd=ROOT,
            start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        err.close()
        self.procs.append(p)
        return p

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text(errors="replace")

    def ipvsmgr(self, node: str, config: str, name: str) -> subprocess.Popen[bytes]:
        """`ipvsmgr run` in node's namespace; its control socket is self.socket(name)."""
        path = self.work / f"{name}.yaml"
        path.write_text(config)
        state = self.work / f"{name}-state"
        state.mkdir(exist_ok=True)
        import sys

        argv = [
            sys.executable,
            "-m",
            "ipvsmgr",
            "run",
            "-c",
            str(path),
            "--state-dir",
            str(state),
            "--log-level",
            "debug",
            "--socket",
            str(self.socket(name)),
        ]
        return self.spawn(node, argv, name)

    def socket(self, name: str) -> Path:
        return self.work / f"{name}.sock"

    def ctl(self, name: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The ipvsmgr CLI against daemon `name`'s control socket (no namespace needed: a Unix socket)."""
        import sys

        p = subprocess.run(
            [sys.executable, "-m", "ipvsmgr", *argv, "--socket", str(self.socket(name))],
            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60,
        )  # fmt: skip
        if check and p.returncode != 0:
            raise AssertionError(f"ipvsmgr {' '.join(argv)}: exit {p.returncode}: {p.stderr}")
        return p

    def keepalived(self, node: str, config: str, name: str) -> subprocess.Popen[bytes]:
        exe = keepalived()
        assert exe is not None
        conf = self.work / f"{name}.conf"
        conf.write_text(config)
        pids = [self.work / f"{name}.{k}.pid" for k in ("main", "vrrp", "check")]
        argv = [
            exe, "-n", "-l", "-D", "-G", "-P", "-f", str(conf),
            "-p", str(pids[0]), "-r", str(pids[1]), "-c", str(pids[2]),
        ]  # fmt: skip
        return self.spawn(node, argv, name)

    def frr(self, node: str, priority: int, *, interval_ms: int = 100, name: str = "frr") -> FrrRouter:
        """zebra + vrrpd (FRR) in node's namespace as VRRPv3 router VRID 51 for VIP4.

        FRR wants the macvlan made for it (bridge mode, the virtual MAC, the VIP
        on it, a random link-local); it sets it protodown while backup. The
        namespace gets arp_ignore 1 / arp_announce 2, as FRR's users are told,
        so the base never answers for the VIP. Returns FRR's directory (sockets,
        logs) and the daemons, which run in the foreground and die with the lab."""
        ns = self.ns(node)
        dev = "vrrp4-2-1"
        sh("ip", "-n", ns, "link", "add", dev, "link", "eth0", "type", "macvlan", "mode", "bridge")
        sh(
            "ip", "-n", ns, "link", "set", "dev", dev, "addrgenmode", "random"
        )  # not at creation: EAFNOSUPPORT
        sh("ip", "-n", ns, "link", "set", "dev", dev, "address", "00:00:5e:00:01:33")
        sh("ip", "-n", ns, "addr", "add", f"{VIP4}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", "dev", dev, "up")
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1")
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.all.arp_announce=2")
        d = self.work / name
        d.mkdir()
        (d / "zebra.conf").write_text(f"hostname {name}\n")
        (d / "vrrpd.conf").write_text(
            f"hostname {name}\ninterface eth0\n vrrp 51 version 3\n vrrp 51 priority {priority}\n"
            f" vrrp 51 advertisement-interval {interval_ms}\n vrrp 51 ip {VIP4}\n"
        )
        procs = []
        for daemon in ("zebra", "vrrpd"):  # zebra first: vrrpd learns the interfaces from it
            argv = [
                str(FRR_DIR / daemon), "-u", "root", "-g", "frrvty", "-P", "0",
                "-i", str(d / f"{daemon}.pid"), "-z", str(d / "zserv.api"), "--vty_socket", str(d),
                "-f", str(d / f"{daemon}.conf"), "--log", f"file:{d / daemon}.log",
            ]  # fmt: skip
            p = self.spawn(node, argv, f"{name}-{daemon}")
            self.wait_for(_started(p, d / f"{daemon}.vty"), 10, f"FRR {daemon}")
            if p.poll() is not None:
                raise RuntimeError(f"FRR {daemon} exited: {self.log(f'{name}-{daemon}')}")
            procs.append(p)
        return FrrRouter(d, procs[0], procs[1])

    def frr_vrrp(self, router: FrrRouter) -> dict[str, object]:
        """FRR's view of VRID 51 over IPv4: the v4 part of `show vrrp json` (status, effectivePriority)."""
        out = subprocess.run(
            ["vtysh", "--vty_socket", str(router.dir), "-c", "show vrrp json"],
            capture_output=True, text=True, check=True, timeout=10,
        )  # fmt: skip
        routers = json.loads(out.stdout)
        v4: dict[str, object] = next(r for r in routers if r["vrid"] == 51)["v4"]
        return v4

    def stop(self, p: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)
        p.wait(timeout=timeout)

    # ------------------------------------------------------------ observation

    def has_address(self, node: str, address: str, dev: str = "eth0") -> bool:
        out = sh("ip", "-n", self.ns(node), "-o", "addr", "show", "dev", dev, check=False)
        return any(f" {address}/" in line for line in out.splitlines())

    def neighbour(self, node: str, address: str) -> bytes | None:
        """The MAC address node's neighbour table has for address (None if none)."""
        for line in sh("ip", "-n", self.ns(node), "neigh", "show", address).splitlines():
            words = line.split()
            if "lladdr" in words:
                return bytes.fromhex(words[words.index("lladdr") + 1].replace(":", ""))
        return None

    def sysctl(self, node: str, name: str) -> str:
        return sh("ip", "netns", "exec", self.ns(node), "sysctl", "-n", name).strip()

    def wait_for(self, cond: Callable[[], bool], timeout: float, what: str) -> float:
        start = time.monotonic()
        while not cond():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.02)
        return time.monotonic() - start

    def link(self, node: str, up: bool) -> None:
        sh("ip", "-n", self.ns("sw"), "link", "set", f"p{node}", "up" if up else "down")

    def mac(self, node: str) -> bytes:
        text = sh("ip", "-n", self.ns(node), "-br", "link", "show", "eth0").split()[2]
        return bytes.fromhex(text.replace(":", ""))

    def sniff(self, port: str = "pa") -> None:
        """Record every VRRP packet (IPv4 and IPv6) through a switch port (a's by default) from now on,
        and the source MAC of every frame the node sends."""
        ready = threading.Event()

        def body() -> None:
            def make() -> socket.socket:
                return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))

            s = in_netns(self.ns("sw"), make)
            with s:
                s.bind((port, 0))
                s.settimeout(0.1)
                # kernel receive times: a loaded machine delays this thread, not the timestamps
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                ready.set()
                while not self._stop.is_set():
                    try:
                        frame, anc, _, addr = s.recvmsg(2048, 64)
                        at = _monotonic(anc)
                    except TimeoutError:
                        continue
                    except OSError as e:  # the port was taken down (a crash test): wait for it
                        if e.errno != errno.ENETDOWN:
                            raise
                        time.sleep(0.05)
                        continue
                    if addr[2] != PACKET_OUTGOING:  # came in from the node, not out to it
                        self.frames.append((at, port, frame[6:12]))
                    c = parse_vrrp_frame(frame, at)
                    if c is not None:
                        self.captured.append(c)
                        continue
                    a = parse_announcement(frame)
                    if a is not None:
                        self.announced.append((at, *a))

        t = threading.Thread(target=body, daemon=True)
        self._sniffers.append(t)
        t.start()
        ready.wait(5)


def _started(p: subprocess.Popen[bytes], vty: Path) -> Callable[[], bool]:
    return lambda: vty.exists() or p.poll() is not None


def parse_announcement(frame: bytes) -> tuple[bytes, str] | None:
    """(sender MAC, address) of a gratuitous ARP or an unsolicited neighbour advertisement."""
    if len(frame) < 42:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == 0x0806:
        op = struct.unpack_from("!H", frame, 20)[0]
        spa, tpa = frame[28:32], frame[38:42]
        if op in (1, 2) and spa == tpa and frame[0:6] == b"\xff" * 6:
            return frame[22:28], str(ipaddress.IPv4Address(spa))
    elif ethertype == 0x86DD and len(frame) >= 14 + 40 + 24 and frame[14 + 6] == 58:
        icmp = frame[14 + 40 :]
        if icmp[0] == 136 and icmp[4] & 0x20 and not icmp[4] & 0x40:  # override, not solicited
            return frame[6:12], str(ipaddress.IPv6Address(icmp[8:24]))
    return None


SO_TIMESTAMPNS = 35  # also SCM_TIMESTAMPNS (asm-generic/socket.h; Python 3.11 has no name for it)


def _monotonic(ancillary: list[tuple[int, int, bytes]]) -> float:
    """SO_TIMESTAMPNS's receive time (CLOCK_REALTIME) on the time.monotonic() scale the tests use."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack_from("=qq", data)
            return time.monotonic() - (time.time() - (int(sec) + int(nsec) / 1e9))
    return time.monotonic()


def parse_vrrp_frame(frame: bytes, at: float | None = None) -> Captured | None:
    if at is None:
        at = time.monotonic()
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    ip = frame[14:]
    if ethertype == 0x0800 and len(ip) >= 20 and ip[9] == 112:
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        src = str(ipaddress.IPv4Address(ip[12:16]))
        dst = str(ipaddress.IPv4Address(ip[16:20]))
        return Captured(at, frame[6:12], src, dst, ip[8], ip[1], ip[ihl:total])
    if ethertype == 0x86DD and len(ip) >= 40 and ip[6] == 112:
        plen = struct.unpack_from("!H", ip, 4)[0]
        tclass = ((ip[0] & 0x0F) << 4) | (ip[1] >> 4)
        src = str(ipaddress.IPv6Address(ip[8:24]))
        dst = str(ipaddress.IPv6Address(ip[24:40]))
        return Captured(at, frame[6:12], src, dst, ip[7], tclass, ip[40 : 40 + plen])
    return None


def ipvsmgr_conf(
    priority: int, *, interval: str = "100ms", preempt: bool = True, vip: str = VIP4 + "/24",
    version: int = 3, extra: str = "",
) -> str:  # fmt: skip
    return f"""\
vrrp:
  instances:
    - name: vi_1
      interface: eth0
      vrid: 51
      priority: {priority}
      version: {version}
      advert_interval: {interval}
      preempt: {"true" if preempt else "false"}
      virtual_addresses: [{vip}]
{extra}"""


def keepalived_conf(
    priority: int, *, interval: str = "0.1", preempt: bool = True, vip: str = VIP4 + "/24",
    version: int = 3, extra: str = "",
) -> str:  # fmt: skip
    return f"""\
global_defs {{
    router_id ka
    vrrp_version {version}
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int {interval}
    {"" if preempt else "nopreempt"}
    virtual_ipaddress {{
        {vip}
    }}
{extra}}}
"""


PING_EVERY = 0.01


class Pinger(threading.Thread):
    """ICMP echo to an IPv4 address every 10 ms from a namespace, for `duration` s; records reply times."""

    def __init__(self, ns: str, target: str, duration: float) -> None:
        super().__init__(daemon=True)
        self.ns, self.target, self.duration = ns, target, duration
        self.replies: list[float] = []
        self.sent = 0
        self.stop_at = time.monotonic() + duration

    def run(self) -> None:
        enter(self.ns)
        ident = os.getpid() & 0xFFFF
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
            s.setblocking(False)
            next_send = time.monotonic()
            seq = 0
            while (now := time.monotonic()) < self.stop_at:
                if now >= next_send:
                    seq = (seq + 1) & 0xFFFF
                    s.sendto(_echo(ident, seq), (self.target, 0))
                    self.sent += 1
                    next_send += PING_EVERY
                ready, _, _ = select.select([s], [], [], max(0.0, next_send - time.monotonic()))
                if not ready:
                    continue
                while True:
                    try:
                        packet = s.recv(2048)
                    except BlockingIOError:
                        break
                    ihl = (packet[0] & 0x0F) * 4
                    kind, _, _, rid, _ = struct.unpack_from("!BBHHH", packet, ihl)
                    if kind == 0 and rid == ident:
                        self.replies.append(time.monotonic())

    def outage(self, event: float) -> float | None:
        """The longest gap between two consecutive replies, the later one after `event`
        (a reply already in flight at the event must not hide the gap that follows it);
        None if no reply came after the event at all."""
        gaps = [b - a for a, b in zip(self.replies, self.replies[1:], strict=False) if b >= event]
        if not any(t >= event for t in self.replies) or not gaps:
            return None
        return max(gaps)


def _echo(ident: int, seq: int) -> bytes:
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"ipvsmgr-failover"
    return head[:2] + struct.pack("!H", checksum(head)) + head[4:]
