"""The asyncio side of VRRP: raw sockets, timers, VIPs, tracking, sync groups.

One raw IP socket (protocol 112) per interface and family receives for every
instance there (dispatched by VRID) and sends with the instance's source
address chosen per packet (IP_PKTINFO / IPV6_PKTINFO), so that the v3
checksum, computed over the pseudo-header, matches what goes on the wire.
Multicast loopback is off; packets from our own addresses are dropped too.

Every dropped packet is counted by reason (packet.Drop values plus
`unknown_peer` for a unicast instance hearing a stranger); nothing a peer
sends can raise out of the receive path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import ipaddress
import logging
import os
import socket
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

from healthchecks.checkers.script import ScriptCheck
from healthchecks.hysteresis import Transition
from healthchecks.result import Result, Target
from healthchecks.scheduler import ScheduledCheck, Scheduler
from vrrp.instance import InstanceConfig, TrackScript, check_for_instance
from vrrp.machine import Action, Become, Machine, Send, State, master_down_interval
from vrrp.netlink import Announcer, Host, Link, LinkEvents, read_sysctl, write_sysctl
from vrrp.packet import GROUP4, GROUP6, PROTO, TOS, TTL, Advert, Drop, IPAddress, decode, encode

log = logging.getLogger("ipvsmgr.vrrp")

UNKNOWN_PEER = "unknown_peer"
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; typeshed lacks the name
IPV6_FREEBIND = 78  # Linux >= 4.15
SO_ATTACH_FILTER = 26
BASE_SYSCTLS = {"arp_ignore": "1", "arp_announce": "2"}  # raised (never lowered) on a virtual MAC's base
_DROP_ALL_PROG = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # BPF: ret #0
_DROP_ALL = struct.pack("HL", 1, ctypes.addressof(_DROP_ALL_PROG))  # struct sock_fprog
NOTIFY_TIMEOUT = 10.0
# A notify command's stderr: this much is read (and its first line logged, cut
# to NOTIFY_LINE); then the pipe is closed, so more output ends the command
# (EPIPE) instead of filling memory, the log and the VRRP loop.
NOTIFY_OUTPUT = 4096
NOTIFY_LINE = 200
NOTIFY_CONCURRENCY = 4  # notify commands running at once, over all instances
# Transitions waiting for an instance's notify command (one runs at a time, in
# order); beyond this the oldest waiting ones are skipped, so a flapping
# instance with a slow command neither piles up processes nor reorders states.
NOTIFY_QUEUE = 4
HANDOVER_LINGER = 0.02  # seconds the VIPs stay after the successor's first advert (its GARPs travel)
TIMER_EARLY = 0.001  # seconds a protocol timer may fire early (the loop's wait resolution)
FILE_POLL = 1.0  # seconds between reads of tracked files
LINK_RECHECK = 5.0  # seconds between full link checks (changes arrive as netlink events)

StateListener = Callable[[str, State, State, str], object]  # instance, old, new, reason


@dataclass(eq=False)
class _Instance:
    cfg: InstanceConfig
    machine: Machine
    link: Link
    timer: asyncio.TimerHandle | None = None
    garp: list[asyncio.TimerHandle] = field(default_factory=list)
    deltas: dict[str, int] = field(default_factory=dict)  # tracked object -> priority delta
    faults: dict[str, str] = field(default_factory=dict)  # tracked object -> reason
    group: str | None = None
    sent: int = 0
    zero_sent: int = 0  # adverts with priority 0: handing over
    send_errors: int = 0
    leaving: asyncio.Future[None] | None = None  # handing over on stop: VIPs kept until this is done
    vips: frozenset[IPAddress] = frozenset()  # every instance's VIPs: never a source address
    vmac: Link | None = None  # the virtual-MAC macvlan: up and carrying the VIPs while master
    vmac_up: bool = False
    released: bool = False  # the operator handed mastership over: priority 1 until reclaimed
    linger: asyncio.TimerHandle | None = None  # released master: VIPs kept until the successor speaks
    linger_short: bool = False
    tx: _Channel | None = None  # sends the adverts from the virtual MAC (on the macvlan)
    refusing: str | None = None  # the drop reason last logged (once per change)
    outbidding: IPAddress | None = None  # the lower-priority master last logged
    learnt_interval_cs: int = 0  # the master's advert interval last logged (v3)

    @property
    def source(self) -> IPAddress:
        if self.cfg.source is not None:
            return self.cfg.source
        if self.cfg.family == 4:
            # Never a VIP (ours come and go; a /32 VIP even looks primary), and
            # keep the address in use while the link still has it.
            usable = [a for a in self.link.addresses4 if a not in self.vips]
            if not usable:
                raise OSError(f"{self.link.name} has no IPv4 address (besides VIPs) to send VRRP from")
            current = self.machine.local_address
            return current if current in usable else usable[0]
        if self.link.link_local6 is None:
            raise OSError(f"{self.link.name} has no usable link-local IPv6 address")
        return self.link.link_local6


class _Channel:
    """The raw socket of one (interface, family)."""

    def __init__(self, link: Link, family: int, multicast: bool, receive: bool = True) -> None:
        self.link = link
        self.family = family
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        s = socket.socket(af, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, PROTO)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, link.name.encode())
            if family == 4:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, TTL)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, TTL)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, TOS)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
                mreqn = GROUP4.packed + bytes(4) + struct.pack("i", link.index)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
                if multicast:
                    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            else:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, TTL)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, TTL)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, TOS)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, link.index)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
                if multicast:
                    mreq = GROUP6.packed + struct.pack("I", link.index)
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
                if not receive:  # the macvlan's sender: its source is the base's link-local
                    s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            if not receive:  # send only: a filter that accepts nothing keeps the queue empty
                s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, _DROP_ALL)
        except BaseException:
            s.close()
            raise
        self.sock = s
        self.instances: dict[int, _Instance] = {}

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes, src: IPAddress, dst: IPAddress) -> None:
        if self.family == 4:
            info = struct.pack("i4s4s", self.link.index, src.packed, bytes(4))
            cmsg = [(socket.IPPROTO_IP, IP_PKTINFO, info)]
            self.sock.sendmsg([data], cmsg, 0, (str(dst), 0))
        else:
            info6 = src.packed + struct.pack("I", self.link.index)
            cmsg = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info6)]
            self.sock.sendmsg([data], cmsg, 0, (str(dst), 0, 0, self.link.index))

    def receive(self) -> Iterable[tuple[bytes, IPAddress, IPAddress, int]]:
        """(VRRP message, source, destination, TTL or hop limit) of each waiting packet."""
        while True:
            try:
                if self.family == 4:
                    packet = self.sock.recv(65535)
                    if len(packet) < 20:
                        continue
                    ihl = (packet[0] & 0x0F) * 4
                    total = int.from_bytes(packet[2:4], "big")
                    src = ipaddress.IPv4Address(packet[12:16])
                    dst = ipaddress.IPv4Address(packet[16:20])
                    yield packet[ihl : max(ihl, min(total, len(packet)))], src, dst, packet[8]
                else:
                    data, anc, _, addr = self.sock.recvmsg(65535, 256)
                    hops, dst6 = -1, GROUP6
                    for level, kind, value in anc:
                        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
                            hops = struct.unpack("i", value[:4])[0]
                        elif (
                            level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(value) >= 16
                        ):
                            dst6 = ipaddress.IPv6Address(value[:16])
                    yield data, ipaddress.IPv6Address(addr[0].split("%")[0]), dst6, hops
            except (BlockingIOError, InterruptedError):
                return


class VrrpService:
    """Runs instances on the running loop. start() / stop() / status()."""

    def __init__(
        self,
        instances: Iterable[InstanceConfig],
        sync_groups: Iterable[tuple[str, tuple[str, ...]]] = (),
        host: Host | None = None,
        released: Iterable[str] = (),
    ) -> None:
        self.configs = {c.name: c for c in instances}
        self.groups = {name: members for name, members in sync_groups}
        self.host = host or Host()
        self.announcer = Announcer()
        self.drops: Counter[str] = Counter()  # dropped before an instance was known, by reason
        self.instance_drops: Counter[tuple[str, str]] = Counter()  # (instance, reason)
        self.notify_skipped: Counter[str] = Counter()  # instance -> transitions its notify never saw
        self.listeners: list[StateListener] = []
        self._instances: dict[str, _Instance] = {}
        self._channels: dict[tuple[int, int], _Channel] = {}
        self._local: set[IPAddress] = set()
        self._poller: asyncio.Task[None] | None = None
        self._events: LinkEvents | None = None
        self._relink_pending = False
        self._notify_tasks: set[asyncio.Task[None]] = set()
        self._notify_queues: dict[str, collections.deque[list[list[str]]]] = {}
        self._notify_workers: dict[str, asyncio.Task[None]] = {}
        self._notify_slots = asyncio.Semaphore(NOTIFY_CONCURRENCY)
        self._vs_up: dict[str, bool] = {}
        self._scripts: Scheduler | None = None
        self._released = set(released)  # instances to start released (the operator's, kept on disk)
        self._saved_sysctls: dict[str, dict[str, str]] = {}  # base interface -> values before our macvlans
        self._keep_vips_alone = False  # stop(orphaned=True): no successor, no release

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        added: list[_Instance] = []
        try:
            for cfg in self.configs.values():
                added.append(self._add(cfg))
        except OSError:  # all or nothing: no macvlan, socket or sysctl of ours stays behind
            for inst in added:
                self._unregister(inst)
            self.announcer.close()
            raise
        for inst in added:
            self._begin(inst, now)
        self._poller = loop.create_task(self._poll(), name="vrrp tracking")
        try:
            self._events = LinkEvents()
            loop.add_reader(self._events.fileno(), self._links_changed)
        except OSError as e:  # tracking still works, from the periodic check only
            log.warning("VRRP: no netlink link events (%s); links are checked every %gs", e, LINK_RECHECK)
        self._start_scripts()

    def update(
        self, instances: Iterable[InstanceConfig], sync_groups: Iterable[tuple[str, tuple[str, ...]]] = ()
    ) -> tuple[list[str], list[str], list[str]]:
        """Reload: an instance whose configuration is unchanged keeps running
        (state, timers, VIPs: no failover); a removed one shuts down (priority
        0, VIPs released); a changed one restarts; a new one starts.
        Returns (added, removed, restarted) names."""
        now = asyncio.get_running_loop().time()
        wanted = {c.name: c for c in instances}
        self.groups = {name: members for name, members in sync_groups}
        removed = [n for n in self._instances if n not in wanted]
        changed = [n for n, c in wanted.items() if n in self._instances and self._instances[n].cfg != c]
        restarted = [n for n in changed if not _soft_change(self._instances[n].cfg, wanted[n])]
        added = [n for n in wanted if n not in self._instances]
        for name in removed + restarted:
            self._remove(self._instances[name], now)
        for name in changed:
            if name not in restarted:  # priority, preemption, tracking, GARP, notify: applied in place
                inst = self._instances[name]
                inst.cfg = wanted[name]
                inst.machine.params = wanted[name].params
                keys = _tracked_keys(inst.cfg)  # forget objects no longer tracked
                inst.deltas = {k: v for k, v in inst.deltas.items() if k in keys}
                inst.faults = {k: v for k, v in inst.faults.items() if k in keys}
                self._track_files(inst, now)
                for t in inst.cfg.track_virtual_servers:
                    self._apply_vs(inst, t.name, self._vs_up.get(t.name, True), now)
                if inst.machine.state is not State.INIT:
                    self._run(inst, inst.machine.set_priority(self._priority(inst), now))
        self.configs = wanted
        fresh = [self._add(wanted[n]) for n in restarted + added]
        vips = self._all_vips()
        for inst in self._instances.values():
            inst.group = next((g for g, members in self.groups.items() if inst.cfg.name in members), None)
            inst.vips = vips
        for inst in fresh:
            self._begin(inst, now)
        if self._scripts is not None:
            self._scripts.update(self._script_specs())
        else:
            self._start_scripts()
        return added, removed, restarted

    def _add(self, cfg: InstanceConfig) -> _Instance:
        """Open (or share) the channel and register the instance; it starts in INIT."""
        loop = asyncio.get_running_loop()
        link = self.host.link(cfg.interface)
        if link is None:
            raise OSError(f"VRRP instance {cfg.name}: no interface {cfg.interface}")
        key = (link.index, cfg.family)
        chan = self._channels.get(key)
        if chan is None:
            chan = self._channels[key] = _Channel(link, cfg.family, multicast=True)
            loop.add_reader(chan.sock.fileno(), self._readable, chan)
        if cfg.params.vrid in chan.instances:
            raise OSError(f"VRRP instance {cfg.name}: VRID {cfg.params.vrid} is used twice on {link.name}")
        inst = _Instance(cfg, Machine(cfg.params, ipaddress.ip_address(0)), link, vips=self._all_vips())
        inst.released = cfg.name in self._released
        inst.machine.local_address = inst.source
        inst.group = next((g for g, members in self.groups.items() if cfg.name in members), None)
        chan.instances[cfg.params.vrid] = inst
        self._instances[cfg.name] = inst
        self._local.update(link.addresses4)
        if link.link_local6 is not None:
            self._local.add(link.link_local6)
        if cfg.source is not None:
            self._local.add(cfg.source)
        # VIPs belong to the master: one left behind (a crash, kill -9) goes now.
        stale = []
        for vip in cfg.unique_vips:
            with contextlib.suppress(OSError):
                if self.host.has_address(link.index, vip.ip):
                    stale.append(str(vip))
                self.host.del_vip(link.index, vip)
        if stale:
            log.warning(
                "VRRP instance %s: removed %s left on %s by an earlier run; back when this node is master",
                cfg.name, ", ".join(stale), link.name,
            )  # fmt: skip
        if cfg.virtual_mac is not None:
            try:
                self._add_vmac(inst)
            except OSError:
                self._unregister(inst)
                raise
        out = inst.vmac or link
        try:
            self.announcer.prepare(out, cfg.family)
        except OSError as e:
            log.warning("VRRP %s: cannot open the announcement socket on %s: %s", cfg.name, out.name, e)
        return inst

    def _add_vmac(self, inst: _Instance) -> None:
        """Create the instance's macvlan (down until master) and its sender.

        Clients must never learn a VIP at the base's own MAC: the base gets
        arp_ignore 1 (no replies for addresses on the macvlan) and arp_announce 2
        (its own ARP requests, say for a client the master answers from a VIP,
        carry the base's address as the sender, not the VIP). The values found
        are put back when the last macvlan on the base goes."""
        assert inst.cfg.virtual_mac is not None
        base = inst.link
        if base.name not in self._saved_sysctls:
            saved = self._saved_sysctls[base.name] = {}
            for key, value in BASE_SYSCTLS.items():
                name = f"net/ipv4/conf/{base.name}/{key}"
                before = read_sysctl(name)
                if before is not None and int(before) < int(value):
                    write_sysctl(name, value)
                    saved[name] = before
        inst.vmac = self.host.ensure_macvlan(inst.cfg.virtual_mac, base, inst.cfg.virtual_mac_address)
        inst.tx = _Channel(inst.vmac, inst.cfg.family, multicast=False, receive=False)
        log.info(
            "VRRP %s: virtual MAC %s on %s (over %s)",
            inst.cfg.name, inst.vmac.mac.hex(":"), inst.vmac.name, base.name,
        )  # fmt: skip

    def _drop_vmac(self, inst: _Instance) -> None:
        vmac, inst.vmac = inst.vmac, None
        if inst.tx is not None:
            inst.tx.close()
            inst.tx = None
        if vmac is not None:
            self.announcer.forget(vmac.index)
            try:
                self.host.delete_link(vmac.index)
            except OSError as e:
                log.error("VRRP %s: cannot delete %s: %s", inst.cfg.name, vmac.name, e)
        base = inst.link.name
        if base in self._saved_sysctls and not any(
            i.vmac is not None and i.link.name == base for i in self._instances.values()
        ):
            for name, value in self._saved_sysctls.pop(base).items():
                with contextlib.suppress(OSError):
                    write_sysctl(name, value)

    def _all_vips(self) -> frozenset[IPAddress]:
        return frozenset(v.ip for c in self.configs.values() for v in c.vips)

    def _begin(self, inst: _Instance, now: float) -> None:
        for i, s in enumerate(inst.cfg.track_scripts):  # failing until its first result says otherwise
            if not s.start_ok:
                self._tracked(
                    inst, _script_key(s, i), s.weight, True, f"script {s.command[0]}: not run yet", now
                )
        self._track_links(inst, now)
        self._track_files(inst, now)
        for t in inst.cfg.track_virtual_servers:
            self._apply_vs(inst, t.name, self._vs_up.get(t.name, True), now)
        if inst.faults:
            inst.machine.state = State.FAULT
            self._emit(inst, Become(State.INIT, State.FAULT, "; ".join(inst.faults.values())))
        else:
            inst.machine.set_priority(self._priority(inst), now)
            self._run(inst, inst.machine.start(now))

    def _remove(self, inst: _Instance, now: float) -> None:
        self._run(inst, inst.machine.shutdown(now), propagate=False)
        self._unregister(inst)

    def _unregister(self, inst: _Instance) -> None:
        if inst.linger is not None:  # a released master still holding its VIPs lets them go
            self._end_linger(inst, release=True)
        if inst.timer is not None:
            inst.timer.cancel()
            inst.timer = None
        self._instances.pop(inst.cfg.name, None)
        self._drop_vmac(inst)
        key = (inst.link.index, inst.cfg.family)
        chan = self._channels.get(key)
        if chan is not None:
            chan.instances.pop(inst.cfg.params.vrid, None)
            if not chan.instances:
                asyncio.get_running_loop().remove_reader(chan.sock.fileno())
                chan.close()
                del self._channels[key]

    async def stop(self, orphaned: bool = False) -> None:
        """Graceful: masters hand over (priority 0; VIPs kept until a new master speaks), others stop.

        orphaned: the daemon died and will be started again (systemd restarts it).
        A backup that answers takes over as on any stop; with none, the VIPs stay
        where they are so traffic keeps flowing into IPVS until the restarted
        daemon decides, and nothing advertises meanwhile."""
        self._keep_vips_alone = orphaned
        loop = asyncio.get_running_loop()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._events is not None:
            loop.remove_reader(self._events.fileno())
            self._events.close()
            self._events = None
        if self._scripts is not None:
            await self._scripts.close()
        leaving = []
        for inst in list(self._instances.values()):
            if inst.machine.state is State.MASTER:
                leaving.append(self._hand_over(inst, loop.time()))
            else:
                self._remove(inst, loop.time())
        if leaving:
            await asyncio.wait(leaving)
        self.announcer.close()
        if self._notify_tasks:
            await asyncio.wait(self._notify_tasks, timeout=NOTIFY_TIMEOUT)

    def close(self) -> None:
        self.host.close()

    def _hand_over(self, inst: _Instance, now: float) -> asyncio.Future[None]:
        """Leave mastership without a gap: advertise priority 0 (a backup takes
        over after its skew time instead of Master_Down_Interval) but keep the
        VIPs until the new master's first advert is heard, plus HANDOVER_LINGER
        for its gratuitous ARPs to reach the clients; without a successor, release
        them after the longest Master_Down_Interval any backup can have.
        Clients never see the VIP missing: keepalived releases at once."""
        loop = asyncio.get_running_loop()
        inst.leaving = loop.create_future()
        self._run(inst, inst.machine.shutdown(now), propagate=False)
        limit = master_down_interval(1, inst.machine.master_interval_cs, inst.cfg.params.version)
        inst.timer = loop.call_later(limit, self._left, inst)
        return inst.leaving

    def _left(self, inst: _Instance, successor: bool = False) -> None:
        if inst.leaving is None or inst.leaving.done():
            return
        if successor or not self._keep_vips_alone:
            self._release_vips(inst)
        else:
            log.warning(
                "VRRP instance %s: no successor answered the hand-over; its VIPs stay for the next start",
                inst.cfg.name,
            )
        self._unregister(inst)
        inst.leaving.set_result(None)

    # ------------------------------------------------------------ inputs from the daemon

    def release(self, name: str) -> State:
        """Hand mastership over without a gap (priority 0 advert; VIPs kept until
        the successor's first advert) and stay Backup at priority 1 until
        reclaim(). Not Master: just stay out of the way. KeyError if unknown."""
        inst = self._instances[name]
        inst.released = True
        self._released.add(name)
        now = asyncio.get_running_loop().time()
        m = inst.machine
        if m.state is State.MASTER and inst.leaving is None:
            # Longer than our own Master_Down: with no successor we are Master
            # again (VIPs never left) before the linger would drop them.
            limit = master_down_interval(1, m.master_interval_cs, inst.cfg.params.version) + 0.1
            inst.linger = asyncio.get_running_loop().call_later(limit, self._end_linger, inst, True)
            inst.linger_short = False
            self._run(inst, m.release(now, self._priority(inst)))
        elif m.state is not State.INIT:
            self._run(inst, m.set_priority(self._priority(inst), now))
        return m.state

    def reclaim(self, name: str) -> State:
        """Undo release(): the configured priority again (a preempting router takes over)."""
        inst = self._instances[name]
        inst.released = False
        self._released.discard(name)
        if inst.machine.state is not State.INIT:
            self._run(
                inst, inst.machine.set_priority(self._priority(inst), asyncio.get_running_loop().time())
            )
        return inst.machine.state

    def _end_linger(self, inst: _Instance, release: bool = False) -> None:
        if inst.linger is not None:
            inst.linger.cancel()
            inst.linger = None
        if release and inst.machine.state is not State.MASTER and inst.leaving is None:
            self._release_vips(inst)

    def set_virtual_server(self, name: str, up: bool) -> None:
        """A tracked virtual server's quorum changed."""
        self._vs_up[name] = up
        now = asyncio.get_running_loop().time()
        for inst in self._instances.values():
            self._apply_vs(inst, name, up, now)

    def status(self) -> list[dict[str, object]]:
        out = []
        for inst in self._instances.values():
            m = inst.machine
            out.append(
                {
                    "name": inst.cfg.name,
                    "interface": inst.link.name,
                    "vrid": inst.cfg.params.vrid,
                    "state": m.state.value,
                    "priority": m.priority,
                    "configured_priority": inst.cfg.params.priority,
                    "master": str(m.master_address) if m.master_address else None,
                    "master_priority": m.master_priority,
                    "advert_interval": m.params.interval_cs / 100.0,
                    "master_advert_interval": m.master_interval_cs / 100.0,
                    "transitions": m.transitions,
                    "adverts_sent": inst.sent,
                    "adverts_received": m.received,
                    "became_master": m.became_master,
                    "released_master": m.released_master,
                    "priority_zero_received": m.zero_received,
                    "priority_zero_sent": inst.zero_sent,
                    "vips": [[str(v.ip), (inst.vmac or inst.link).name] for v in inst.cfg.unique_vips],
                    "send_errors": inst.send_errors,
                    "faults": dict(inst.faults),
                    "sync_group": inst.group,
                    "released": inst.released,
                    "notify_skipped": self.notify_skipped[inst.cfg.name],
                    "virtual_mac": inst.cfg.virtual_mac_address.hex(":") if inst.vmac else None,
                    "virtual_mac_interface": inst.vmac.name if inst.vmac else None,
                }
            )
        return out

    def state(self, name: str) -> State:
        return self._instances[name].machine.state

    def drop_counts(self) -> dict[tuple[str, str], int]:
        """Drops by (instance, reason); instance "" for packets no instance claimed."""
        out: dict[tuple[str, str], int] = dict(self.instance_drops)
        claimed: Counter[str] = Counter()
        for (_, reason), n in self.instance_drops.items():
            claimed[reason] += n
        for reason, n in self.drops.items():
            if n > claimed[reason]:
                out[("", reason)] = n - claimed[reason]
        return out

    # ------------------------------------------------------------ receive path

    def _readable(self, chan: _Channel) -> None:
        now = asyncio.get_running_loop().time()
        try:
            packets = list(chan.receive())
        except OSError as e:
            log.warning("VRRP receive on %s failed: %s", chan.link.name, e)
            return
        for data, src, dst, ttl in packets:
            reason = self._accept(chan, data, src, dst, ttl, now)
            if reason is not None:
                self.drops[reason] += 1

    def _accept(
        self, chan: _Channel, data: bytes, src: IPAddress, dst: IPAddress, ttl: int, now: float
    ) -> str | None:
        if src in self._local:
            return Drop.OWN.value
        out = decode(data, src, dst, ttl)
        if isinstance(out, Drop):
            # Counted against the instance its VRID byte names, when there is one
            # (keepalived counts TTL, length and type errors per instance too).
            claimed = chan.instances.get(data[1]) if len(data) > 1 else None
            if claimed is not None:
                self.instance_drops[(claimed.cfg.name, out.value)] += 1
            return out.value
        inst = chan.instances.get(out.vrid)
        if inst is None:
            return Drop.VRID.value
        if inst.cfg.unicast_peers and src not in inst.cfg.unicast_peers:
            return self._refused(inst, UNKNOWN_PEER, src, out)
        bad = check_for_instance(out, inst.cfg)
        if bad is not None:
            return self._refused(inst, bad.value, src, out)
        inst.refusing = None
        self._note_advert(inst, out, src)
        if inst.leaving is not None:
            if out.priority > 0 and inst.timer is not None:  # the successor speaks: release soon
                inst.timer.cancel()
                inst.timer = asyncio.get_running_loop().call_later(HANDOVER_LINGER, self._left, inst, True)
            return None
        self._run(inst, inst.machine.receive(out, src, now))
        if inst.linger is not None and out.priority > 0 and not inst.linger_short:
            inst.linger.cancel()  # the successor speaks: release soon
            inst.linger = asyncio.get_running_loop().call_later(HANDOVER_LINGER, self._end_linger, inst, True)
            inst.linger_short = True
        return None

    def _refused(self, inst: _Instance, reason: str, src: IPAddress, advert: Advert) -> str:
        """Count a drop against its instance; log it once until the reason changes
        (keepalived logs these per packet: a misconfigured peer floods the log)."""
        self.instance_drops[(inst.cfg.name, reason)] += 1
        if inst.refusing != reason:
            inst.refusing = reason
            log.warning(
                "VRRP instance %s: dropping adverts from %s: %s (logged once until it changes)",
                inst.cfg.name, src, _why_dropped(reason, advert, inst.cfg),
                extra={"instance": inst.cfg.name, "reason": reason, "peer": str(src)},
            )  # fmt: skip
        return reason

    def _note_advert(self, inst: _Instance, advert: Advert, src: IPAddress) -> None:
        """What keepalived tells operators about an accepted advert, once per change."""
        m, name = inst.machine, inst.cfg.name
        if advert.priority == 0:
            if m.state is State.BACKUP:
                log.info(
                    "VRRP instance %s: master %s left (priority 0): taking over after skew time", name, src
                )
            return
        if m.state is State.MASTER and advert.priority < m.priority and inst.outbidding != src:
            inst.outbidding = src
            log.info(
                "VRRP instance %s: lower-priority master %s (%d) heard: advertising at once to end it",
                name, src, advert.priority,
            )  # fmt: skip
        if (
            inst.cfg.params.version == 3
            and m.state is State.BACKUP
            and advert.interval_cs != inst.learnt_interval_cs
        ):
            if advert.interval_cs != inst.cfg.params.interval_cs or inst.learnt_interval_cs:
                log.info(
                    "VRRP instance %s: master %s advertises every %gs (ours %gs): Master_Down follows it",
                    name, src, advert.interval_cs / 100, inst.cfg.params.interval_cs / 100,
                )  # fmt: skip
            inst.learnt_interval_cs = advert.interval_cs

    # ------------------------------------------------------------ actions

    def _run(self, inst: _Instance, actions: list[Action], propagate: bool = True) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._send(inst, action.priority)
            else:
                self._transition(inst, action, propagate)
        self._arm(inst)

    def _arm(self, inst: _Instance) -> None:
        if inst.timer is not None:
            inst.timer.cancel()
            inst.timer = None
        deadline = inst.machine.deadline()
        if deadline is not None:
            inst.timer = asyncio.get_running_loop().call_at(deadline - TIMER_EARLY, self._fire, inst)

    def _fire(self, inst: _Instance) -> None:
        inst.timer = None
        now = asyncio.get_running_loop().time()
        deadline = inst.machine.deadline()
        if deadline is not None and now < deadline <= now + TIMER_EARLY:
            now = deadline  # epoll_wait sleeps whole milliseconds, rounded up: fire up to 1 ms early instead
        self._run(inst, inst.machine.timer(now))

    def _send(self, inst: _Instance, priority: int) -> None:
        self._vmac_state(inst, True)  # only a master sends; its first advert comes before its VIPs
        chan = inst.tx or self._channels.get((inst.link.index, inst.cfg.family))
        if chan is None:
            return
        p = inst.cfg.params
        advert = Advert(
            p.version,
            p.vrid,
            priority,
            p.interval_cs,
            inst.cfg.addresses,
            inst.cfg.auth_type,
            inst.cfg.auth_data,
        )
        try:
            src = inst.source
        except OSError as e:
            inst.send_errors += 1
            log.warning("VRRP %s: cannot send: %s", inst.cfg.name, e)
            return
        targets = inst.cfg.unicast_peers or ((GROUP4,) if inst.cfg.family == 4 else (GROUP6,))
        for dst in targets:
            try:
                chan.send(encode(advert, src, dst), src, dst)
                inst.sent += 1
                inst.zero_sent += priority == 0
            except OSError as e:
                inst.send_errors += 1
                log.warning("VRRP %s: sending to %s failed: %s", inst.cfg.name, dst, e)

    def _transition(self, inst: _Instance, b: Become, propagate: bool) -> None:
        inst.outbidding = None  # a new state: the next lower-priority master is news again
        if b.new is State.MASTER:  # VIPs and GARPs first: the clients are waiting, the log is not
            self._end_linger(inst)
            self._take_vips(inst)
        elif b.old is State.MASTER and inst.leaving is None and inst.linger is None:
            self._release_vips(inst)  # (a hand-over releases them later)
        # The one line per transition (the daemon does not log VrrpChanged again).
        log.info(
            "VRRP instance %s %s -> %s: %s (priority %d)",
            inst.cfg.name, b.old.value.upper(), b.new.value.upper(), b.reason, inst.machine.priority,
            extra={"instance": inst.cfg.name, "old": b.old.value, "new": b.new.value, "reason": b.reason},
        )  # fmt: skip
        self._emit(inst, b)
        if propagate and inst.group is not None:
            self._sync(inst, b)

    def _vmac_state(self, inst: _Instance, up: bool) -> None:
        if inst.vmac is None or inst.vmac_up == up:
            return
        try:
            self.host.set_up(inst.vmac.index, up)
        except OSError as e:
            log.error(
                "VRRP %s: cannot bring %s %s: %s", inst.cfg.name, inst.vmac.name, "up" if up else "down", e
            )
            return
        inst.vmac_up = up
        if up:
            self.announcer.ready(inst.vmac.index)

    def _take_vips(self, inst: _Instance) -> None:
        out = inst.vmac or inst.link
        self._vmac_state(inst, True)
        for vip in inst.cfg.unique_vips:
            opts = inst.cfg.vip_options_of(vip)
            try:
                self.host.add_vip(out.index, vip, opts.label, opts.scope)
            except OSError as e:
                log.error("VRRP %s: cannot add %s to %s: %s", inst.cfg.name, vip, out.name, e)
        self._announce_round(inst, inst.cfg.garp.count)

    def _announce_round(self, inst: _Instance, count: int) -> None:
        loop = asyncio.get_running_loop()
        g = inst.cfg.garp
        for vip in inst.cfg.unique_vips:
            try:
                self.announcer.announce(inst.vmac or inst.link, vip)
            except OSError as e:
                log.warning("VRRP %s: announcing %s failed: %s", inst.cfg.name, vip, e)
        inst.garp = [h for h in inst.garp if not h.cancelled()]
        if count > 1:
            delay = g.interval if g.interval > 0 else 0.0
            inst.garp.append(loop.call_later(delay, self._announce_round, inst, count - 1))
        elif g.refresh > 0:
            inst.garp.append(loop.call_later(g.refresh, self._announce_round, inst, 1))

    def _release_vips(self, inst: _Instance) -> None:
        for h in inst.garp:
            h.cancel()
        inst.garp.clear()
        out = inst.vmac or inst.link
        for vip in inst.cfg.unique_vips:
            try:
                self.host.del_vip(out.index, vip)
            except OSError as e:
                log.error("VRRP %s: cannot remove %s from %s: %s", inst.cfg.name, vip, out.name, e)
        self._vmac_state(inst, False)  # down while not master: nothing leaves a backup from the virtual MAC

    def _emit(self, inst: _Instance, b: Become) -> None:
        for fn in list(self.listeners):
            try:
                fn(inst.cfg.name, b.old, b.new, b.reason)
            except Exception:
                log.exception("VRRP state listener failed")
        commands = notify_commands(inst.cfg, b.new, inst.machine.priority)
        if commands:
            queue = self._notify_queues.setdefault(inst.cfg.name, collections.deque())
            queue.append(commands)
            while len(queue) > NOTIFY_QUEUE:
                queue.popleft()
                self.notify_skipped[inst.cfg.name] += 1
            if inst.cfg.name not in self._notify_workers:
                task = asyncio.get_running_loop().create_task(self._notify_worker(inst.cfg.name, queue))
                self._notify_workers[inst.cfg.name] = task
                self._notify_tasks.add(task)
                task.add_done_callback(self._notify_tasks.discard)

    async def _notify_worker(self, name: str, queue: collections.deque[list[list[str]]]) -> None:
        """Run an instance's notify commands one after another, in the order of its transitions."""
        try:
            while queue:
                commands = queue.popleft()
                async with self._notify_slots:
                    for argv in commands:
                        await run_command(argv)
        finally:
            self._notify_workers.pop(name, None)

    # ------------------------------------------------------------ sync groups

    def _sync(self, origin: _Instance, b: Become) -> None:
        """Members of a sync group follow a member that became MASTER, BACKUP or FAULT."""
        now = asyncio.get_running_loop().time()
        for other in self._instances.values():
            if other is origin or other.group != origin.group or other.machine.state is b.new:
                continue
            reason = f"sync group {origin.group}: {origin.cfg.name} is {b.new.value}"
            m = other.machine
            if b.new is State.MASTER and m.state is State.BACKUP:
                self._run(other, m.force_master(now, reason), propagate=False)
            elif b.new is State.BACKUP and m.state is State.MASTER:
                self._run(other, m.force_backup(now, reason), propagate=False)
            elif b.new is State.FAULT:
                self._run(other, m.set_fault(True, now, reason), propagate=False)
            elif b.old is State.FAULT and m.state is State.FAULT and not other.faults:
                self._run(other, m.set_fault(False, now, reason), propagate=False)

    # ------------------------------------------------------------ tracking

    def _priority(self, inst: _Instance) -> int:
        if inst.released and inst.cfg.params.priority != 255:
            return 1
        return inst.cfg.params.priority + sum(inst.deltas.values())

    def _tracked(self, inst: _Instance, key: str, weight: int, bad: bool, reason: str, now: float) -> None:
        """Account one tracked object: weight 0 faults while bad, else adds weight while bad."""
        if weight == 0:
            had = bool(inst.faults)
            if bad:
                inst.faults[key] = reason
            else:
                inst.faults.pop(key, None)
            if inst.machine.state is State.INIT:
                return
            if inst.faults and not had:
                self._run(inst, inst.machine.set_fault(True, now, reason))
            elif had and not inst.faults:
                self._run(inst, inst.machine.set_fault(False, now, f"{key} recovered"))
            return
        delta = weight if bad else 0
        if inst.deltas.get(key, 0) != delta:
            inst.deltas[key] = delta
            if inst.machine.state is not State.INIT:
                self._run(inst, inst.machine.set_priority(self._priority(inst), now))

    def _apply_vs(self, inst: _Instance, name: str, up: bool, now: float) -> None:
        for t in inst.cfg.track_virtual_servers:
            if t.name == name:
                self._tracked(
                    inst,
                    f"virtual server {name}",
                    t.weight,
                    not up,
                    f"virtual server {name} quorum lost",
                    now,
                )

    def _start_scripts(self) -> None:
        """Tracking scripts run on the health-check scheduler (rise/fall, timeout, process group kill)."""
        specs = self._script_specs()
        if not specs:
            return
        self._scripts = Scheduler()
        self._scripts.subscribe(self._script_changed)
        self._scripts.update(specs)

    def _script_specs(self) -> list[ScheduledCheck]:
        specs = []
        for inst in self._instances.values():
            for i, t in enumerate(inst.cfg.track_scripts):
                specs.append(
                    ScheduledCheck(
                        key=(inst.cfg.name, i),
                        checker=ScriptCheck(t.command, user=t.user),
                        target=Target("127.0.0.1"),
                        interval=t.interval,
                        timeout=t.timeout,
                        rise=t.rise,
                        fall=t.fall,
                        initially_up=t.start_ok,
                        first_decides=True,
                    )  # fmt: skip
                )
        return specs

    def _script_changed(self, key: object, t: Transition, result: Result) -> None:
        name, i = cast(tuple[str, int], key)
        inst = self._instances[name]
        script = inst.cfg.track_scripts[i]
        reason = f"script {script.command[0]}: {t.reason or result.reason}"
        now = asyncio.get_running_loop().time()
        self._tracked(inst, _script_key(script, i), script.weight, not t.up, reason, now)

    def _track_links(self, inst: _Instance, now: float) -> None:
        link = self.host.link(inst.cfg.interface)
        own_down = link is None or not link.up
        if link is not None and link.index == inst.link.index:
            inst.link = link  # addresses may have changed (the advert source follows the primary)
            if inst.cfg.source is None:
                with contextlib.suppress(OSError):  # no address right now: keep the last one
                    inst.machine.local_address = inst.source
        self._tracked(inst, f"interface {inst.cfg.interface}", 0, own_down, f"{inst.cfg.interface} down", now)
        for t in inst.cfg.track_interfaces:
            other = self.host.link(t.name)
            down = other is None or not other.up
            self._tracked(inst, f"interface {t.name}", t.weight, down, f"{t.name} down", now)

    def _track_files(self, inst: _Instance, now: float) -> None:
        """keepalived's track_file: value x weight is added to the priority; with weight 0 a
        non-zero value is a FAULT, and so is a result below -253."""
        for t in inst.cfg.track_files:
            try:
                with open(t.path, encoding="ascii") as f:
                    value = int(f.read().strip() or 0)
            except (OSError, ValueError):
                value = 0
            key = f"file {t.path}"
            result = t.weight * value
            bad = value != 0 if t.weight == 0 else result < -253
            self._tracked(inst, key, 0, bad, f"{t.path} holds {value}", now)
            inst.deltas[key] = result

    def _links_changed(self) -> None:
        """A link or address changed: re-check the links once, after draining the burst."""
        assert self._events is not None
        try:
            self._events.drain()
        except OSError as e:
            log.warning("VRRP: reading netlink events failed: %s", e)
        if not self._relink_pending:
            self._relink_pending = True
            asyncio.get_running_loop().call_soon(self._relink)

    def _relink(self) -> None:
        self._relink_pending = False
        now = asyncio.get_running_loop().time()
        for inst in list(self._instances.values()):
            if inst.leaving is not None:
                continue
            try:
                self._track_links(inst, now)
            except OSError as e:
                log.warning("VRRP %s: reading links failed: %s", inst.cfg.name, e)

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        n = 0
        every = round(LINK_RECHECK / FILE_POLL)
        while True:
            await asyncio.sleep(FILE_POLL)
            n += 1
            now = loop.time()
            if n % every == 0 or self._events is None:
                self._relink()
            for inst in self._instances.values():
                if inst.cfg.track_files and inst.leaving is None:
                    before = self._priority(inst)
                    self._track_files(inst, now)
                    if self._priority(inst) != before and inst.machine.state is not State.INIT:
                        self._run(inst, inst.machine.set_priority(self._priority(inst), now))


def _tracked_keys(cfg: InstanceConfig) -> set[str]:
    """The keys _tracked() files an instance's tracked objects under."""
    keys = {f"interface {cfg.interface}"}
    keys |= {f"interface {t.name}" for t in cfg.track_interfaces}
    keys |= {f"virtual server {t.name}" for t in cfg.track_virtual_servers}
    keys |= {f"file {t.path}" for t in cfg.track_files}
    keys |= {f"script {t.command[0]} #{i}" for i, t in enumerate(cfg.track_scripts)}
    return keys


def _soft_change(old: InstanceConfig, new: InstanceConfig) -> bool:
    """Whether a reload can apply new to a running instance without restarting it:
    the same router on the wire (VRID, version, interval, VIPs, peers, source,
    interface, virtual MAC), not becoming or ceasing to be the address owner."""
    p, q = old.params, new.params
    same_router = (p.vrid, p.version, p.interval_cs) == (q.vrid, q.version, q.interval_cs)
    owner = (p.priority == 255) == (q.priority == 255)
    same_place = (
        (old.interface, old.vips, old.vip_options, old.unicast_peers, old.source, old.virtual_mac)
        == (new.interface, new.vips, new.vip_options, new.unicast_peers, new.source, new.virtual_mac)
    )  # fmt: skip
    return same_router and owner and same_place


def _script_key(script: TrackScript, i: int) -> str:
    return f"script {script.command[0]} #{i}"


def notify_commands(cfg: InstanceConfig, state: State, priority: int) -> list[list[str]]:
    """What runs on entering `state`, in keepalived's order: the state's own command, then notify."""
    name = "stop" if state is State.INIT else state.value
    out = [list(argv) for when, argv in cfg.notify_on if when == name]
    if cfg.notify:
        out.append([*cfg.notify, cfg.name, state.value, str(priority)])
    if cfg.notify_keepalived:
        out.append([*cfg.notify_keepalived, "INSTANCE", cfg.name, name.upper(), str(priority)])
    return out


async def run_command(argv: list[str]) -> None:
    """Run a notify-style command: stdin closed, stderr read up to NOTIFY_OUTPUT, killed after
    NOTIFY_TIMEOUT with its process group; a failure logged as one short line."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
    except OSError as e:
        log.error("VRRP notify %s: %s", argv[0], e)
        return
    assert proc.stderr is not None
    err = b""
    try:
        async with asyncio.timeout(NOTIFY_TIMEOUT):
            while len(err) < NOTIFY_OUTPUT and (chunk := await proc.stderr.read(NOTIFY_OUTPUT - len(err))):
                err += chunk
            transport = getattr(proc, "_transport", None)
            pipe = transport.get_pipe_transport(2) if transport is not None else None
            if pipe is not None:
                pipe.close()  # what it writes from now on fails, instead of piling up here
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        log.error("VRRP notify %s: killed after %ss", argv[0], NOTIFY_TIMEOUT)
        return
    if proc.returncode:
        first = err.decode(errors="replace").strip().splitlines()[:1]
        line = first[0] if first else ""
        if len(line) > NOTIFY_LINE:
            line = line[:NOTIFY_LINE] + "..."
        log.warning("VRRP notify %s exited %s: %s", argv[0], proc.returncode, line)


def _why_dropped(reason: str, advert: Advert, cfg: InstanceConfig) -> str:
    if reason == Drop.ADDRESSES.value:
        theirs = ", ".join(str(a) for a in advert.addresses) or "none"
        ours = ", ".join(str(a) for a in cfg.addresses) or "none"
        return f"its address list ({theirs}) is not ours ({ours}); only the owner's (priority 255) may differ"
    if reason == Drop.VERSION.value:
        return f"VRRPv{advert.version}, this instance speaks v{cfg.params.version}"
    if reason == Drop.INTERVAL.value:
        return f"advert interval {advert.interval:g}s, ours {cfg.params.interval_cs / 100:g}s (v2 must agree)"
    if reason == Drop.AUTH.value:
        ours = "1 (pass)" if cfg.password else "0 (none)"
        return f"authentication type {advert.auth_type}, this instance's is {ours}"
    if reason == Drop.AUTH_FAIL.value:
        return "another authentication password"  # never the password itself: it is on the wire, not in logs
    if reason == UNKNOWN_PEER:
        return "not one of this instance's unicast peers"
    return reason
