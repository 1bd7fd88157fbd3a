"""Helpers for tests that run inside the VM: ipvsadm as the independent reader."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ipvsmgr.config import load_text
from ipvsmgr.ipvs.client import IPVSClient
from ipvsmgr.reconcile import engine
from ipvsmgr.reconcile.state import StateStore
from tests.netns.lab import in_netns  # one namespace-switching helper for both suites

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


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

    def cli_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ipvsmgr", *args]

    def env(self) -> dict[str, str]:
        return dict(os.environ, IPVSMGR_STATE_DIR=self.state_dir, PYTHONPATH=str(ROOT))

    def cli(self, *args: str, config: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real `ipvsmgr` in a fresh process (as an operator would)."""
        argv = self.cli_argv(*args)
        if config:
            argv += ["-c", config]
        return subprocess.run(argv, capture_output=True, text=True, env=self.env(), check=False)

    @property
    def socket(self) -> str:
        return str(self.work / "ctl.sock")

    def daemon(self, config: str, log: Path, *extra: str, mode: str = "w") -> subprocess.Popen[bytes]:
        """Start `ipvsmgr run` on `config` (1 s resync, control socket self.socket, metrics off
        unless `extra` says otherwise), its output into `log`."""
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        argv = [sys.executable, "-m", "ipvsmgr", "run", "-c", config, "--state-dir", self.state_dir]
        argv += ["--resync", "1s", "--socket", self.socket]
        if not any(a.startswith("--metrics") for a in extra):
            argv += ["--metrics", "off"]
        with log.open(mode) as out:
            return subprocess.Popen([*argv, *extra], stdout=out, stderr=subprocess.STDOUT, env=env)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The CLI against the daemon's control socket."""
        return self.cli(*args, "--socket", self.socket)

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
