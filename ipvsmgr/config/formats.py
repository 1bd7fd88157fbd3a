"""String formats the schema names (`format: ip-address`, `format: ipv4-netmask`)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable


def is_ip_address(value: object) -> bool:
    if not isinstance(value, str):
        return True  # formats only constrain strings
    # inet_pton: C speed for 100,000 reals; it also refuses scoped addresses
    # (fe80::1%eth0) and IPv4 with leading zeros, like ipaddress does.
    for af in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(af, value)
        except (OSError, ValueError):  # ValueError: a NUL inside ("\0" in YAML)
            continue
        return True
    return False


def is_ipv4_address(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        socket.inet_pton(socket.AF_INET, value)
    except (OSError, ValueError):
        return False
    return True


def is_ipv4_netmask(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        mask = int(ipaddress.IPv4Address(value))
    except ValueError:
        return False
    inverted = mask ^ 0xFFFFFFFF
    # contiguous ones from the left, at least one (a host mask like 0.0.0.255 is not a netmask)
    return mask != 0 and inverted & (inverted + 1) == 0


def is_ip_interface(value: object) -> bool:
    if not isinstance(value, str):
        return True
    address, _, prefix = value.partition("/")
    if not is_ip_address(address):
        return False
    if not prefix:
        return True
    bits = 32 if "." in address else 128
    return prefix.isdigit() and len(prefix) <= 3 and int(prefix) <= bits


FORMATS: dict[str, Callable[[object], bool]] = {
    "ip-address": is_ip_address,
    "ipv4-address": is_ipv4_address,
    "ipv4-netmask": is_ipv4_netmask,
    "ip-interface": is_ip_interface,
}
