"""Shared by the XDP tests and benchmarks: a guard loaded under a private pin
directory, table setup, BPF_PROG_TEST_RUN with counter deltas, scapy packets."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bpf_offload import guard, layout, libbpf
from bpf_offload.tables import Service, Tables, desired_maps, diff

ROOT = Path(__file__).resolve().parents[2]
VIP4, VIP6 = "198.18.1.10", "2001:db8:1::10"
CLIENT4, CLIENT6 = "198.18.0.7", "2001:db8::7"
MAC_C, MAC_S = "02:00:00:00:00:01", "02:00:00:00:00:02"


def build_object() -> Path:
    """The object from source, as CI and packaging build it (make is a no-op when fresh)."""
    subprocess.run(["make", "-s", "-C", str(ROOT / "bpf_offload")], check=True)
    return ROOT / "bpf_offload" / guard.OBJECT_NAME


@contextmanager
def loaded(program: str = guard.PROGRAM) -> Iterator[guard.LoadedGuard]:
    pin = f"/sys/fs/bpf/ipvsmgr-test-{uuid.uuid4().hex[:8]}"
    g = guard.LoadedGuard(build_object(), pin, program)
    try:
        yield g
    finally:
        g.close()
        guard.unpin(pin)
        assert not os.path.exists(pin)


def services(*addresses: str) -> frozenset[Service]:
    """TCP 80 and UDP 53 on each address."""
    return frozenset(Service(a, p, proto) for a in addresses for p, proto in ((80, 6), (53, 17)))


def set_tables(g: guard.LoadedGuard, tables: Tables) -> None:
    current = g.read_synced()
    g.apply(diff(desired_maps(tables, current["vips"]), current))


def stats(g: guard.LoadedGuard) -> dict[str, int]:
    return {k: p for k, (p, _) in guard.read_stats(g.maps).items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


ACTIONS = {0: "aborted", 1: "drop", 2: "pass", 3: "tx", 4: "redirect"}


def run(g: guard.LoadedGuard, packet: bytes) -> tuple[str, bytes, dict[str, int]]:
    """One packet through the program: (verdict, packet out, which counters moved)."""
    before = stats(g)
    action, out, _ = libbpf.test_run(g.prog_fd, packet)
    return ACTIONS[action], out, delta(before, stats(g))


def reason_of(moved: dict[str, int]) -> str:
    assert len(moved) == 1 and next(iter(moved.values())) == 1, moved
    return next(iter(moved))


__all__ = ["layout"]
