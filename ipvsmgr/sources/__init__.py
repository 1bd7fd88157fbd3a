"""Discovery sources: where a virtual server finds reals besides its list.

One module per source, each a class with `describe()` and `fetch()`, which
returns the endpoints and how long they may be trusted, or raises
SourceError. The gate (gate.py) turns answers and failures into the list a
service runs; the discovery part (parts/discovery.py) runs each source on
its own schedule. A new kind of source (Consul, Kubernetes EndpointSlices)
is one more module and one more branch in `make`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ipvsmgr.config.model import Discovery
    from ipvsmgr.sources.gate import Endpoint


class SourceError(Exception):
    """A source gave no usable answer this time; the message says why."""


class Source(Protocol):
    kind: str

    def describe(self) -> str: ...

    async def fetch(self) -> tuple[list[Endpoint], float]: ...


def make(discovery: Discovery, family: int) -> Source:
    from ipvsmgr.sources.dns import DnsSource

    return DnsSource(discovery.dns, family)
