"""A two-namespace lab on the host kernel: a client namespace and a server
namespace joined by a veth pair (198.18.200.1 <-> 198.18.200.2, and
2001:db8:200::1 <-> ::2). Nothing is sent from the root namespace: the code
under test runs in a thread that has entered the client namespace, servers
run in threads or processes inside the server namespace.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from healthchecks.result import Result
from ipvsmgr.lab import enter as enter  # one namespace toolkit for the product's lab and the tests
from ipvsmgr.lab import in_netns as in_netns
from ipvsmgr.lab import sh as sh

T = TypeVar("T")

CLIENT4, SERVER4 = "198.18.200.1", "198.18.200.2"
CLIENT6, SERVER6 = "2001:db8:200::1", "2001:db8:200::2"


@dataclass
class Lab:
    client: str
    server: str
    _threads: list[threading.Thread] = field(default_factory=list)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def in_client(self, fn: Callable[[], T]) -> T:
        return in_netns(self.client, fn)

    def in_server(self, fn: Callable[[], T]) -> T:
        return in_netns(self.server, fn)

    def run(self, coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run an asyncio coroutine (made by coro_fn) on a fresh loop in the client namespace."""
        return in_netns(self.client, lambda: asyncio.run(coro_fn()))

    def serve(self, target: Callable[[], None]) -> threading.Thread:
        """Start a daemon thread in the server namespace (a server's accept loop)."""

        def body() -> None:
            enter(self.server)
            target()

        t = threading.Thread(target=body, daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def closing_listener(
        self, address: str, port: int, backlog: int = 256, served: Counter[str] | None = None
    ) -> socket.socket:
        """A TCP listener in the server namespace that accepts and closes at once
        (what a health check or a flood needs of a server), counting connections
        per local address in `served`; closing the socket ends it."""

        def listen() -> socket.socket:
            s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, port))
            s.listen(backlog)
            return s

        lsock = self.in_server(listen)

        def accept() -> None:
            while True:
                try:
                    conn, _ = lsock.accept()
                except OSError:
                    return
                if served is not None:
                    served[conn.getsockname()[0]] += 1
                conn.close()

        threading.Thread(target=accept, daemon=True).start()
        return lsock

    def spawn(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        """Start a process in the server namespace (nsenter keeps /sys as it is)."""
        p = subprocess.Popen(["nsenter", f"--net=/run/netns/{self.server}", *argv], **kw)
        self._procs.append(p)
        return p

    def close(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        sh("ip", "netns", "del", self.client, check=False)
        sh("ip", "netns", "del", self.server, check=False)


def make_lab() -> Lab:
    tag = uuid.uuid4().hex[:6]
    client, server = f"hc-c-{tag}", f"hc-s-{tag}"
    sh("ip", "netns", "add", client)
    sh("ip", "netns", "add", server)
    lab = Lab(client, server)
    try:
        veth = ["link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", server]
        sh("ip", "-n", client, *veth)
        for ns, a4, a6 in ((client, CLIENT4, CLIENT6), (server, SERVER4, SERVER6)):
            sh("ip", "-n", ns, "addr", "add", f"{a4}/24", "dev", "veth0")
            sh("ip", "-n", ns, "addr", "add", f"{a6}/64", "dev", "veth0", "nodad")
            sh("ip", "-n", ns, "link", "set", "veth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # Static neighbours: a fresh pair leaves the first IPv6 neighbour
        # solicitation unanswered (1 s retransmit), which a 1 s check sees as a timeout.
        macs = {ns: _mac(ns) for ns in (client, server)}
        for ns, peer, addr4, addr6 in (
            (client, server, SERVER4, SERVER6),
            (server, client, CLIENT4, CLIENT6),
        ):
            for addr in (addr4, addr6):
                sh("ip", "-n", ns, "neigh", "replace", addr, "lladdr", macs[peer], "dev", "veth0")
    except BaseException:
        lab.close()
        raise
    return lab


def _mac(ns: str) -> str:
    return str(json.loads(sh("ip", "-j", "-n", ns, "link", "show", "veth0"))[0]["address"])


def down(result: Result) -> str:
    """The reason of a failed result (and that it failed)."""
    assert not result.ok, "expected a failure"
    assert result.reason
    return result.reason


def have_root() -> bool:
    return os.geteuid() == 0
