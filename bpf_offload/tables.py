"""Desired contents of the guard's maps, and the diff against what the maps hold (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bpf_offload import layout


@dataclass(frozen=True, slots=True)
class Service:
    address: str
    port: int  # 0: every port
    proto: int  # IPPROTO_*


@dataclass(frozen=True, slots=True)
class Tables:
    """Everything the daemon writes: the program only reads these maps."""

    services: frozenset[Service] = frozenset()
    allow: frozenset[str] = frozenset()  # prefixes
    block: Mapping[str, str] = field(default_factory=dict)  # prefix -> drop | tarpit
    settings: layout.GuardSettings = field(default_factory=layout.GuardSettings)


@dataclass(frozen=True, slots=True)
class MapChange:
    map: str
    key: bytes
    value: bytes | None  # None: delete


def vip_entries(services: Iterable[Service], current: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    """VIP map entries; a VIP keeps its state slot across reloads, new ones take free slots."""
    protos: dict[bytes, int] = {}
    for s in services:
        k = layout.addr16(s.address)
        protos[k] = protos.get(k, 0) | layout.PROTO_BITS[s.proto]
    kept = {k: layout.VIP.unpack(v)[0] for k, v in current.items() if k in protos}
    used = set(kept.values())
    free = (i for i in range(layout.MAX_VIPS) if i not in used)
    out = {}
    for k in sorted(protos):
        index = kept[k] if k in kept else next(free)
        out[k] = layout.VIP.pack(index, protos[k])
    return out


def desired_maps(tables: Tables, current_vips: Mapping[bytes, bytes]) -> dict[str, dict[bytes, bytes]]:
    vips = vip_entries(tables.services, current_vips)
    index = {k: v[:4] for k, v in vips.items()}  # guard_vip.index, packed
    sources = {layout.lpm_key(p): layout.U32.pack(layout.LIST_ACTIONS["allow"]) for p in tables.allow}
    # the one trie holds both lists; a prefix in both is the configuration's error, the block wins here
    sources.update(
        {layout.lpm_key(p): layout.U32.pack(layout.LIST_ACTIONS[a]) for p, a in tables.block.items()}
    )
    zero = layout.U32.pack(0)
    return {
        "services": {
            layout.svc_key(s.address, s.port, s.proto): index[layout.addr16(s.address)]
            for s in tables.services
        },
        "sources": sources,
        "vips": vips,
        "vip_filter": {zero: layout.vip_filter(sorted(vips))},
        "config": {zero: tables.settings.pack(len(sources))},
    }


def diff(
    desired: Mapping[str, Mapping[bytes, bytes]], current: Mapping[str, Mapping[bytes, bytes]]
) -> list[MapChange]:
    """Changes that make the maps equal the desired contents.

    Order matters for a program reading concurrently: VIPs go out before
    their services, services and list entries go in before the VIPs (and
    the filter bits) that make them reachable, and the config (with the
    list size that enables lookups) is written last.
    """
    puts: list[MapChange] = []
    deletes: list[MapChange] = []
    for name in ("services", "sources", "vips", "vip_filter", "config"):
        want = desired.get(name, {})
        have = current.get(name, {})
        for k, v in want.items():
            if have.get(k) != v:
                puts.append(MapChange(name, k, v))
        for k in have:
            if k not in want and name not in ("config", "vip_filter"):
                deletes.append(MapChange(name, k, None))
    vips_out = [c for c in deletes if c.map == "vips"]
    other_out = [c for c in deletes if c.map != "vips"]
    config = [c for c in puts if c.map == "config"]
    other_in = [c for c in puts if c.map != "config"]
    return vips_out + other_in + other_out + config
