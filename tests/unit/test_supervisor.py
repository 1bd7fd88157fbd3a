"""The supervisor (runtime.Daemon) over its parts: start order, a reload handed
to every part with the old and new configuration, a refused reload handed to
none, and every started part stopped even when one fails to stop.

The real parts are replaced by recorders: what is under test is the order
and fan-out, which no kernel is needed for (the parts themselves run for
real in tests/netns and tests/kernel)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from ipvsmgr.config import Config
from ipvsmgr.runtime import Daemon

FILE = """\
ipvs:
  max_removed_reals: {share}
"""


class Recorder:
    def __init__(self, name: str, log: list[str], fail_stop: bool = False) -> None:
        self.name, self.log, self.fail_stop = name, log, fail_stop

    async def start(self, config: Config) -> None:
        self.log.append(f"start {self.name}")

    async def reload(self, new: Config, old: Config) -> None:
        assert new is not old
        self.log.append(f"reload {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.fail_stop:
            raise RuntimeError("bug")

    def status(self) -> Any:
        return None

    def metrics(self, snap: Any) -> None:
        pass


def daemon_with_recorders(tmp_path: Path, log: list[str]) -> Daemon:
    cfg = tmp_path / "lb.yaml"
    cfg.write_text(FILE.format(share=0.5))
    d = Daemon(str(cfg), str(tmp_path / "state"), resync=0.05)
    d.parts = [Recorder(n, log) for n in ("xdp", "ipvs", "health", "vrrp", "bgp")]  # type: ignore[misc]
    d.stop_order = [d.parts[4], Recorder("failing", log, fail_stop=True), d.parts[3], d.parts[0]]  # type: ignore[list-item]
    d.stop_order.append(d.parts[1])
    return d


def run_briefly(d: Daemon) -> None:
    """Start the daemon, let it run its loop a moment, stop it."""

    async def main() -> None:
        task = asyncio.create_task(d.run())
        await asyncio.sleep(0.3)
        d.stopping.set()
        await task

    asyncio.run(main())


def test_parts_start_in_order_and_only_started_ones_stop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    d = daemon_with_recorders(tmp_path, log)

    with caplog.at_level(logging.ERROR, "ipvsmgr"):
        run_briefly(d)
    assert log[:5] == ["start xdp", "start ipvs", "start health", "start vrrp", "start bgp"]
    # "failing" was never started, so it is not stopped; the health part was not
    # in stop_order: only what is listed there stops, in that order.
    assert log[5:] == ["stop bgp", "stop vrrp", "stop xdp", "stop ipvs"]


def test_a_stop_that_raises_does_not_keep_the_rest_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    d = daemon_with_recorders(tmp_path, log)
    broken = Recorder("broken", log, fail_stop=True)
    d.parts.insert(1, broken)  # type: ignore[arg-type]
    d.stop_order.insert(0, broken)  # type: ignore[arg-type]

    with caplog.at_level(logging.ERROR, "ipvsmgr"):
        run_briefly(d)
    assert log[-5:] == ["stop broken", "stop bgp", "stop vrrp", "stop xdp", "stop ipvs"]
    assert "stopping broken failed" in caplog.text


def test_reload_reaches_every_part_in_order_and_a_refused_one_none(tmp_path: Path) -> None:
    log: list[str] = []
    d = daemon_with_recorders(tmp_path, log)
    results: list[dict[str, Any]] = []

    async def main() -> None:
        task = asyncio.create_task(d.run())
        await asyncio.sleep(0.3)
        Path(d.config_path).write_text(FILE.format(share=0.4))
        results.append(await d.reload())
        Path(d.config_path).write_text("# emptied by a bad template push\n")
        results.append(await d.reload())
        Path(d.config_path).write_text("ipvs: {max_removed_reals: 5}\n")
        results.append(await d.reload())
        d.stopping.set()
        await task

    asyncio.run(main())
    reloads = [line for line in log if line.startswith("reload")]
    assert reloads == ["reload xdp", "reload ipvs", "reload health", "reload vrrp", "reload bgp"]
    assert [r["ok"] for r in results] == [True, False, False]
    assert results[1]["guarded"] and not results[2]["guarded"]
    assert d.config is not None and d.config.max_removed_reals == 0.4  # the accepted one runs
    assert d.counters["reloads_ok"] == 1 and d.counters["reloads_guarded"] == 1
    assert d.counters["reloads_refused"] == 1


def test_the_real_parts_start_with_ipvs_then_the_guard(tmp_path: Path) -> None:
    """IPVS first: on a kernel without it, a file with virtual servers stops the
    start before the XDP guard attaches anything (tests/netns/test_xdp_guard_only.py
    runs that for real); the guard before VRRP and BGP announce a VIP."""
    d = Daemon(str(tmp_path / "lb.yaml"), str(tmp_path / "state"), control_socket=str(tmp_path / "s"))
    names = [p.name for p in d.parts]
    assert names == ["ipvs", "xdp", "health", "discovery", "connection-sync", "vrrp", "bgp", "control"]
    assert [p.name for p in d.stop_order][:2] == ["bgp", "xdp"]
