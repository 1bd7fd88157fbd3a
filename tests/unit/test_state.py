"""The ownership/drain state file: round trip, damage tolerance, and the apply lock."""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from ipvsmgr.ipvs.model import DestKey, ServiceKey
from ipvsmgr.reconcile.state import State, StateStore

SVC = ServiceKey(socket.AF_INET, 6, "198.18.0.10", 80)
SVC6 = ServiceKey(socket.AF_INET6, 0, "", 0, 42)
REAL = DestKey(socket.AF_INET, "198.18.1.1", 8080)


def test_round_trip(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "st"))
    assert store.load() == State()
    state = State(owned={SVC, SVC6}, drain_started={(SVC, REAL): 1234.5})
    store.save(state)
    assert store.load() == state
    assert [p.name for p in (tmp_path / "st").iterdir()] == ["state.json"]  # no temp file left


@pytest.mark.parametrize("damage", ["", "{", "[]", '{"owned": [{"af": 2}]}', '{"draining": 5}', "\x00\x01"])
def test_damaged_file_is_ignored_with_a_warning(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore(str(tmp_path))
    Path(store.path).write_text(damage)
    assert store.load() == State()
    [line] = [r.getMessage() for r in caplog.records if r.name == "ipvsmgr.state"]
    assert line.startswith("ignoring the state file: ") and "\n" not in line, line
    assert Path(store.path + ".bad").read_text() == damage  # kept for the operator


def test_lock_serialises_applies(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "st"))
    order: list[str] = []
    with store.locked():
        fd = os.open(os.path.join(store.directory, "lock"), os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)

        def second() -> None:
            with store.locked():
                order.append("second")

        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.1)
        order.append("first done")
    t.join(5)
    assert order == ["first done", "second"]
