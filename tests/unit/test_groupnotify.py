"""Sync group notify: commands as the group as a whole changes state (keepalived's)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ipvsmgr.groupnotify import GroupNotifier, GroupNotify, group_state

N = GroupNotify(
    on=(("master", ("/bin/m",)), ("backup", ("/bin/b",)), ("fault", ("/bin/f",)), ("stop", ("/bin/s",))),
    notify=("/bin/n",),
    notify_keepalived=("/bin/k",),
)


def test_the_group_state_is_its_members_once_they_agree_and_fault_at_once() -> None:
    assert group_state(["master", "master"]) == "master"
    assert group_state(["backup", "backup"]) == "backup"
    assert group_state(["master", "backup"]) is None  # following one another: a moment
    assert group_state(["master", "fault"]) == "fault"
    assert group_state(["init", "backup"]) is None


def test_commands_run_once_per_group_change_in_keepalived_order() -> None:
    g = GroupNotifier((("G1", ("a", "b")), ("G2", ("c", "d"))), {"G1": N})
    assert g.changed("a", "backup") == []
    assert g.changed("b", "backup") == [
        ("G1", [("/bin/b",), ("/bin/n", "G1", "backup"), ("/bin/k", "GROUP", "G1", "BACKUP")])
    ]
    assert g.changed("a", "master") == []  # b not yet
    assert g.changed("b", "master")[0][1][0] == ("/bin/m",)
    assert g.changed("b", "master") == []  # no change, nothing again
    assert g.changed("c", "master") == [] and g.changed("d", "master") == []  # G2 has no commands
    assert g.changed("a", "fault")[0][1][0] == ("/bin/f",)
    assert g.stopping() == [
        ("G1", [("/bin/s",), ("/bin/n", "G1", "stop"), ("/bin/k", "GROUP", "G1", "STOP")])
    ]


def test_a_reload_keeps_the_state_of_groups_that_stay() -> None:
    g = GroupNotifier((("G1", ("a", "b")),), {"G1": N})
    g.changed("a", "master")
    g.changed("b", "master")
    g.update((("G1", ("a", "b")),), {"G1": N})
    assert g.changed("a", "master") == []  # still master: no second notify_master
    g.update((), {})
    assert g.changed("a", "backup") == [] and g.group == {}


def test_a_full_queue_drops_whole_changes_never_half_of_one(tmp_path: Path) -> None:
    from ipvsmgr.quorumcmd import Commands
    from vrrp.service import NOTIFY_QUEUE

    log = tmp_path / "ran"

    def say(word: str) -> tuple[str, ...]:
        return ("/bin/sh", "-c", f"echo {word} >> {log}")

    async def body() -> int:
        c = Commands()
        for i in range(NOTIFY_QUEUE + 2):  # queued before the worker runs: the oldest two go
            c.enqueue("sync group g", say(f"{i}a"), say(f"{i}b"))
        await c.drain()
        return c.skipped

    assert asyncio.run(body()) == 2
    want = [f"{i}{x}" for i in range(2, NOTIFY_QUEUE + 2) for x in "ab"]
    assert log.read_text().split() == want
