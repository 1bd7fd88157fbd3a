"""Many listening endpoints for bench/health_checks.py, in one epoll loop.

    python -m bench.health_server --reals 5000 --mode tcp|http --lifetime 300

Run inside the benchmark's server namespace (nsenter --net=...): it listens on
`endpoints(reals)` (up to 50 addresses 198.18.1.1-50, ports from 20000), which
the benchmark has put on the namespace's veth.

- tcp: accept and close at once (a TCP check only needs the handshake, which
  the kernel completes; accepting keeps the backlogs empty).
- http: accept, read the request, answer a tiny `200 OK` (Content-Length,
  Connection: close) and close.

Prints `ready` once every socket listens; on SIGUSR1 prints
`count <connections served> <time.monotonic()>`. Stops by itself after
--lifetime seconds, and when its parent dies.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import select
import signal
import socket
import sys
import time
from types import FrameType

SERVER_NET = "198.18.1."  # server addresses 198.18.1.1 ... 198.18.1.50
MAX_ADDRESSES = 50
FIRST_PORT = 20000
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
_PR_SET_PDEATHSIG = 1


def endpoints(n: int) -> list[tuple[str, int]]:
    """n (address, port) pairs, address-major: 50 addresses x ceil(n / 50) ports."""
    if n < 1:
        raise ValueError("need at least one endpoint")
    addresses = min(MAX_ADDRESSES, n)
    ports = -(-n // addresses)
    return [(f"{SERVER_NET}{a + 1}", FIRST_PORT + p) for a in range(addresses) for p in range(ports)][:n]


def raise_nofile(want: int = 1 << 16) -> int:
    """Raise RLIMIT_NOFILE (the hard limit too when root may); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def die_with_parent() -> None:
    """Get SIGTERM when the parent process dies (so a killed benchmark leaves nothing behind)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


def serve(reals: int, mode: str, lifetime: float) -> None:
    served = [0]

    def report(signum: int, frame: FrameType | None) -> None:
        sys.stdout.write(f"count {served[0]} {time.monotonic():.6f}\n")
        sys.stdout.flush()

    poller = select.epoll()
    listeners: dict[int, socket.socket] = {}
    for address, port in endpoints(reals):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        s.listen(1024)
        s.setblocking(False)
        listeners[s.fileno()] = s
        poller.register(s.fileno(), select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    signal.signal(signal.SIGUSR1, report)
    print("ready", flush=True)
    tcp = mode == "tcp"
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        for fd, _ in poller.poll(1.0):
            listener = listeners.get(fd)
            if listener is not None:
                while True:  # drain the backlog
                    try:
                        if tcp:
                            os.close(listener._accept()[0])  # type: ignore[attr-defined]
                            served[0] += 1
                            continue
                        conn, _ = listener.accept()
                    except OSError:  # BlockingIOError: backlog empty (or EMFILE: retried on next poll)
                        break
                    conn.setblocking(False)
                    conns[conn.fileno()] = conn
                    poller.register(conn.fileno(), select.EPOLLIN)
                continue
            conn = conns.pop(fd)
            poller.unregister(fd)
            try:
                if conn.recv(4096):  # the check's request comes in one segment
                    conn.send(RESPONSE)
                    served[0] += 1
            except OSError:
                pass
            conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reals", type=int, required=True)
    ap.add_argument("--mode", choices=("tcp", "http"), required=True)
    ap.add_argument("--lifetime", type=float, required=True, help="seconds until it exits by itself")
    args = ap.parse_args()
    die_with_parent()
    raise_nofile()
    serve(args.reals, args.mode, args.lifetime)


if __name__ == "__main__":
    main()
