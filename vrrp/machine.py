"""One VRRP virtual router's state machine (RFC 5798 section 6), free of I/O.

Inputs carry the time (`now`, seconds on any monotonic clock); outputs are
actions for the I/O side: send an advertisement with a priority, or a change
of state (which is when the VIPs are added or released). The caller asks
`deadline()` when to call `timer(now)` next. Tests drive it with numbers.

    Initialize --start--> Backup (Master at once if the address owner, priority 255)
    Backup --Master_Down_Timer--> Master
    Backup --advert--> Backup (reset Master_Down_Timer; learn the interval, v3)
    Master --higher advert (or equal from a higher address)--> Backup
    Master --advert with priority 0--> Master, advertising at once
    any --shutdown--> Initialize (a Master sends priority 0 first)
    any --fault--> Fault --fault cleared--> Backup (or Master if the owner)

Beyond the RFC, as keepalived does: a Fault state for tracked interfaces,
preempt_delay (a Backup with preemption waits this long after it first sees
a lower-priority Master before it lets Master_Down_Timer take over), and a
Master that hears a lower-priority Master answers with an advert at once, so
a split brain ends within one round trip rather than one interval.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from vrrp.packet import Advert, IPAddress

OWNER = 255


class State(enum.Enum):
    INIT = "init"
    BACKUP = "backup"
    MASTER = "master"
    FAULT = "fault"


@dataclass(frozen=True, slots=True)
class Send:
    """Send an advertisement now with this priority."""

    priority: int


@dataclass(frozen=True, slots=True)
class Become:
    """The instance changed state; VIPs belong to MASTER only."""

    old: State
    new: State
    reason: str


Action = Send | Become


@dataclass(frozen=True, slots=True)
class Params:
    vrid: int
    priority: int  # 1-255; 255 = address owner
    interval_cs: int  # Advertisement_Interval in centiseconds (v2: a multiple of 100)
    version: int = 3
    preempt: bool = True
    preempt_delay: float = 0.0  # seconds

    def __post_init__(self) -> None:
        if not 1 <= self.vrid <= 255:
            raise ValueError("vrid must be 1-255")
        if not 1 <= self.priority <= 255:
            raise ValueError("priority must be 1-255")
        if not 1 <= self.interval_cs <= 4095:
            raise ValueError("advert interval must be 0.01-40.95 s")
        if self.version not in (2, 3):
            raise ValueError("version must be 2 or 3")


def skew_time(priority: int, master_interval_cs: int, version: int) -> float:
    """Seconds. v3: ((256 - priority) * Master_Adver_Interval) / 256; v2: (256 - priority) / 256."""
    if version == 2:
        return (256 - priority) / 256.0
    return (256 - priority) * master_interval_cs / 256.0 / 100.0


def master_down_interval(priority: int, master_interval_cs: int, version: int) -> float:
    """Seconds: 3 x Master_Adver_Interval + Skew_Time."""
    return 3 * master_interval_cs / 100.0 + skew_time(priority, master_interval_cs, version)


@dataclass
class Machine:
    params: Params
    local_address: IPAddress  # our primary address on the interface: breaks priority ties
    state: State = State.INIT
    priority: int = 0  # effective priority (tracking applied); set at start()
    master_interval_cs: int = 0  # Master_Adver_Interval (learnt from the Master in v3)
    adver_at: float | None = None
    master_down_at: float | None = None
    preempt_at: float | None = None  # a preempt_delay running since a lower Master was first heard
    master_address: IPAddress | None = None  # the Master we last accepted adverts from
    master_priority: int = 0
    transitions: int = 0
    sent: int = 0
    received: int = 0
    became_master: int = 0  # keepalived's become_master / release_master, for its exporter's series
    released_master: int = 0
    zero_received: int = 0  # adverts with priority 0 (a master leaving)

    def __post_init__(self) -> None:
        self.priority = self.params.priority
        self.master_interval_cs = self.params.interval_cs

    # --- inputs ------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        if self.state is not State.INIT:
            return []
        return self._enter_initial(now, "started")

    def shutdown(self, now: float) -> list[Action]:
        """Graceful stop: a Master tells the Backups to take over at once (priority 0)."""
        actions: list[Action] = []
        if self.state is State.MASTER:
            actions.append(self._send(0))
        if self.state is not State.INIT:
            actions.append(self._become(State.INIT, "shutdown"))
        self._clear_timers()
        return actions

    def set_fault(self, fault: bool, now: float, reason: str = "") -> list[Action]:
        """A tracked interface went down (fault=True) or came back."""
        if fault and self.state in (State.BACKUP, State.MASTER):
            actions: list[Action] = []
            if self.state is State.MASTER:
                actions.append(self._send(0))
            self._clear_timers()
            actions.append(self._become(State.FAULT, reason or "fault"))
            return actions
        if not fault and self.state is State.FAULT:
            return self._enter_initial(now, reason or "fault cleared")
        return []

    def set_priority(self, priority: int, now: float) -> list[Action]:
        """Tracking changed the effective priority (clamped to 1-254; an owner stays 255)."""
        if self.params.priority == OWNER:
            return []
        priority = min(254, max(1, priority))
        if priority == self.priority:
            return []
        self.priority = priority
        if self.state is State.MASTER:
            # Tell the Backups now: a Backup with preemption takes over after
            # Master_Down_Interval once it hears a lower priority.
            self.adver_at = now + self.params.interval_cs / 100.0
            return [self._send(priority)]
        return []

    def release(self, now: float, priority: int = 1) -> list[Action]:
        """The operator hands mastership over: tell the Backups to take over at
        once (priority 0), then wait as a Backup at `priority`. Nobody taking
        over within Master_Down_Interval brings this router back as Master."""
        if self.params.priority != OWNER:
            self.priority = min(254, max(1, priority))
        if self.state is not State.MASTER:
            return []
        self.adver_at = None
        self.master_down_at = now + self._master_down()
        return [self._send(0), self._become(State.BACKUP, "released by the operator")]

    def force_master(self, now: float, reason: str) -> list[Action]:
        """A sync group member became Master: follow it."""
        if self.state is not State.BACKUP:
            return []
        return self._to_master(now, reason)

    def force_backup(self, now: float, reason: str) -> list[Action]:
        """A sync group member became Backup: follow it (and wait Master_Down_Interval)."""
        if self.state is not State.MASTER:
            return []
        self.adver_at = None
        self.master_down_at = now + self._master_down()
        return [self._become(State.BACKUP, reason)]

    def timer(self, now: float) -> list[Action]:
        if self.state is State.MASTER and self.adver_at is not None and now >= self.adver_at:
            self.adver_at = now + self.params.interval_cs / 100.0
            return [self._send(self.priority)]
        if self.state is State.BACKUP and self.master_down_at is not None and now >= self.master_down_at:
            return self._to_master(now, "no advert from the master")
        return []

    def receive(self, advert: Advert, src: IPAddress, now: float) -> list[Action]:
        """An advert that passed packet and instance validation."""
        self.received += 1
        if advert.priority == 0:
            self.zero_received += 1
        if self.state is State.BACKUP:
            return self._backup_receive(advert, src, now)
        if self.state is State.MASTER:
            return self._master_receive(advert, src, now)
        return []

    def deadline(self) -> float | None:
        if self.state is State.MASTER:
            return self.adver_at
        if self.state is State.BACKUP:
            return self.master_down_at
        return None

    # --- transitions --------------------------------------------------------------

    def _backup_receive(self, advert: Advert, src: IPAddress, now: float) -> list[Action]:
        if advert.priority == 0:
            # The Master is leaving: take over after Skew_Time, not Master_Down_Interval.
            self.master_down_at = now + skew_time(self.priority, self.master_interval_cs, self.params.version)
            return []
        lower = advert.priority < self.priority
        if lower and self.params.preempt:
            # Known for status (who we are about to preempt), never for the timers.
            self.master_address, self.master_priority = src, advert.priority
            if self.params.preempt_delay <= 0:
                return []  # discard: Master_Down_Timer runs out and we preempt
            if self.preempt_at is None:
                self.preempt_at = now + self.params.preempt_delay
            if now >= self.preempt_at:
                return []
        elif not lower:
            self.preempt_at = None
        self.master_address, self.master_priority = src, advert.priority
        if self.params.version == 3:
            self.master_interval_cs = advert.interval_cs
        self.master_down_at = now + self._master_down()
        return []

    def _master_receive(self, advert: Advert, src: IPAddress, now: float) -> list[Action]:
        if advert.priority == 0:
            self.adver_at = now + self.params.interval_cs / 100.0
            return [self._send(self.priority)]
        if advert.priority > self.priority or (
            advert.priority == self.priority and _addr_key(src) > _addr_key(self.local_address)
        ):
            self.master_address, self.master_priority = src, advert.priority
            if self.params.version == 3:
                self.master_interval_cs = advert.interval_cs
            self.adver_at = None
            self.master_down_at = now + self._master_down()
            self.preempt_at = None
            return [self._become(State.BACKUP, f"higher priority master {src} ({advert.priority})")]
        # A lower-priority Master: out-advertise it now rather than at the next interval.
        self.adver_at = now + self.params.interval_cs / 100.0
        return [self._send(self.priority)]

    def _enter_initial(self, now: float, reason: str) -> list[Action]:
        self.master_interval_cs = self.params.interval_cs
        if self.params.priority == OWNER:
            return self._to_master(now, f"{reason}: address owner")
        self.master_down_at = now + self._master_down()
        self.preempt_at = None
        return [self._become(State.BACKUP, reason)]

    def _to_master(self, now: float, reason: str) -> list[Action]:
        self.master_down_at = None
        self.preempt_at = None
        self.master_address, self.master_priority = self.local_address, self.priority
        self.adver_at = now + self.params.interval_cs / 100.0
        return [self._send(self.priority), self._become(State.MASTER, reason)]

    def _master_down(self) -> float:
        return master_down_interval(self.priority, self.master_interval_cs, self.params.version)

    def _send(self, priority: int) -> Send:
        self.sent += 1
        return Send(priority)

    def _become(self, new: State, reason: str) -> Become:
        old, self.state = self.state, new
        self.transitions += 1
        self.became_master += new is State.MASTER
        self.released_master += old is State.MASTER
        return Become(old, new, reason)

    def _clear_timers(self) -> None:
        self.adver_at = self.master_down_at = self.preempt_at = None


def _addr_key(a: IPAddress) -> int:
    return int(a)
