"""IPVS's sysctls (net.ipv4.vs.*, per network namespace) as desired state.

Only the settings the configuration names are read, compared and written;
the others keep whatever the kernel or the operator set. Settings leaving
the configuration are not restored (like the connection timeouts): ipvsmgr
cannot know what they were before it ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

BASE = "/proc/sys/net/ipv4/vs"

# name -> (minimum, maximum, why an operator sets it)
KNOWN: dict[str, tuple[int, int, str]] = {
    "am_droprate": (0, 1 << 30, "drop rate under memory pressure with drop_packet"),
    "amemthresh": (0, 1 << 30, "available-memory threshold (pages) for the defence strategies"),
    "backup_only": (0, 1, "a connection-sync backup does not forward (director only)"),
    "cache_bypass": (0, 1, "forward to the original destination when no real is available"),
    "conn_reuse_mode": (0, 3, "reschedule a reused client port instead of following the old entry"),
    "conntrack": (0, 1, "keep netfilter connection tracking entries for IPVS traffic"),
    "drop_entry": (0, 3, "drop random connection entries under memory pressure (SYN-flood defence)"),
    "drop_packet": (0, 3, "drop packets at am_droprate under memory pressure"),
    "expire_nodest_conn": (0, 1, "expire a connection at once when its real is deleted"),
    "expire_quiescent_template": (0, 1, "expire persistence templates of a weight-0 real"),
    "ignore_tunneled": (0, 1, "let tunnelled packets pass IPVS untouched"),
    "nat_icmp_send": (0, 1, "send ICMP errors for NAT connections without a real"),
    "pmtu_disc": (0, 1, "path MTU discovery for tunnel forwarding"),
    "run_estimation": (0, 1, "the rate estimators (cps, bytes/s); off saves CPU"),
    "schedule_icmp": (0, 1, "schedule ICMP packets that arrive without a connection"),
    "secure_tcp": (0, 3, "stricter TCP state timeouts under memory pressure"),
    "sloppy_sctp": (0, 1, "schedule SCTP connections from any packet, not only INIT"),
    "sloppy_tcp": (0, 1, "schedule TCP connections from any packet, not only SYN (ECMP scale-out)"),
    "snat_reroute": (0, 1, "route NAT replies again after SNAT"),
    "sync_persist_mode": (0, 1, "sync only persistence templates"),
    "sync_ports": (1, 127, "UDP ports (threads) used by the sync daemon"),
    "sync_qlen_max": (1, 1 << 30, "sync messages queued at most"),
    "sync_retries": (0, 3, "retries of a sync message"),
    "sync_sock_size": (0, 1 << 30, "sync socket buffer size"),
    "sync_version": (0, 1, "sync protocol version (1 supports IPv6 and persistence)"),
}


def path(name: str) -> str:
    return os.path.join(BASE, name)


def read(names: Iterable[str]) -> dict[str, int]:
    """The kernel's values of `names`; a name the kernel lacks is left out."""
    out: dict[str, int] = {}
    for name in names:
        try:
            with open(path(name), encoding="ascii") as f:
                out[name] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


def write(name: str, value: int) -> None:
    if name not in KNOWN:
        raise ValueError(f"not an IPVS sysctl ipvsmgr manages: {name}")
    with open(path(name), "w", encoding="ascii") as f:
        f.write(f"{value}\n")
