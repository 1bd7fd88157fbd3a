"""The XDP guard as the daemon runs it: tables from the configuration, attach, status.

Failure to load (old kernel, verifier, no object) leaves the daemon running
without XDP in a visible degraded state with the verifier's last words;
an attach that fails on one interface is rolled back on the others, so the
guard is either on every configured interface or on none.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from ipvsmgr.config.model import Config, XdpConfig

if TYPE_CHECKING:
    from bpf_offload.guard import Attachment, LoadedGuard
    from bpf_offload.tables import Tables

log = logging.getLogger("ipvsmgr.xdp")

PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "sctp": 132}


def tables_for(config: Config, allow: frozenset[str], block: dict[str, str]) -> Tables:
    """The maps' desired contents: the configuration's lists plus the run-time ones.

    One trie holds both lists and the longest matching prefix decides, so
    198.18.5.7/32 blocked inside an allowed 198.18.5.0/24 is blocked."""
    from bpf_offload.layout import GuardSettings
    from bpf_offload.tables import Service, Tables

    x = config.xdp
    assert x is not None
    services = frozenset(
        Service(v.address, v.port, PROTOS[v.protocol]) for v in config.virtual_servers if v.address
    ) | frozenset(Service(a, port, PROTOS[proto]) for a, port, proto in x.protect)
    # A run-time entry overrides the file's for the same prefix.
    blocks = {p: a for p, a in x.blocklist if p not in allow}
    blocks.update(block)
    return Tables(
        services=services,
        allow=frozenset(p for p in x.allowlist if p not in block) | allow,
        block=blocks,
        settings=GuardSettings(
            src_syn_rate=x.syn_rate_per_source,
            src_syn_burst=x.syn_burst_per_source,
            attack_syn_rate=x.attack_syn_rate,
            attack_hold=x.attack_hold,
            verified_ttl=x.verified_ttl,
            challenge=x.challenge,
            verified_syn_rate=x.verified_syn_rate,
            verified_syn_burst=x.verified_syn_burst,
            sample_every=x.drop_sample_every,
        ),
    )


class XdpShield:
    def __init__(self) -> None:
        self.cfg: XdpConfig | None = None
        self.guard: LoadedGuard | None = None
        self.attachments: dict[str, Attachment] = {}
        self.error: str | None = None
        self.error_log = ""
        self.object = ""
        self.counters: Counter[str] = Counter()

    @property
    def active(self) -> bool:
        return self.guard is not None and bool(self.attachments)

    def start(self, config: Config, tables: Tables) -> None:
        """Load, fill the maps, attach everywhere; on any failure run without XDP and say why."""
        from bpf_offload import guard as g

        x = config.xdp
        assert x is not None
        self.cfg = x
        self.error, self.error_log = None, ""
        try:
            path = g.find_object(x.object)
            self.object = str(path)
            loaded = g.LoadedGuard(path, x.pin_path)
        except (g.GuardError, OSError) as e:
            self._degraded(e)
            return
        self.guard = loaded
        self.sync(tables)
        made: list[Attachment] = []
        try:
            for ifname in x.interfaces:
                a = loaded.attach(ifname, x.mode)
                made.append(a)
                verb = "kept" if a.adopted else "attached"
                log.info("xdp: %s program %d on %s (%s)", verb, a.prog_id, ifname, a.mode)
        except g.GuardError as e:
            for a in made:
                if not a.adopted:
                    g.detach(a.interface)
            self.attachments = {}
            self._degraded(e)
            return
        self.attachments = {a.interface: a for a in made}

    def _degraded(self, e: Exception) -> None:
        self.error = str(e)
        self.error_log = getattr(e, "log_tail", lambda: "")()
        self.counters["load_failures"] += 1
        log.error("xdp: running WITHOUT the XDP guard: %s", self.error)
        for line in self.error_log.splitlines():
            log.error("xdp:   %s", line)
        if self.guard is not None:
            self.guard.close()
            self.guard = None

    def sync(self, tables: Tables) -> int:
        """Make the maps hold `tables`; returns the number of map writes."""
        if self.guard is None:
            return 0
        from bpf_offload.tables import desired_maps, diff

        current = self.guard.read_synced()
        changes = diff(desired_maps(tables, current["vips"]), current)
        n = self.guard.apply(changes)
        self.counters["map_writes"] += n
        return n

    def reload(self, config: Config, tables: Tables) -> None:
        """A new configuration: limits and lists change in place; where or how it is attached
        changes by attaching again (the program itself is replaced atomically)."""
        x = config.xdp
        assert x is not None
        old = self.cfg
        placement = old is None or (old.interfaces, old.mode, old.object, old.pin_path) != (
            x.interfaces, x.mode, x.object, x.pin_path,
        )  # fmt: skip
        if not placement and self.guard is not None:
            self.cfg = x
            self.sync(tables)
            return
        if old is not None:
            for ifname in set(old.interfaces) - set(x.interfaces):
                self._detach(ifname)
        self.close()
        self.start(config, tables)

    def _detach(self, ifname: str) -> None:
        from bpf_offload import guard as g

        try:
            if g.detach(ifname):
                log.info("xdp: detached from %s", ifname)
        except OSError as e:
            log.error("xdp: detaching from %s failed: %s", ifname, e)

    def remove(self) -> None:
        """The xdp: section left the configuration: detach everywhere, forget the pinned state."""
        from bpf_offload import guard as g

        cfg = self.cfg
        if cfg is not None:
            for ifname in cfg.interfaces:
                self._detach(ifname)
        self.close()
        if cfg is not None:
            g.unpin(cfg.pin_path)
        self.cfg = None
        self.error = None

    def close(self) -> None:
        """Let go of the program; it stays attached with its pinned maps (a restart adopts it)."""
        if self.guard is not None:
            self.guard.close()
            self.guard = None
        self.attachments = {}

    @property
    def state(self) -> str:
        return "active" if self.active else ("degraded" if self.error else "off")

    def status(self, detail: bool = True, samples: int = 20) -> dict[str, Any]:
        """Attachment, counters, attack state; with detail, recent drops and the number
        of verified sources too (that one walks a map of up to 65,536 keys: not per scrape)."""
        from bpf_offload import guard as g
        from bpf_offload import layout

        cfg = self.cfg
        out: dict[str, Any] = {
            "state": self.state,
            "error": self.error,
            "verifier_log_tail": self.error_log,
            "object": self.object,
            "pin_path": cfg.pin_path if cfg else None,
            "challenge": cfg.challenge if cfg else None,
            "verified_budget": [cfg.verified_syn_rate, cfg.verified_syn_burst] if cfg else None,
            "interfaces": [
                {"name": a.interface, "mode": a.mode, "program_id": a.prog_id, "adopted": a.adopted}
                for a in self.attachments.values()
            ],
            "counters": {},
            "vips": [],
            "drop_samples": [],
        }
        if self.guard is None:
            return out
        out["program_id"] = self.guard.prog_id
        maps = self.guard.maps
        for name, (packets, nbytes) in g.read_stats(maps).items():
            verdict = dict(layout.REASONS)[name]
            out["counters"][name] = {"verdict": verdict, "packets": packets, "bytes": nbytes}
        out["vips"] = [
            {
                "address": v.address,
                "under_attack": v.under_attack,
                "syn_rate": v.syn_rate,
                "attacks": v.attacks,
            }
            for v in g.read_attack(maps, time.monotonic_ns())
        ]
        now = time.monotonic_ns()
        out["drop_samples"] = [
            {
                "age_s": round((now - s.ktime_ns) / 1e9, 1), "reason": s.reason, "source": s.source,
                "destination": s.destination, "protocol": s.proto, "sport": s.sport, "dport": s.dport,
                "tcp_flags": s.tcp_flags, "ifindex": s.ifindex,
            }
            for s in (g.read_samples(maps)[-samples:] if detail else [])
        ]  # fmt: skip
        if detail:
            out["verified_sources"] = len(maps["verified"].key_list())
        return out
