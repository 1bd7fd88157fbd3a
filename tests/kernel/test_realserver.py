"""`ipvsmgr realserver setup|check` for tunnel forwarding, in the VM (the host
kernel has no ipip/gre/fou): what is missing, the fix, read back with `ip`."""

from __future__ import annotations

import ipaddress
import uuid

import pytest

from ipvsmgr.lab import in_netns, sh

VIP = "198.18.100.1"


@pytest.mark.parametrize(("tunnel", "device"), [("ipip", "tunl0"), ("gre", "gre0"), ("gue", "tunl0")])
def test_tunnel_real_server_setup(tunnel: str, device: str) -> None:
    from ipvsmgr import realserver
    from vrrp.netlink import Host

    ns = f"rs-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh(
            "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"
        )  # strict, as many distros

        def items() -> list[realserver.Item]:
            host = Host()
            try:
                return realserver.items(host, [ipaddress.IPv4Address(VIP)], "tunnel", tunnel, 6080)
            finally:
                host.close()

        def setup() -> None:
            host = Host()
            try:
                for item in realserver.items(host, [ipaddress.IPv4Address(VIP)], "tunnel", tunnel, 6080):
                    if not item.ok:
                        item.fix()
            finally:
                host.close()

        before = in_netns(ns, items)
        missing = {i.what.split(" (")[0] for i in before if not i.ok}
        assert f"{device} up" in missing and "net.ipv4.conf.all.rp_filter = 2" in missing, missing
        in_netns(ns, setup)
        after = in_netns(ns, items)
        assert all(i.ok for i in after), [i.what for i in after if not i.ok]
        # read back independently
        assert f"{VIP}/32" in sh("ip", "-n", ns, "-o", "addr", "show", "dev", "lo")
        assert ",UP" in sh("ip", "-n", ns, "-o", "link", "show", "dev", device)
        assert (
            sh("ip", "netns", "exec", ns, "sysctl", "-n", f"net.ipv4.conf.{device}.rp_filter").strip() == "0"
        )
        assert sh("ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv4.conf.all.rp_filter").strip() == "2"
        assert sh("ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv4.conf.all.arp_ignore").strip() == "1"
        if tunnel == "gue":
            assert "port 6080 gue" in sh("ip", "-n", ns, "fou", "show")
    finally:
        sh("ip", "netns", "del", ns, check=False)
