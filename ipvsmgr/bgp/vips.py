"""The announced VIPs as local addresses, so IPVS sees the traffic the routers send.

IPVS takes packets to a local address only. A VRRP node gets its VIPs from
VRRP; a BGP node has nobody else to put them anywhere, so ipvsmgr keeps each
announced host address (/32, /128) on `bgp.vip_interface` (default lo) while
it runs, announced or not: a withdrawn node still serves the flows that
reach it until the routers have moved them. Addresses that were there
before ipvsmgr added them are the operator's and are never removed.
"""

from __future__ import annotations

import ipaddress
import logging

from ipvsmgr.config.model import BgpConfig

log = logging.getLogger("ipvsmgr.bgp")


def host_addresses(config: BgpConfig) -> set[str]:
    """Host routes whose address this node must hold (VRRP holds its own instances' VIPs)."""
    out = set()
    for a in config.announcements:
        net = ipaddress.ip_network(a.prefix)
        if net.num_addresses == 1 and a.when != "vrrp-master":
            out.add(str(net.network_address))
    return out


class VipHolder:
    def __init__(self, interface: str) -> None:
        from vrrp.netlink import Host  # only for configurations with BGP

        self.interface = interface
        self._host = Host()
        self.added: set[str] = set()  # put there by us: ours to remove

    def sync(self, wanted: set[str]) -> None:
        link = self._host.link(self.interface)
        if link is None:
            log.error("bgp.vip_interface %s does not exist: VIPs not added", self.interface)
            return
        for address in sorted(wanted - self.added):
            vip = ipaddress.ip_interface(address)
            if self._host.add_vip(link.index, vip):
                self.added.add(address)
                log.info("VIP %s added to %s", address, self.interface)
        for address in sorted(self.added - wanted):
            self._host.del_vip(link.index, ipaddress.ip_interface(address))
            self.added.discard(address)
            log.info("VIP %s removed from %s", address, self.interface)

    def close(self) -> None:
        """Remove what we added; the rest stays."""
        try:
            self.sync(set())
        except OSError as e:
            log.error("removing VIPs from %s: %s", self.interface, e)
        self._host.close()
