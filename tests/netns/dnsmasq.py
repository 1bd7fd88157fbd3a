"""A real DNS server for the discovery tests: dnsmasq on loopback, records the test rewrites.

A and AAAA records come from a hosts file (re-read on SIGHUP, so a change
needs no restart); SRV records from the command line (a change restarts
it). `--local` makes names under the zone NXDOMAIN rather than forwarded,
and nothing is forwarded anywhere.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

ZONE = "svc.test"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dnsmasq:
    def __init__(self, work: Path, ttl: int = 1) -> None:
        self.hosts = work / "hosts"
        self.hosts.write_text("")
        self.port = free_port()
        self.ttl = ttl
        self.srv: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [
            "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
            "--listen-address=127.0.0.1", "--bind-interfaces", f"--port={self.port}",
            f"--addn-hosts={self.hosts}", f"--local-ttl={self.ttl}", f"--local=/{ZONE}/",
            "--user=root", "--pid-file=", *(f"--srv-host={s}" for s in self.srv),
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # up once it answers over TCP
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise AssertionError("dnsmasq did not start")

    def set_hosts(self, records: dict[str, list[str]]) -> None:
        """name -> addresses (A and AAAA alike), then SIGHUP: dnsmasq reads the file again."""
        lines = [f"{a} {name}.{ZONE}" for name, addrs in records.items() for a in addrs]
        self.hosts.write_text("\n".join(lines) + "\n")
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)

    def set_srv(self, records: list[tuple[str, str, int, int, int]]) -> None:
        """(service name, target, port, priority, weight) each; restarts dnsmasq."""
        self.srv = [f"{n}.{ZONE},{t}.{ZONE},{port},{prio},{weight}" for n, t, port, prio, weight in records]
        self.stop()
        self.start()

    def pause(self) -> None:
        """Stop answering (SIGSTOP): the asks time out."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@contextlib.contextmanager
def dnsmasq(work: Path, ttl: int = 1) -> Iterator[Dnsmasq]:
    d = Dnsmasq(work, ttl)
    try:
        yield d
    finally:
        d.stop()
