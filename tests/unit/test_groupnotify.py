"""Sync group notify: commands as the group as a whole changes state (keepalived's)."""

from __future__ import annotations

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
