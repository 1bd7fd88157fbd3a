"""Names an operator types (a virtual server's name, a real as ADDRESS[:PORT])
to configuration objects, with errors that list what would have matched."""

from __future__ import annotations

import ipaddress

from ipvsmgr.config.model import Config, RealServer, VirtualServer
from ipvsmgr.ipvs.model import DestKey
from ipvsmgr.reconcile.desired import destination


class NotFound(LookupError):
    pass


def virtual_server(config: Config, name: str) -> VirtualServer:
    for vs in config.virtual_servers:
        if vs.name == name:
            return vs
    known = ", ".join(sorted(v.name for v in config.virtual_servers)) or "none configured"
    raise NotFound(f"no virtual server named {name!r} (virtual servers: {known})")


def parse_endpoint(text: str) -> tuple[str, int | None]:
    """'198.18.1.1:80', '198.18.1.1', '[2001:db8::1]:80', '2001:db8::1' -> (address, port or None)."""
    t = text.strip()
    host, port = t, None
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            raise NotFound(f"{text!r}: missing ']'")
        host, rest = t[1:end], t[end + 1 :]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise NotFound(f"{text!r}: expected [ADDRESS]:PORT")
            port = int(rest[1:])
    elif t.count(":") == 1:
        host, _, p = t.partition(":")
        if not p.isdigit():
            raise NotFound(f"{text!r}: the port must be a number")
        port = int(p)
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise NotFound(f"{text!r} is not an IP address (ADDRESS or ADDRESS:PORT)") from None
    if port is not None and not 0 <= port <= 65535:
        raise NotFound(f"{text!r}: port out of range")
    return address, port


def real(vs: VirtualServer, text: str) -> tuple[RealServer, DestKey]:
    address, port = parse_endpoint(text)
    found = [
        (r, d.key)
        for r in vs.reals
        if (d := destination(r)).key.addr == address and (port is None or d.key.port == port)
    ]
    if len(found) == 1:
        return found[0]
    names = ", ".join(str(destination(r).key) for r in vs.reals) or "none"
    if not found:
        raise NotFound(f"virtual server {vs.name!r} has no real {text} (reals: {names})")
    raise NotFound(f"{text} matches several reals of {vs.name!r}: give the port (reals: {names})")
