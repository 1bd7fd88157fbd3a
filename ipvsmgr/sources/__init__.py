"""Discovery sources: where a virtual server finds reals besides its list.

One module per source, each a class with `describe()` and either `fetch()`,
which returns the endpoints and how long they may be trusted or raises
SourceError (DNS: asked on a schedule), or `watch(answer, fail)`, which
runs for ever and calls back on every change and outage (etcd). The gate
(gate.py) turns answers and failures into the list a service runs; the
discovery part (parts/discovery.py) runs each source. A new kind of source
(Consul, Kubernetes EndpointSlices) is one more module and one more branch
in `make`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ipvsmgr.config.model import Discovery
    from ipvsmgr.sources.gate import Endpoint


class SourceError(Exception):
    """A source gave no usable answer this time; the message says why."""


class Asked(Protocol):
    kind: str

    def describe(self) -> str: ...

    async def fetch(self) -> tuple[list[Endpoint], float]: ...


class Watched(Protocol):
    kind: str

    def describe(self) -> str: ...

    async def watch(self, answer: Callable[[list[Endpoint]], None], fail: Callable[[str], None]) -> None: ...


Source = Asked | Watched


def make(discovery: Discovery, family: int) -> Source:
    if discovery.etcd is not None:
        from ipvsmgr.sources.etcd import EtcdSource

        return EtcdSource(discovery.etcd)
    from ipvsmgr.sources.dns import DnsSource

    assert discovery.dns is not None
    return DnsSource(discovery.dns, family)
