"""`ipvsmgr realserver setup|check`: what a real server needs for DR or tunnel forwarding.

With direct routing and tunnels, packets reach the real still addressed to
the VIP, so the real must own the VIP without announcing it: the VIP on lo,
and ARP restricted (arp_ignore=1: answer only for addresses of the asking
interface; arp_announce=2: never use the VIP as an ARP source) so the real
does not pull the VIP's traffic to itself. A tunnelled packet also arrives
decapsulated on the tunnel device, with the client's source address,
which a strict reverse-path filter drops (the route back is the uplink):
rp_filter 0 on the device and not strict (1) for `all`, since the kernel
uses the larger of the two. Each fallback tunnel device (tunl0, gre0,
ip6tnl0, ip6gre0) comes with its module; GUE needs a fou port.

Each requirement is an Item that reads the current state and knows its fix;
`check` lists them, `setup` fixes what is missing and checks again.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from vrrp.netlink import Host, read_sysctl, write_sysctl
from vrrp.packet import VIP

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
TUNNELS = ("ipip", "gre", "gue")


@dataclass(frozen=True, slots=True)
class Item:
    what: str
    ok: bool
    fix: Callable[[], None]


def _device(tunnel: str, v6: bool) -> tuple[str, str]:
    """The fallback device that receives this tunnel type, and its module."""
    if tunnel == "gre":
        return ("ip6gre0", "ip6_gre") if v6 else ("gre0", "ip_gre")
    return ("ip6tnl0", "ip6_tunnel") if v6 else ("tunl0", "ipip")  # ipip, and GUE's inner packet


def _modprobe(module: str) -> None:
    r = subprocess.run(["modprobe", module], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise OSError(f"modprobe {module}: {r.stderr.strip() or f'exit {r.returncode}'}")


def _fou_ports() -> set[int]:
    r = subprocess.run(["ip", "fou", "show"], capture_output=True, text=True, check=False)
    ports = set()
    for line in r.stdout.splitlines():
        words = line.split()
        if "port" in words:
            ports.add(int(words[words.index("port") + 1]))
    return ports


def _fou_add(port: int) -> None:
    # The fou module is not loaded on demand by `ip fou` on every kernel.
    subprocess.run(["modprobe", "fou"], capture_output=True, check=False)
    r = subprocess.run(
        ["ip", "fou", "add", "port", str(port), "gue"], capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        raise OSError(f"ip fou add port {port} gue: {r.stderr.strip() or f'exit {r.returncode}'}")


def _sysctl_item(name: str, ok: Callable[[int], bool], value: str, why: str) -> Item:
    raw = read_sysctl(name)
    current = int(raw) if raw is not None and raw.lstrip("-").isdigit() else None
    dotted = name.replace("/", ".")
    return Item(
        f"{dotted} = {value} ({why}; now {raw if raw is not None else 'missing'})",
        current is not None and ok(current),
        lambda: write_sysctl(name, value),
    )


def items(
    host: Host, vips: list[Address], forwarding: str, tunnel: str = "ipip", gue_port: int = 0
) -> list[Item]:
    out: list[Item] = []
    lo = host.link("lo")
    assert lo is not None
    for vip in vips:
        bits = 32 if vip.version == 4 else 128
        out.append(
            Item(
                f"VIP {vip}/{bits} on lo",
                host.has_address(lo.index, vip),
                lambda vip=vip, bits=bits: _add_vip(host, lo.index, vip, bits),  # type: ignore[misc]
            )
        )
    if any(v.version == 4 for v in vips):
        out.append(
            _sysctl_item(
                "net/ipv4/conf/all/arp_ignore", lambda v: v in (1, 2), "1", "no ARP replies for the VIP"
            )
        )
        out.append(
            _sysctl_item("net/ipv4/conf/all/arp_announce", lambda v: v == 2, "2", "the VIP never in ARP")
        )
    if forwarding != "tunnel":
        return out
    for v6 in sorted({v.version == 6 for v in vips}):
        dev, module = _device(tunnel, v6)
        link = host.link(dev)
        out.append(
            Item(
                f"{dev} up ({tunnel} decapsulation; module {module})",
                link is not None and link.up,
                lambda dev=dev, module=module: _device_up(host, dev, module),  # type: ignore[misc]
            )
        )
        if not v6:
            out.append(
                _sysctl_item(f"net/ipv4/conf/{dev}/rp_filter", lambda v: v == 0, "0", "tunnelled sources")
            )
            out.append(
                _sysctl_item(
                    "net/ipv4/conf/all/rp_filter", lambda v: v != 1, "2", "not strict: the larger wins"
                )
            )
    if tunnel == "gue":
        out.append(
            Item(
                f"fou port {gue_port} gue (GUE decapsulation)",
                gue_port in _fou_ports(),
                lambda: _fou_add(gue_port),
            )
        )
    return out


def _add_vip(host: Host, index: int, vip: Address, bits: int) -> None:
    iface: VIP = ipaddress.ip_interface(f"{vip}/{bits}")
    host.add_vip(index, iface)


def _device_up(host: Host, dev: str, module: str) -> None:
    link = host.link(dev)
    if link is None:
        _modprobe(module)
        link = host.link(dev)
        if link is None:
            raise OSError(f"{dev} did not appear after loading {module}")
    host.set_up(link.index, True)
