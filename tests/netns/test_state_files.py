"""A VRRP-only daemon (no IPVS needed) started over hostile files in its state
directory: each is one logged line and a start without run-time overrides,
never a traceback, a crash loop or a hang; a state directory others may
write is refused with one line (issue 19, part 3 and 4)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.netns.vrrplab import VIP4, VrrpLab, ipvsmgr_conf


def nested(path: Path) -> None:
    path.write_text("[" * 200_000 + "]" * 200_000)


def fifo(path: Path) -> None:
    os.mkfifo(path)


def zero(path: Path) -> None:
    os.symlink("/dev/zero", path)


def wrong_types(path: Path) -> None:
    path.write_text('{"node_drained": "false", "vrrp_released": {"vi_1": 0}}')


@pytest.mark.parametrize("plant", [nested, fifo, zero, wrong_types], ids=lambda f: f.__name__)
def test_a_hostile_overrides_file_is_one_line_and_a_normal_start(
    vrrp_lab: VrrpLab, plant: Callable[[Path], None]
) -> None:
    lab = vrrp_lab
    state = lab.work / "im-state"
    state.mkdir(mode=0o750)
    plant(state / "overrides.json")
    p = lab.ipvsmgr("a", ipvsmgr_conf(150), "im")
    # released? no: "vi_1" in a dict must not read as released; it becomes master
    lab.wait_for(lambda: lab.has_address("a", VIP4), 15, "master despite the file")
    assert p.poll() is None
    log = lab.log("im")
    lines = [line for line in log.splitlines() if "ignoring the overrides file" in line]
    assert len(lines) == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert (state / "overrides.json.bad").is_symlink() or (state / "overrides.json.bad").exists()
    # and the daemon can write its own file there again
    lab.ctl("im", "vrrp", "release", "vi_1")
    assert (state / "overrides.json").is_file() and not (state / "overrides.json").is_symlink()


def test_a_state_directory_others_may_write_is_refused(vrrp_lab: VrrpLab) -> None:
    lab = vrrp_lab
    state = lab.work / "im-state"
    state.mkdir()
    state.chmod(0o777)
    p = lab.ipvsmgr("a", ipvsmgr_conf(150), "im")
    t0 = time.monotonic()
    assert p.wait(15) == 1
    assert time.monotonic() - t0 < 15
    out = lab.log("im").strip().splitlines()
    assert (
        out[-1].startswith("ipvsmgr: cannot start: state directory ")
        and "writable by group and others" in out[-1]
    )
    assert not lab.has_address("a", VIP4)
