"""vrrp.netlink's Host and LinkEvents used the way the daemon uses them: made and
called inside a running asyncio loop, in a network namespace entered by one
thread only (issue 16: pyroute2 0.9's IPRoute raised "This event loop is
already running" there; rtnetlink is now spoken with the standard library,
vrrp/rtnetlink.py), with `ip` as the independent reader.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.netns.lab import have_root, in_netns, sh
from vrrp.netlink import Host, LinkEvents

VIP = ipaddress.ip_interface("198.18.77.10/24")
VMAC = bytes.fromhex("00005e000142")


@pytest.fixture
def ns() -> Iterator[str]:
    """A namespace holding a veth pair (veth0 up, 198.18.77.1/24) and nothing else."""
    if not have_root():
        pytest.skip("network namespaces need root")
    name = f"nlh-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
        sh("ip", "-n", name, "addr", "add", "198.18.77.1/24", "dev", "veth0")
        sh("ip", "-n", name, "link", "set", "veth0", "up")
        sh("ip", "-n", name, "link", "set", "veth1", "up")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def addresses(ns: str, dev: str) -> set[str]:
    out = json.loads(sh("ip", "-j", "-n", ns, "addr", "show", "dev", dev))
    return {a["local"] for link in out for a in link["addr_info"]}


def test_host_made_and_used_inside_the_running_loop(ns: str) -> None:
    async def body() -> None:
        host = Host()  # where VrrpService and the daemon's BGP VIP holder make it
        try:
            base = host.link("veth0")
            assert base is not None and base.up
            assert base.addresses4 == (ipaddress.IPv4Address("198.18.77.1"),)
            assert host.link("no-such-link") is None
            assert host.add_vip(base.index, VIP)
            assert not host.add_vip(base.index, VIP)  # there already
            assert host.has_address(base.index, VIP.ip)
            assert str(VIP.ip) in addresses(ns, "veth0")  # in the namespace, read by ip
            assert host.del_vip(base.index, VIP)
            assert not host.del_vip(base.index, VIP)
            assert str(VIP.ip) not in addresses(ns, "veth0")

            vmac = host.ensure_macvlan("vmac0", base, VMAC)
            assert vmac.mac == VMAC and not vmac.up
            vmac = host.ensure_macvlan("vmac0", base, VMAC)  # ours from an earlier run: rebuilt
            host.set_up(vmac.index, True)
            assert host.link("vmac0") is not None
            info = json.loads(sh("ip", "-j", "-n", ns, "-d", "link", "show", "vmac0"))[0]["linkinfo"]
            assert (info["info_kind"], info["info_data"]["mode"]) == ("macvlan", "bridge")
            # its sysctls, written by this thread in the namespace, land there too
            sysctl = ["ip", "netns", "exec", ns, "sysctl", "-n"]
            assert sh(*sysctl, "net.ipv4.conf.vmac0.arp_ignore").strip() == "1"
            assert sh(*sysctl, "net.ipv4.conf.vmac0.rp_filter").strip() == "0"
            with pytest.raises(OSError, match="not a macvlan"):
                host.ensure_macvlan("veth1", base, VMAC)  # anything else is refused
            assert host.delete_link(vmac.index)
            assert not host.delete_link(vmac.index)

            # The kernel's refusals are OSError, which every caller handles
            # with the kernel's errno.
            with pytest.raises(OSError) as refused:
                host.set_up(vmac.index, True)  # gone
            assert refused.value.errno == errno.ENODEV
            with pytest.raises(OSError) as refused:
                host.add_vip(vmac.index, VIP)
            assert refused.value.errno == errno.ENODEV
        finally:
            host.close()
            host.close()  # twice: nothing happens
        with pytest.raises(OSError) as closed:
            host.link("veth0")
        assert closed.value.errno == errno.EBADF

    in_netns(ns, lambda: asyncio.run(body()))
    assert sh("ip", "-n", ns, "link", "show", "veth1")  # refused, so still there


def test_host_made_on_a_thread_in_the_namespace_used_from_another(ns: str) -> None:
    """Its requests go to the namespace of the thread that made it, whoever calls."""
    before = set(threading.enumerate())
    host = in_netns(ns, Host)
    try:
        base = host.link("veth0")  # from this (root namespace) thread
        assert base is not None
        assert host.add_vip(base.index, VIP)
        assert str(VIP.ip) in addresses(ns, "veth0")
        assert host.del_vip(base.index, VIP)
    finally:
        host.close()
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("rtnetlink")]  # closed


def test_link_events_wake_the_loop(ns: str) -> None:
    async def body() -> int:
        loop = asyncio.get_running_loop()
        events = LinkEvents()
        woke = asyncio.Event()
        seen: list[int] = []

        def readable() -> None:
            seen.append(events.drain())
            woke.set()

        loop.add_reader(events.fileno(), readable)
        try:
            assert events.drain() == 0  # nothing yet, and no blocking
            host = Host()
            try:
                base = host.link("veth1")
                assert base is not None
                host.set_up(base.index, False)
                await asyncio.wait_for(woke.wait(), 5)
                woke.clear()
                host.add_vip(base.index, VIP)
                await asyncio.wait_for(woke.wait(), 5)
            finally:
                host.close()
        finally:
            loop.remove_reader(events.fileno())
            events.close()
        return sum(seen)

    assert in_netns(ns, lambda: asyncio.run(body())) >= 2


def test_ipv6_vip_without_dad_and_the_link_local(ns: str) -> None:
    """An IPv6 VIP is usable at once (no DAD: 'tentative' would keep it silent for a second),
    with its prefix, as `ip` reads it; the base's link-local is found once DAD is done."""
    vip6 = ipaddress.ip_interface("2001:db8:77::10/64")

    def body() -> None:
        host = Host()
        try:
            base = host.link("veth0")
            assert base is not None
            assert host.add_vip(base.index, vip6)
            shown = json.loads(sh("ip", "-j", "-n", ns, "-6", "addr", "show", "dev", "veth0"))[0]["addr_info"]
            [entry] = [a for a in shown if a["local"] == str(vip6.ip)]
            assert entry["prefixlen"] == 64 and not entry.get("tentative"), entry
            assert host.has_address(base.index, vip6.ip)
            assert host.del_vip(base.index, vip6)
            assert not host.has_address(base.index, vip6.ip)
            wait = 0
            while (link := host.link("veth0")) is not None and link.link_local6 is None and wait < 50:
                time.sleep(0.1)  # DAD of the link-local itself takes about a second
                wait += 1
            assert link is not None and link.link_local6 is not None and link.link_local6.is_link_local
        finally:
            host.close()

    in_netns(ns, body)
