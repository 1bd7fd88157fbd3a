"""The host side of VRRP: interfaces, VIPs, gratuitous ARP and unsolicited NA.

Kept apart from the protocol and from the asyncio adapter so the adapter
reads as protocol plumbing. pyroute2 is imported here only.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from vrrp.packet import VIP

IFA_F_NODAD = 0x02
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
    """One rtnetlink socket for links and addresses (synchronous; calls take microseconds)."""

    def __init__(self) -> None:
        self._ipr = IPRoute()

    def close(self) -> None:
        self._ipr.close()

    def link(self, name: str) -> Link | None:
        found = self._ipr.link_lookup(ifname=name)
        if not found:
            return None
        index = found[0]
        msg = self._ipr.get_links(index)[0]
        mac_text = msg.get_attr("IFLA_ADDRESS") or "00:00:00:00:00:00"
        operstate = msg.get_attr("IFLA_OPERSTATE")
        up = bool(msg["flags"] & 1) and operstate in ("UP", "UNKNOWN")
        v4: list[ipaddress.IPv4Address] = []
        ll: ipaddress.IPv6Address | None = None
        for a in self._ipr.get_addr(index=index):
            text = a.get_attr("IFA_ADDRESS")
            flags = a.get_attr("IFA_FLAGS") or a["flags"]
            if a["family"] == socket.AF_INET:
                addr4 = ipaddress.IPv4Address(text)
                if flags & 0x01:  # IFA_F_SECONDARY: a VIP or alias, never the primary
                    v4.append(addr4)
                else:
                    v4.insert(0, addr4)
            elif a["family"] == socket.AF_INET6:
                addr6 = ipaddress.IPv6Address(text)
                if addr6.is_link_local and not flags & 0x40 and ll is None:  # not IFA_F_TENTATIVE
                    ll = addr6
        return Link(name, index, bytes.fromhex(mac_text.replace(":", "")), up, tuple(v4), ll)

    def add_vip(self, index: int, vip: VIP) -> bool:
        """Add vip to the link; False if it was there already."""
        try:
            self._ipr.addr(
                "add", index=index, address=str(vip.ip), prefixlen=vip.network.prefixlen, flags=IFA_F_NODAD
            )
        except NetlinkError as e:
            if e.code == errno.EEXIST:
                return False
            raise
        return True

    def del_vip(self, index: int, vip: VIP) -> bool:
        """Remove vip from the link; False if it was not there."""
        try:
            self._ipr.addr("del", index=index, address=str(vip.ip), prefixlen=vip.network.prefixlen)
        except NetlinkError as e:
            if e.code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV):
                return False
            raise
        return True

    def has_address(self, index: int, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(a.get_attr("IFA_ADDRESS") == str(address) for a in self._ipr.get_addr(index=index))


class LinkEvents:
    """An rtnetlink socket subscribed to link and address changes: readable when
    something changed, so tracking need not poll."""

    GROUPS = 0x1 | 0x10 | 0x100  # RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR

    def __init__(self) -> None:
        self._ipr = IPRoute()
        try:
            self._ipr.bind(groups=self.GROUPS)
        except BaseException:
            self._ipr.close()
            raise

    def fileno(self) -> int:
        return int(self._ipr.fileno())

    def drain(self) -> int:
        """Read what is waiting (call when readable); the number of messages."""
        return len(self._ipr.get())

    def close(self) -> None:
        self._ipr.close()


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
