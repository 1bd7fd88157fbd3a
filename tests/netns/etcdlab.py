"""A real etcd (Debian's etcd-server, 3.4) on loopback for the discovery and fleet tests, driven
through its JSON gateway with the standard library: put, delete, leases, compaction, kill -9 and
start again on the same data."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def available() -> bool:
    return shutil.which("etcd") is not None


class Etcd:
    def __init__(self, work: Path, listen: str = "127.0.0.1") -> None:
        self.listen = listen  # 0.0.0.0: reachable from the test's namespaces too
        self.data = work / "etcd-data"
        self.port, self.peer = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = work / "etcd.log"
        self.start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"http://127.0.0.1:{self.port}"
        argv = ["etcd", "--name", "t", "--data-dir", str(self.data),
                "--listen-client-urls", f"http://{self.listen}:{self.port}", "--advertise-client-urls", url,
                "--listen-peer-urls", f"http://127.0.0.1:{self.peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer}",
                "--initial-cluster", f"t=http://127.0.0.1:{self.peer}"]  # fmt: skip
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                self.call("/v3/kv/range", {"key": _b64("/")})
                return
            time.sleep(0.1)
        raise AssertionError("etcd did not start: " + self.log.read_text()[-2000:])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            f"http://{self.endpoint}{path}", json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def put(self, key: str, value: Any, lease: int | None = None) -> int:
        text = value if isinstance(value, str) else json.dumps(value)
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(text)}
        if lease is not None:
            body["lease"] = str(lease)
        return int(self.call("/v3/kv/put", body)["header"]["revision"])

    def delete(self, key: str) -> int:
        return int(self.call("/v3/kv/deleterange", {"key": _b64(key)})["header"]["revision"])

    def lease(self, ttl: int) -> int:
        return int(self.call("/v3/lease/grant", {"TTL": str(ttl)})["ID"])

    def compact(self) -> int:
        rev = int(self.call("/v3/kv/range", {"key": _b64("/")})["header"]["revision"])
        self.call("/v3/kv/compaction", {"revision": str(rev), "physical": True})
        return rev

    def get(self, key: str) -> str | None:
        kvs = self.call("/v3/kv/range", {"key": _b64(key)}).get("kvs", [])
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@contextlib.contextmanager
def etcd(work: Path, listen: str = "127.0.0.1") -> Iterator[Etcd]:
    e = Etcd(work, listen)
    try:
        yield e
    finally:
        e.stop()
