"""keepalived's sync group notify_master / notify_backup / notify_fault / notify_stop and
notify: commands run as a sync group as a whole changes state. Sans-IO: fed each member's
state as the VRRP process reports it, it says which commands are due; the caller runs them
(one at a time per group, ipvsmgr/quorumcmd.py).

A group is MASTER when every member is, BACKUP when every member is, FAULT as soon as one
member is (its members follow one another, so mixed states last only a moment and run
nothing). STOP is the daemon stopping."""

from __future__ import annotations

from dataclasses import dataclass

Argv = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GroupNotify:
    on: tuple[tuple[str, Argv], ...] = ()  # (master|backup|fault|stop, argv) run as written
    notify: Argv = ()  # the group's name and state appended
    notify_keepalived: Argv = ()  # GROUP, the name and the state (MASTER...) appended, as keepalived

    def commands(self, group: str, state: str) -> list[Argv]:
        """What runs as the group enters state, in keepalived's order: the state's own, then notify."""
        out = [argv for when, argv in self.on if when == state]
        if self.notify:
            out.append((*self.notify, group, state))
        if self.notify_keepalived:
            out.append((*self.notify_keepalived, "GROUP", group, state.upper()))
        return out


def group_state(states: list[str]) -> str | None:
    """The group's state from its members' (None while they disagree)."""
    if "fault" in states:
        return "fault"
    if states and all(s == "master" for s in states):
        return "master"
    if states and all(s == "backup" for s in states):
        return "backup"
    return None


Groups = tuple[tuple[str, tuple[str, ...]], ...]  # (name, member instance names)


class GroupNotifier:
    def __init__(self, groups: Groups, notify: dict[str, GroupNotify]) -> None:
        self.members = dict(groups)
        self.notify = notify
        self.states: dict[str, str] = {}  # instance -> its last reported state
        self.group: dict[str, str] = {}  # group -> the state its commands last ran for

    def update(self, groups: Groups, notify: dict[str, GroupNotify]) -> None:
        """A reload: groups keep their state; a group that left forgets it."""
        self.members, self.notify = dict(groups), notify
        self.group = {g: s for g, s in self.group.items() if g in self.members}

    def changed(self, instance: str, state: str) -> list[tuple[str, list[Argv]]]:
        """(group, commands) due now that instance is in state."""
        self.states[instance] = state
        out = []
        for g, members in self.members.items():
            if instance not in members:
                continue
            now = group_state([self.states.get(m, "init") for m in members])
            if now is None or self.group.get(g) == now:
                continue
            self.group[g] = now
            commands = self.notify[g].commands(g, now) if g in self.notify else []
            if commands:
                out.append((g, commands))
        return out

    def stopping(self) -> list[tuple[str, list[Argv]]]:
        """The groups' stop commands, as the daemon stops."""
        out = []
        for g in self.members:
            commands = self.notify[g].commands(g, "stop") if g in self.notify else []
            if commands:
                out.append((g, commands))
        return out
