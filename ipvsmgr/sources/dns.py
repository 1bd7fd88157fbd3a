"""DNS discovery: a name's A or AAAA records (the service's port), or its SRV records
(their targets' addresses, ports and weights), asked again when the TTL runs out.

dnspython does the protocol: its resolver retries over TCP when a UDP answer
is truncated. NXDOMAIN, an answer without records and a timeout are
failures, which the gate (gate.py) answers by keeping the last good list.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

from ipvsmgr.sources import SourceError
from ipvsmgr.sources.gate import Endpoint


@dataclass(frozen=True, slots=True)
class DnsSpec:
    name: str
    type: str = "A"  # A | AAAA | SRV
    port: int | None = None  # A/AAAA: the reals' port (default: the service's)
    nameservers: tuple[tuple[str, int], ...] = ()  # () : /etc/resolv.conf's
    timeout: float = 2.0
    min_ttl: float = 1.0  # ask again no sooner than this ...
    max_ttl: float = 300.0  # ... and no later, whatever the TTL says


class DnsSource:
    kind = "dns"

    def __init__(self, spec: DnsSpec, family: int) -> None:
        import dns.asyncresolver  # only a daemon with a DNS source needs dnspython

        self.spec = spec
        self.family = family
        if spec.nameservers:
            self.resolver = dns.asyncresolver.Resolver(configure=False)
            self.resolver.nameservers = [a for a, _ in spec.nameservers]
            self.resolver.port = spec.nameservers[0][1]
        else:
            self.resolver = dns.asyncresolver.Resolver()
        self.resolver.lifetime = spec.timeout
        self.resolver.cache = None  # the TTL is ours to honour, once

    def describe(self) -> str:
        return f"dns {self.spec.type} {self.spec.name}"

    async def fetch(self) -> tuple[list[Endpoint], float]:
        """The endpoints and how long they may be trusted; SourceError when there are none."""
        if self.spec.type == "SRV":
            found, ttl = await self._srv()
        else:
            addrs, ttl = await self._addresses(self.spec.name, self.spec.type)
            found = [Endpoint(a, self.spec.port) for a in addrs]
        if not found:
            raise SourceError(f"{self.describe()}: no records")
        return found, min(max(ttl, self.spec.min_ttl), self.spec.max_ttl)

    async def _lookup(self, name: str, rtype: str) -> Any:
        """The records of one question, or SourceError saying why there are none."""
        import dns.exception
        import dns.resolver

        try:
            answer = await self.resolver.resolve(name, rtype)
        except dns.resolver.NXDOMAIN:
            raise SourceError(f"dns {rtype} {name}: NXDOMAIN (no such name)") from None
        except dns.resolver.NoAnswer:
            raise SourceError(f"dns {rtype} {name}: no {rtype} records") from None
        except dns.resolver.NoNameservers as e:
            raise SourceError(f"dns {rtype} {name}: no server answered ({e.msg})") from None
        except dns.exception.Timeout:
            raise SourceError(f"dns {rtype} {name}: timed out after {self.spec.timeout:g}s") from None
        except dns.exception.DNSException as e:
            raise SourceError(f"dns {rtype} {name}: {e}") from None
        if answer.rrset is None or not len(answer.rrset):
            raise SourceError(f"dns {rtype} {name}: no {rtype} records")
        return answer.rrset

    async def _addresses(self, name: str, rtype: str) -> tuple[list[str], float]:
        rrset = await self._lookup(name, rtype)
        return [r.to_text() for r in rrset], float(rrset.ttl)

    async def _srv(self) -> tuple[list[Endpoint], float]:
        rrset = await self._lookup(self.spec.name, "SRV")
        records = list(rrset)
        best = min(r.priority for r in records)  # RFC 2782: the lowest priority is used while it answers
        chosen = [r for r in records if r.priority == best]
        rtype = "AAAA" if self.family == socket.AF_INET6 else "A"
        targets = sorted({r.target.to_text() for r in chosen})
        looked = await asyncio.gather(*(self._addresses(t, rtype) for t in targets), return_exceptions=True)
        ttl = float(rrset.ttl)
        by_target: dict[str, list[str]] = {}
        for t, got in zip(targets, looked, strict=True):
            if isinstance(got, BaseException):
                continue  # one target without an address: the others still serve
            by_target[t], ttl = got[0], min(ttl, got[1])
        out = []
        for r in chosen:
            for a in by_target.get(r.target.to_text(), ()):
                # SRV weight 0 is "rarely, when others exist": the smallest IPVS weight that serves
                out.append(Endpoint(a, r.port, max(1, r.weight)))
        return out, ttl
