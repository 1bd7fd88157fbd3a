"""The daemon's files in its state directory against hostile contents: each
is a one-line logged fallback or a one-line error, never a crash or a hang,
and writes never go through a name someone else prepared (issue 19)."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from pathlib import Path

import pytest

from ipvsmgr import statefile
from ipvsmgr.reconcile.overrides import Overrides, OverrideStore
from ipvsmgr.reconcile.state import State, StateStore


def store_with(tmp_path: Path, content: str | None = None) -> OverrideStore:
    store = OverrideStore(str(tmp_path))
    if content is not None:
        Path(store.path).write_text(content)
    return store


def loaded(store: OverrideStore | StateStore, caplog: pytest.LogCaptureFixture) -> tuple[object, str]:
    """load() on a thread with a deadline (a FIFO must not hang it), and its one warning."""
    caplog.clear()
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(store.load()), daemon=True)
    t.start()
    t.join(5)
    assert out, "load() hung"
    lines = [r.getMessage() for r in caplog.records if r.name == "ipvsmgr.state"]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    return out[0], lines[0]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ('{"node_drained": "false"}', "node_drained is 'false', not true or false"),
        ('{"vrrp_released": {"v4m": 0}}', "vrrp_released is a dict, not a list"),
        ('{"vrrp_released": [7]}', "vrrp_released holds something other than names"),
        ('{"xdp_block": [{"prefix": "198.18.0.0/24", "action": "nuke"}]}', "xdp_block holds"),
        ('{"drained": [{"service": {"af": "2"}}]}', "not a whole number"),
        ("[1, 2]", "holds a list, not an object"),
        ("\xff", "not JSON"),
    ],
    ids=["nested", "string-bool", "dict-list", "non-string", "bad-action", "string-int", "list", "binary"],
)
def test_bad_overrides_fall_back_to_none_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, why: str
) -> None:
    store = store_with(tmp_path, content)
    got, line = loaded(store, caplog)
    assert got == Overrides()
    assert line.startswith("ignoring the overrides file: ") and why in line, line
    assert Path(store.path + ".bad").exists() and not Path(store.path).exists()


def test_strict_types_still_read_a_good_file(tmp_path: Path) -> None:
    store = OverrideStore(str(tmp_path))
    o = Overrides(released=frozenset({"v4m"}), node_drained=True, xdp_block=(("198.18.7.0/24", "tarpit"),))
    store.save(o)
    assert store.load() == o


def test_special_files_are_refused_without_following_or_hanging(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = OverrideStore(str(tmp_path))
    os.symlink("/dev/zero", store.path)
    got, line = loaded(store, caplog)
    assert got == Overrides() and "is a symbolic link; not followed" in line, line
    os.unlink(store.path + ".bad")
    os.mkfifo(store.path)
    got, line = loaded(store, caplog)
    assert got == Overrides() and "is a FIFO, not a regular file" in line, line
    os.unlink(store.path + ".bad")
    Path(store.path).write_bytes(b" " * (statefile.MAX_BYTES + 1))
    got, line = loaded(store, caplog)
    assert got == Overrides() and "more than the" in line, line
    state = StateStore(str(tmp_path))
    os.mkfifo(state.path)
    got, line = loaded(state, caplog)
    assert got == State() and "is a FIFO" in line, line


def test_writes_never_follow_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    store = OverrideStore(str(tmp_path / "state"))
    os.makedirs(store.directory, mode=0o750)
    # the temporary names the daemon used to use, and the file itself, all planted
    for pid in range(os.getpid() - 5, os.getpid() + 5):
        os.symlink(victim, os.path.join(store.directory, f".overrides.json.{pid}.tmp"))
    os.symlink(victim, store.path)
    store.save(Overrides(node_drained=True))
    assert victim.read_text() == "precious"
    st = os.lstat(store.path)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    assert json.loads(Path(store.path).read_text())["node_drained"] is True


@pytest.mark.parametrize(("mode", "who"), [(0o770, "group"), (0o757, "others"), (0o777, "group and others")])
def test_a_state_directory_others_may_write_is_refused(tmp_path: Path, mode: int, who: str) -> None:
    d = tmp_path / "state"
    d.mkdir()
    d.chmod(mode)
    with pytest.raises(statefile.StateFileError) as e:
        statefile.check_directory(str(d))
    assert f"is writable by {who}" in str(e.value) and "\n" not in str(e.value)
    d.chmod(0o750)
    statefile.check_directory(str(d))
    link = tmp_path / "link"
    link.symlink_to(d)
    with pytest.raises(statefile.StateFileError, match="symbolic link"):
        statefile.check_directory(str(link))


def test_a_missing_state_directory_is_made_private(tmp_path: Path) -> None:
    d = tmp_path / "new" / "state"
    statefile.check_directory(str(d))
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o750


logging.getLogger("ipvsmgr.state").setLevel(logging.INFO)
