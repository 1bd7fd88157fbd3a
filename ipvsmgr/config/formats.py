"""String formats the schema names (`format: ip-address`, `format: ipv4-netmask`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable


def is_ip_address(value: object) -> bool:
    if not isinstance(value, str):
        return True  # formats only constrain strings
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_ipv4_netmask(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        ipaddress.IPv4Network(f"0.0.0.0/{value}")
    except ValueError:
        return False
    return "." in value  # a bare prefix length belongs in `prefix:`


FORMATS: dict[str, Callable[[object], bool]] = {
    "ip-address": is_ip_address,
    "ipv4-netmask": is_ipv4_netmask,
}
