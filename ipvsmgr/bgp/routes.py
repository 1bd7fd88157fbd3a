"""Which prefixes to announce now, and the ExaBGP commands that get there: pure.

The daemon's state (quorum per virtual server, VRRP states, the operator's
drain-node) goes in; a map prefix -> Route comes out; `commands()` diffs two
such maps into API lines. A prefix goes to the peers of its own family only
(`neighbor A announce ...`): an IPv6 route with `next-hop self` over an IPv4
session would carry an IPv4 next hop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ipvsmgr.config.model import BgpAnnouncement, BgpConfig


@dataclass(frozen=True, slots=True)
class Health:
    """What `when: healthy` reads for one virtual server."""

    has_quorum_rule: bool
    quorum_up: bool
    reals_up: int
    pending: int = 0  # checked reals without a first verdict, while the node starts
    reals: int = 0  # all of them, up or not (the watermarks' denominator)

    @property
    def share_up(self) -> float:
        return self.reals_up / self.reals if self.reals else 0.0

    @property
    def healthy(self) -> bool:
        # Without a quorum rule, one real up is enough: announcing a VIP with no
        # real behind it would black-hole this node's share of the ECMP flows.
        return self.quorum_up if self.has_quorum_rule else self.reals_up > 0


@dataclass(frozen=True, slots=True)
class Route:
    prefix: str
    attributes: str  # ExaBGP's text after the prefix: next-hop, med, communities...
    family: int


@dataclass(frozen=True, slots=True)
class Decision:
    announce: bool
    reason: str  # why, for status and the log


def attributes(a: BgpAnnouncement) -> str:
    parts = [f"next-hop {a.next_hop}"]
    if a.med is not None:
        parts.append(f"med {a.med}")
    if a.local_preference is not None:
        parts.append(f"local-preference {a.local_preference}")
    if a.communities:
        parts.append(f"community [{' '.join(a.communities)}]")
    if a.large_communities:
        parts.append(f"large-community [{' '.join(a.large_communities)}]")
    return " ".join(parts)


def decide(
    a: BgpAnnouncement,
    health: Mapping[str, Health],
    vrrp: Mapping[str, str],
    node_drained: bool,
    announced: bool = False,  # what it was: the watermarks' hysteresis
) -> Decision:
    if node_drained:
        return Decision(False, "node drained (ipvsmgr drain-node)")
    if a.when == "always":
        return Decision(True, "always")
    if a.when == "vrrp-master":
        state = vrrp.get(a.vrrp_instance, "init")
        return Decision(state == "master", f"VRRP {a.vrrp_instance} is {state}")
    # A starting node announces once every real has its first verdict: with a
    # real still pending (weight 0) its Maglev table differs from the other
    # nodes', and flows the routers move to it would reach the wrong real.
    pending = [name for name in a.virtual_servers if name in health and health[name].pending]
    if pending:
        return Decision(False, "waiting for the first health verdicts: " + ", ".join(pending))
    sick = [name for name in a.virtual_servers if not (name in health and health[name].healthy)]
    if sick:
        return Decision(False, "no quorum: " + ", ".join(sick))
    if a.watermarks is not None:
        # Hysteresis on the share of reals up: withdrawn below low, back only at high, so
        # a service at the edge does not flap its routes (and the flows ECMP moves with them).
        low, high = a.watermarks
        shares = {name: health[name].share_up for name in a.virtual_servers}
        said = ", ".join(f"{n} {s:.0%}" for n, s in shares.items())
        if announced:
            below = [n for n, s in shares.items() if s < low]
            if below:
                return Decision(False, f"below the low watermark {low:.0%}: {said}")
        elif any(s < high for s in shares.values()):
            return Decision(False, f"not yet at the high watermark {high:.0%}: {said}")
        return Decision(True, f"healthy, {said} up")
    return Decision(True, "healthy: " + ", ".join(a.virtual_servers))


def desired(
    config: BgpConfig,
    health: Mapping[str, Health],
    vrrp: Mapping[str, str],
    node_drained: bool,
    before: Mapping[str, Decision] | None = None,
) -> tuple[dict[str, Route], dict[str, Decision]]:
    """The routes to have announced, and the decision (with its reason) for every prefix
    (`before`: the last decisions, which the watermarks' hysteresis reads)."""
    routes: dict[str, Route] = {}
    decisions: dict[str, Decision] = {}
    last = before or {}
    for a in config.announcements:
        was = last.get(a.prefix)
        d = decisions[a.prefix] = decide(a, health, vrrp, node_drained, was is not None and was.announce)
        if d.announce:
            routes[a.prefix] = Route(a.prefix, attributes(a), a.family)
    return routes, decisions


def _to(config: BgpConfig, route: Route, verb: str) -> list[str]:
    return [
        f"neighbor {p.address} {verb} route {route.prefix} {route.attributes}"
        for p in config.peers
        if p.family == route.family
    ]


def commands(config: BgpConfig, announced: Mapping[str, Route], wanted: Mapping[str, Route]) -> list[str]:
    """API lines that take ExaBGP from `announced` to `wanted`: withdrawals first
    (a drained node stops attracting flows as early as possible), then
    announcements (a changed attribute is a new announcement: BGP replaces)."""
    out: list[str] = []
    for prefix, route in announced.items():
        if prefix not in wanted:
            out += _to(config, route, "withdraw")
    for prefix, route in wanted.items():
        if announced.get(prefix) != route:
            out += _to(config, route, "announce")
    return out
