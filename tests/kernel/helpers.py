"""Helpers for tests that run inside the VM: ipvsadm as the independent reader."""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ipvsmgr.config import load_text
from ipvsmgr.ipvs.client import IPVSClient
from ipvsmgr.reconcile import engine
from ipvsmgr.reconcile.state import StateStore

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def sh(*argv: str, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def ipvsadm(*args: str) -> str:
    return sh("ipvsadm", *args)


def rules() -> list[str]:
    """`ipvsadm -Sn` lines, sorted, as the independent view of the kernel table."""
    return sorted(line for line in ipvsadm("-Sn").splitlines() if line.strip())


@dataclass
class Lab:
    state_dir: str
    work: Path

    def cli(self, *args: str, config: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real `ipvsmgr` in a fresh process (as an operator would)."""
        argv = [sys.executable, "-m", "ipvsmgr", *args]
        if config:
            argv += ["-c", config]
        env = dict(os.environ, IPVSMGR_STATE_DIR=self.state_dir, PYTHONPATH=str(ROOT))
        return subprocess.run(argv, capture_output=True, text=True, env=env, check=False)

    def write(self, name: str, text: str) -> str:
        path = self.work / name
        path.write_text(text)
        return str(path)

    def reconcile(self, text: str, apply: bool = True, now: float | None = None) -> engine.Round:
        """One in-process round (plan, then apply), with a fresh netlink socket."""
        cfg = load_text(text, "test.yaml")
        store = StateStore(self.state_dir)
        with IPVSClient() as client:
            rnd = engine.plan(cfg, client, store, now=now)
            if apply:
                engine.apply(rnd, client, store)
            return rnd


_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(name: str, fn: Callable[[], T]) -> T:
    """Run fn with this thread inside network namespace `name` (sockets stay there)."""
    result: list[Any] = []

    def body() -> None:
        with open(f"/var/run/netns/{name}") as target:
            if _libc.setns(target.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            result.append(fn())

    # a throwaway thread: its namespace switch never leaks into the caller
    errors: list[BaseException] = []

    def run() -> None:
        try:
            body()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return result[0]  # type: ignore[no-any-return]


def listener(ns: str, addr: str, port: int) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(64)
        return s

    return in_netns(ns, make)


def connect(ns: str, addr: str, port: int, timeout: float = 10.0) -> socket.socket:
    def make() -> socket.socket:
        return socket.create_connection((addr, port), timeout=timeout)

    return in_netns(ns, make)
