"""keepalived 2.2.7, then ipvsmgr on its import, each in turn on this kernel and the same real
servers, for every corpus file with virtual servers: the same `ipvsadm -Sn` once the checks
have settled with every real serving, and again after one real stops serving (its health
verdicts, and removal versus inhibit_on_failure, quorum and sorry servers).

The reals live in a namespace behind this VM, at the corpus's addresses (mapped into
198.18.0.0/15; tests/kacorpus.py) and serve what their check asks for: TCP, HTTP and HTTPS (the
status the check wants, a page whose MD5 the files' digests are set to), SMTP, DNS, UDP and ICMP.
Check timings are cut to 1 s in both runs."""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import vm
from tests.kacorpus import CONFIG_ID, PAGE, copy_rewritten
from tests.kernel.conftest import IN_VM
from tests.kernel.helpers import Lab, ipvsadm, rules, sh
from tests.kernel.test_import import SLOW_CORPUS, START_CORPUS
from tests.netns.lab import in_netns

NS = "kreal"
IN_CI = {"07-quorum-sorry.conf"}  # quorum, a sorry server and removal; the rest in the full run
SLOW = vm.slow("07-quorum-sorry.conf here, and test_keepalived_and_its_import_program_the_same_table")


@dataclass
class Serve:
    """What one real's check needs from it."""

    kind: str  # tcp, http, https, smtp, dns, udp, icmp (nothing to serve), file, script/none (nothing)
    address: str
    port: int
    status: int = 200
    path: str = ""  # a file check's file
    reverse: bool = False
    source: str = ""  # the address the check binds to (keepalived's bindto): put on this VM


def _status(http: dict[str, Any]) -> int:
    first = str((http.get("status") or ["200"])[0])
    return int(first.split("-")[0])


def wanted(doc: dict[str, Any]) -> list[tuple[str, Serve]]:
    """(real address, what it must serve) for every real of the import, in order."""
    out = []
    for vs in doc.get("virtual_servers") or []:
        for real in vs.get("reals") or []:
            hc = real.get("health_check") or vs.get("health_check") or {}
            kind = str(hc.get("type", "none"))
            addr = str(hc.get("address") or real["address"])
            port = int(hc.get("port") or real.get("port") or vs.get("port") or 0)
            f = hc.get("file") or {}
            serve = Serve(
                kind, addr, port, _status(hc.get("http") or {}), f.get("path", ""), f.get("reverse", False)
            )
            serve.source = str(hc.get("source") or "")
            out.append((str(real["address"]), serve))
    return out


@dataclass
class Reals:
    """A namespace holding every real's address, routed from this VM, and its servers."""

    work: Path
    addresses: set[str] = field(default_factory=set)
    socks: dict[str, list[socket.socket]] = field(default_factory=dict)  # by address
    files: dict[str, Serve] = field(default_factory=dict)  # file-checked reals, by address
    tls: ssl.SSLContext | None = None

    def sources(self, addresses: set[str]) -> None:
        """The checks' bind addresses, on this VM's side of the link."""
        for a in sorted(addresses):
            plen = 128 if ":" in a else 32
            sh("ip", "addr", "replace", f"{a}/{plen}", "dev", "kr-lb", *(["nodad"] if ":" in a else []))

    def setup(self, addresses: set[str]) -> None:
        for cmd in (
            f"ip netns add {NS}", f"ip link add kr-lb type veth peer name kr0 netns {NS}",
            "ip addr add 198.18.250.1/24 dev kr-lb", "ip addr add 2001:db8:fa::1/64 dev kr-lb nodad",
            "ip link set kr-lb up", f"ip -n {NS} link set kr0 up", f"ip -n {NS} link set lo up",
            f"ip -n {NS} addr add 198.18.250.2/24 dev kr0",
            f"ip -n {NS} addr add 2001:db8:fa::2/64 dev kr0 nodad",
            f"ip -n {NS} route add default via 198.18.250.1",
            f"ip -n {NS} -6 route add default via 2001:db8:fa::1",
        ):  # fmt: skip
            sh(*cmd.split())
        for a in sorted(addresses):
            ip = ipaddress.ip_address(a)
            if ip.is_loopback or ip.is_unspecified:
                continue
            self.addresses.add(a)
            self.add(a)
            gw, plen = ("2001:db8:fa::2", 128) if ip.version == 6 else ("198.18.250.2", 32)
            sh("ip", "route", "replace", f"{a}/{plen}", "via", gw)

    def add(self, a: str) -> None:
        plen = 128 if ":" in a else 32
        sh("ip", "-n", NS, "addr", "replace", f"{a}/{plen}", "dev", "kr0", *(["nodad"] if ":" in a else []))

    def remove(self, a: str) -> None:
        plen = 128 if ":" in a else 32
        sh("ip", "-n", NS, "addr", "del", f"{a}/{plen}", "dev", "kr0", check=False)

    def close(self) -> None:
        for a in list(self.socks) + list(self.files):
            self.stop(a)
        for a in self.addresses:
            sh("ip", "route", "del", a, check=False)
        sh("ip", "link", "del", "kr-lb", check=False)
        sh("ip", "netns", "del", NS, check=False)

    # ------------------------------------------------------------ servers

    def serve(self, s: Serve) -> None:
        if s.kind == "file":  # up: 0 in the file (reverse: 1)
            self.files[s.address] = s
            Path(s.path).parent.mkdir(parents=True, exist_ok=True)
            Path(s.path).write_text("1\n" if s.reverse else "0\n")
            return
        if s.kind in ("icmp", "script", "none") or s.address not in self.addresses or not s.port:
            return
        family = socket.AF_INET6 if ":" in s.address else socket.AF_INET
        datagram = s.kind in ("udp", "dns")

        def make() -> socket.socket:
            sock = socket.socket(family, socket.SOCK_DGRAM if datagram else socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((s.address, s.port))
            if not datagram:
                sock.listen(64)
            return sock

        try:
            sock = in_netns(NS, make)
        except OSError as e:
            if e.errno == 98:  # two reals' checks on one address and port: one server answers both
                return
            raise
        self.socks.setdefault(s.address, []).append(sock)
        body = self._datagrams if datagram else self._accept
        threading.Thread(target=body, args=(sock, s), daemon=True).start()

    def stop(self, address: str) -> None:
        f = self.files.pop(address, None)
        if f is not None:
            Path(f.path).write_text("0\n" if f.reverse else "1\n")
        for sock in self.socks.pop(address, []):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, sock: socket.socket, s: Serve) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._talk, args=(conn, s), daemon=True).start()

    def _talk(self, conn: socket.socket, s: Serve) -> None:
        conn.settimeout(5)
        try:
            if s.kind == "https":
                assert self.tls is not None
                conn = self.tls.wrap_socket(conn, server_side=True)
            if s.kind in ("http", "https"):
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                head = f"HTTP/1.1 {s.status} X\r\nContent-Length: {len(PAGE)}\r\nConnection: close\r\n\r\n"
                conn.sendall(head.encode() + PAGE)
            elif s.kind == "smtp":
                conn.sendall(b"220 real ESMTP\r\n")
                for line in conn.makefile("rb"):
                    if line.upper().startswith(b"QUIT"):
                        conn.sendall(b"221 bye\r\n")
                        return
                    conn.sendall(b"250 ok\r\n")
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def _datagrams(self, sock: socket.socket, s: Serve) -> None:
        while True:
            try:
                data, peer = sock.recvfrom(2048)
            except OSError:
                return
            try:
                sock.sendto(dns_answer(data) if s.kind == "dns" else data, peer)
            except (OSError, ValueError, struct.error):
                continue


def dns_answer(query: bytes) -> bytes:
    """NOERROR with one record of the asked type (A or AAAA; none for another type)."""
    ident, _, qd = struct.unpack_from("!HHH", query)
    end = 12
    while query[end]:
        end += query[end] + 1
    end += 5
    question = query[12:end]
    qtype = struct.unpack_from("!H", query, end - 4)[0]
    rdata = {1: bytes([198, 18, 0, 1]), 28: ipaddress.IPv6Address("2001:db8::1").packed}.get(qtype)
    head = struct.pack("!HHHHHH", ident, 0x8180, 1, 1 if rdata else 0, 0, 0)
    answer = struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(rdata)) + rdata if rdata else b""
    return head + question + answer


def settle(differ_from: list[str] | None = None, stable: float = 5.0, limit: float = 60.0) -> list[str]:
    """The table once it has stayed the same for `stable` s (and differs from `differ_from`);
    at `limit`, whatever it is then (the comparison shows the difference)."""
    start = time.monotonic()
    last, since = rules(), time.monotonic()
    while time.monotonic() - start < limit:
        time.sleep(0.2)
        now = rules()
        if now != last:
            last, since = now, time.monotonic()
        if now and now != differ_from and time.monotonic() - since >= stable:  # [] until the daemon is up
            return now
    return last


@pytest.fixture
def reals(tmp_path: Path) -> Iterator[Reals]:
    if not IN_VM:  # the body runs in the VM; on the host only the report
        yield Reals(tmp_path)
        return
    r = Reals(tmp_path)
    try:
        yield r
    finally:
        r.close()
        ipvsadm("-C")


@pytest.mark.parametrize(
    "conf",
    [p if p.name in IN_CI else pytest.param(p, marks=SLOW) for p in [*START_CORPUS, *SLOW_CORPUS]],
    ids=lambda p: p.name,
)
def test_keepalived_and_its_import_agree_before_and_after_a_real_fails(
    ipvs: Lab, reals: Reals, tmp_path: Path, conf: Path
) -> None:
    conf = copy_rewritten(conf, tmp_path / "conf", fast=True)
    imported = tmp_path / "ipvsmgr.yaml"
    run = ipvs.cli("import", "keepalived", str(conf), "-o", str(imported), "--config-id", CONFIG_ID)
    assert run.returncode in (0, 1), run.stderr
    doc = yaml.safe_load(imported.read_text())
    doc.pop("vrrp", None)  # the IPVS half: the VRRP half is tests/netns/test_import_vrrp_corpus.py
    doc.get("ipvs", {}).pop("connection_sync", None)
    imported.write_text(yaml.safe_dump(doc))
    serving = wanted(doc)
    reals.setup({r for r, _ in serving} | {s.address for _, s in serving})
    reals.sources({s.source for _, s in serving if s.source})
    if any(s.kind == "https" for _, s in serving):
        from tests.netns.certs import CA

        reals.tls = CA(tmp_path).issue(dns=("real.test",)).server_context()

    def start_servers() -> None:
        for a in reals.addresses:
            reals.add(a)
        for _, s in serving:
            reals.serve(s)

    Proc = subprocess.Popen[bytes]

    def one(start: Callable[[], Proc]) -> tuple[list[str], list[str], str]:
        start_servers()
        proc = start()
        try:
            healthy = settle()
            up = {_real_address(line) for line in healthy if line.startswith("-a") and " -w 0" not in line}
            # not a real that is also a virtual address (the virtual_server_group sample has one): IPVS
            # takes the daemon's own check of it (LOCAL_OUT) to another real, so it never fails
            vips = {
                line.split()[2].rsplit(":", 1)[0].strip("[]") for line in healthy if line.startswith("-A")
            }
            checked = [r for r, s in serving if s.kind not in ("none", "script")]
            if not checked:  # no checker in the file: the table with every real is the comparison
                return healthy, healthy, ""
            victim = next((r for r in checked if r in up and r not in vips), None)
            assert victim is not None, f"no real with a check is up: {healthy}"
            reals.stop(victim)
            if any(s.kind == "icmp" for r, s in serving if r == victim):
                reals.remove(victim)
            failed = settle(differ_from=healthy)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
            for a in list(reals.socks) + list(reals.files):
                reals.stop(a)
        ipvsadm("-C")
        return healthy, failed, victim

    def keepalived() -> Proc:
        argv = ["keepalived", "--check", "--dont-fork", "--log-console", "-i", CONFIG_ID, "-f", str(conf),
                "-p", str(tmp_path / "k.pid"), "-c", str(tmp_path / "c.pid")]  # fmt: skip
        with (tmp_path / "keepalived.log").open("w") as out:
            return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    ka_healthy, ka_failed, victim = one(keepalived)
    im_healthy, im_failed, im_victim = one(lambda: ipvs.daemon(str(imported), tmp_path / "ipvsmgr.log"))
    said = f"\n{imported.read_text()}\n{(tmp_path / 'ipvsmgr.log').read_text()[-4000:]}"
    assert ka_failed != ka_healthy or not victim, f"keepalived did not act on {victim} failing: {ka_failed}"
    assert im_victim == victim
    assert (
        im_healthy == ka_healthy
    ), f"every real serving:\nipvsmgr {im_healthy}\nkeepalived {ka_healthy}{said}"
    assert im_failed == ka_failed, f"{victim} failed:\nipvsmgr {im_failed}\nkeepalived {ka_failed}{said}"


def _real_address(line: str) -> str:
    """The real's address in an `ipvsadm -Sn` -a line (198.18.0.1:80, [2001:db8::1]:80)."""
    hostport = line.split()[line.split().index("-r") + 1]
    return hostport.rsplit(":", 1)[0].strip("[]")
