"""The host side of VRRP: interfaces, VIPs, gratuitous ARP and unsolicited NA.

Kept apart from the protocol and from the asyncio adapter so the adapter
reads as protocol plumbing. rtnetlink is spoken with the standard library
(vrrp/rtnetlink.py); LinkEvents is a plain rtnetlink socket that only says
"something changed".
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass

from vrrp.packet import VIP
from vrrp.rtnetlink import IFF_UP, Rtnetlink

IFA_F_NODAD = 0x02
IFA_F_SECONDARY = 0x01
IFA_F_TENTATIVE = 0x40
IF_OPER_UNKNOWN, IF_OPER_UP = 0, 6
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ARPOP_REQUEST = 1
BROADCAST = b"\xff" * 6


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    index: int
    mac: bytes
    up: bool  # administratively up with carrier (operstate up or unknown)
    addresses4: tuple[ipaddress.IPv4Address, ...]  # primary first
    link_local6: ipaddress.IPv6Address | None  # usable (not tentative) link-local address


class Host:
    """Links and addresses over one rtnetlink socket (synchronous; a request
    takes well under a millisecond), in the network namespace of the thread
    that made the Host. Failures are OSError (errno from the kernel)."""

    def __init__(self) -> None:
        self._rt = Rtnetlink()

    def close(self) -> None:
        self._rt.close()

    def link(self, name: str) -> Link | None:
        info = self._rt.link(name)
        if info is None:
            return None
        up = bool(info.flags & IFF_UP) and info.operstate in (None, IF_OPER_UP, IF_OPER_UNKNOWN)
        v4: list[ipaddress.IPv4Address] = []
        ll: ipaddress.IPv6Address | None = None
        for a in self._rt.addresses(info.index):
            if a.family == socket.AF_INET:
                addr4 = ipaddress.IPv4Address(a.address)
                if a.flags & IFA_F_SECONDARY:  # a VIP or alias, never the primary
                    v4.append(addr4)
                else:
                    v4.insert(0, addr4)
            else:
                addr6 = ipaddress.IPv6Address(a.address)
                if addr6.is_link_local and not a.flags & IFA_F_TENTATIVE and ll is None:
                    ll = addr6
        mac = info.mac if len(info.mac) == 6 else bytes(6)
        return Link(name, info.index, mac, up, tuple(v4), ll)

    def add_vip(self, index: int, vip: VIP, label: str | None = None, scope: int = 0) -> bool:
        """Add vip to the link; False if it was there already."""
        try:
            self._rt.add_address(
                index, str(vip.ip), vip.network.prefixlen, IFA_F_NODAD, label=label, scope=scope
            )
        except OSError as e:
            if e.errno == errno.EEXIST:
                return False
            raise
        return True

    def del_vip(self, index: int, vip: VIP) -> bool:
        """Remove vip from the link; False if it was not there."""
        try:
            self._rt.del_address(index, str(vip.ip), vip.network.prefixlen)
        except OSError as e:
            if e.errno in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV):
                return False
            raise
        return True

    def ensure_macvlan(self, name: str, base: Link, mac: bytes) -> Link:
        """The virtual-MAC interface: a bridge-mode macvlan on base with mac, left down.

        Bridge mode, not private: in private mode the kernel hands a frame whose
        source MAC is one of ours (a peer's advert from the same virtual MAC)
        only to the macvlan, and the base interface's socket would never see
        it. An interface of that name that is a macvlan of ours from an earlier
        run is rebuilt; anything else is refused, never deleted."""
        found = self._rt.link(name)
        if found is not None:
            if found.kind != "macvlan":
                raise OSError(
                    f"{name} exists and is not a macvlan ({found.kind or 'no kind'}): not touching it"
                )
            if found.mac != mac:
                raise OSError(f"{name} exists with MAC {_mac_text(found.mac)}, not {_mac_text(mac)}")
            self._rt.delete_link(found.index)
        self._rt.add_macvlan(name, base.index, mac)
        link = self.link(name)
        if link is None:
            raise OSError(f"{name} vanished right after it was created")
        # No IPv6 link-local of its own: one derived from the shared MAC would be
        # the same on every router, and even a random one makes a backup send
        # MLD reports from the virtual MAC. Adverts come from the base's link-local.
        write_sysctl(f"net/ipv6/conf/{name}/addr_gen_mode", "1", missing_ok=True)
        # Answer ARP only for the VIPs on it, never for the base's addresses.
        write_sysctl(f"net/ipv4/conf/{name}/arp_ignore", "1")
        # Clients' packets arrive here but the route back is the base: no strict reverse-path check.
        write_sysctl(f"net/ipv4/conf/{name}/rp_filter", "0")
        return link

    def set_up(self, index: int, up: bool) -> None:
        self._rt.set_up(index, up)

    def delete_link(self, index: int) -> bool:
        try:
            self._rt.delete_link(index)
        except OSError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    def has_address(self, index: int, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(ipaddress.ip_address(a.address) == address for a in self._rt.addresses(index))


def _mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def read_sysctl(name: str) -> str | None:
    try:
        with open(f"/proc/sys/{name}", encoding="ascii") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def write_sysctl(name: str, value: str, missing_ok: bool = False) -> None:
    try:
        with open(f"/proc/sys/{name}", "w", encoding="ascii") as f:
            f.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise


class LinkEvents:
    """An rtnetlink socket subscribed to link and address changes: readable when
    something changed, so tracking need not poll. What changed is not decoded:
    the reader checks its links again."""

    GROUPS = 0x1 | 0x10 | 0x100  # RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
    RCVBUF = 1 << 20
    MAX_READS = 256  # per drain(): a longer burst is read on the next readable callback

    def __init__(self) -> None:
        kind = socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        self._sock = socket.socket(socket.AF_NETLINK, kind, socket.NETLINK_ROUTE)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RCVBUF)
            self._sock.bind((0, self.GROUPS))
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> int:
        """Read what is waiting (call when readable); the number of messages.

        An overflow (ENOBUFS: events were lost) counts as one message: the
        caller re-reads its links whatever the messages said."""
        count = 0
        for _ in range(self.MAX_READS):
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                count += 1
                continue
            count += _netlink_messages(data)
        return count

    def close(self) -> None:
        self._sock.close()


def _netlink_messages(data: bytes) -> int:
    """How many netlink messages one datagram holds (struct nlmsghdr: u32 length first)."""
    count, offset = 0, 0
    while offset + 16 <= len(data):
        (length,) = struct.unpack_from("=I", data, offset)
        if length < 16:
            break
        count += 1
        offset += (length + 3) & ~3
    return count


def garp_frame(mac: bytes, vip: ipaddress.IPv4Address) -> bytes:
    """A gratuitous ARP request: who-has VIP tell VIP, from our MAC, to broadcast."""
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, ARPOP_REQUEST) + mac + vip.packed + bytes(6) + vip.packed
    return BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + arp


def unsolicited_na(mac: bytes, vip: ipaddress.IPv6Address) -> bytes:
    """ICMPv6 neighbour advertisement (override, not solicited) with our link-layer address.

    Sent on a raw ICMPv6 socket: the kernel fills in the checksum."""
    return struct.pack("!BBHI", 136, 0, 0, 0x20000000) + vip.packed + struct.pack("!BB", 2, 1) + mac


class Announcer:
    """Sends gratuitous ARPs and unsolicited NAs on links."""

    def __init__(self) -> None:
        self._arp: dict[int, socket.socket] = {}
        self._icmp6: dict[int, socket.socket] = {}

    def close(self) -> None:
        for s in (*self._arp.values(), *self._icmp6.values()):
            s.close()
        self._arp.clear()
        self._icmp6.clear()

    def ready(self, index: int) -> None:
        """The link came up: drop the ENETDOWN a packet socket bound while it was
        down keeps pending (it would fail the first announcement)."""
        sock = self._arp.get(index)
        if sock is not None:
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)

    def forget(self, index: int) -> None:
        """Close the sockets of a link that is going away."""
        for table in (self._arp, self._icmp6):
            sock = table.pop(index, None)
            if sock is not None:
                sock.close()

    def prepare(self, link: Link, family: int) -> None:
        """Open the link's socket now: binding a packet socket can take tens of
        milliseconds (an RCU grace period), which must not delay the first
        gratuitous ARP of a take-over."""
        if family == 4 and link.index not in self._arp:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
            try:
                sock.bind((link.name, ETH_P_ARP))
            except OSError:
                sock.close()
                raise
            self._arp[link.index] = sock
        elif family == 6 and link.index not in self._icmp6:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, link.name.encode())
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, link.index)
            except OSError:
                sock.close()
                raise
            self._icmp6[link.index] = sock

    def announce(self, link: Link, vip: VIP) -> None:
        self.prepare(link, vip.version)
        if vip.version == 4:
            self._arp[link.index].send(garp_frame(link.mac, vip.ip))
        else:
            self._icmp6[link.index].sendto(unsolicited_na(link.mac, vip.ip), ("ff02::1", 0, 0, link.index))
