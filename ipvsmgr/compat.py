"""Series under the names existing dashboards and alerts already query.

Operators of IPVS and keepalived graph node_exporter's IPVS collector
(`node_ipvs_*`) and a keepalived exporter (`keepalived_*`, as
mehdy/keepalived-exporter names them). ipvsmgr serves both next to its own
`ipvsmgr_*` series, so those dashboards work when it replaces keepalived.

node_ipvs_* follows node_exporter 1.5 (Debian 12), which reads /proc/net/ip_vs
and /proc/net/ip_vs_stats: the same kernel counters ipvsmgr dumps over
netlink, with the labels and their spelling taken from the proc files (a
fwmark service: proto "FWM", local_mark the mark as 8 upper-case hex digits,
local_address "", local_port "0"). tests/kernel/test_compat_metrics.py runs
Debian's prometheus-node-exporter against the same kernel and compares.

keepalived_* follows the exporter's encoding: keepalived_vrrp_state is 0 INIT,
1 BACKUP, 2 MASTER, 3 FAULT, one series per VIP; the counters carry the
instance's current state as a label, as the exporter's do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ipvsmgr import exposition
from ipvsmgr.exposition import Family
from ipvsmgr.ipvs.model import ServiceKey, Table

STATS_FILE = "/proc/net/ip_vs_stats"
KINDS = ("node_ipvs", "keepalived")  # what --metrics-compat can name
_PROTO = {6: "TCP", 17: "UDP", 132: "SCTP"}
_STATES = {"init": 0, "backup": 1, "master": 2, "fault": 3}


@dataclass(frozen=True, slots=True)
class Totals:
    """/proc/net/ip_vs_stats: everything IPVS has forwarded since it was loaded."""

    conns: int
    inpkts: int
    outpkts: int
    inbytes: int
    outbytes: int


def parse_totals(text: str) -> Totals | None:
    """The third line holds five hex counters; None for anything else."""
    lines = text.splitlines()
    if len(lines) < 3:
        return None
    fields = lines[2].split()
    if len(fields) != 5:
        return None
    try:
        return Totals(*(int(f, 16) for f in fields))
    except ValueError:
        return None


def read_totals(path: str = STATS_FILE) -> Totals | None:
    try:
        with open(path) as f:
            return parse_totals(f.read(4096))
    except OSError:
        return None  # no IPVS loaded, or another kernel: the series are left out


def _service_labels(key: ServiceKey) -> tuple[str, str, str, str]:
    """(local_address, local_port, local_mark, proto) as node_exporter reads them from /proc."""
    if key.fwmark:
        return "", "0", f"{key.fwmark:08X}", "FWM"
    return key.addr, str(key.port), "", _PROTO.get(key.protocol, str(key.protocol))


def node_ipvs(table: Table, totals: Totals | None) -> Iterator[Family]:
    if totals is not None:
        for name, value, text in (
            ("node_ipvs_connections", totals.conns, "The total number of connections made."),
            ("node_ipvs_incoming_packets", totals.inpkts, "The total number of incoming packets."),
            ("node_ipvs_outgoing_packets", totals.outpkts, "The total number of outgoing packets."),
            ("node_ipvs_incoming_bytes", totals.inbytes, "The total amount of incoming data."),
            ("node_ipvs_outgoing_bytes", totals.outbytes, "The total amount of outgoing data."),
        ):
            fam = exposition.counter(name, text)
            fam.add_metric([], value)
            yield fam
    labels = ["local_address", "local_port", "local_mark", "proto", "remote_address", "remote_port"]
    # node_exporter sums backends that share a label set; so does this.
    sums: dict[tuple[str, ...], list[int]] = {}
    for skey, dests in table.dests.items():
        local_address, local_port, mark, proto = _service_labels(skey)
        for dkey, d in dests.items():
            lv: tuple[str, ...] = (local_address, local_port, mark, proto, dkey.addr, str(dkey.port))
            acc = sums.setdefault(lv, [0, 0, 0])
            acc[0] += d.active_conns
            acc[1] += d.inact_conns
            acc[2] += d.weight
    active = exposition.gauge(
        "node_ipvs_backend_connections_active",
        "The current active connections by local and remote address.",
        labels,
    )
    inactive = exposition.gauge(
        "node_ipvs_backend_connections_inactive",
        "The current inactive connections by local and remote address.",
        labels,
    )
    weight = exposition.gauge(
        "node_ipvs_backend_weight", "The current backend weight by local and remote address.", labels
    )
    for lv, (a, i, w) in sums.items():
        active.add_metric(lv, a)
        inactive.add_metric(lv, i)
        weight.add_metric(lv, w)
    yield from (active, inactive, weight)


# keepalived exporter counter: (name, help, the status keys summed, the drop reasons summed)
_COUNTERS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("keepalived_advertisements_received_total", "Advertisements received", ("adverts_received",), ()),
    ("keepalived_advertisements_sent_total", "Advertisements sent", ("adverts_sent",), ()),
    ("keepalived_become_master_total", "Became master", ("became_master",), ()),
    ("keepalived_release_master_total", "Released master", ("released_master",), ()),
    ("keepalived_packet_length_errors_total", "Packet length errors", (), ("truncated",)),
    ("keepalived_advertisements_interval_errors_total", "Advertisement interval errors", (),
     ("interval_mismatch", "zero_interval")),
    ("keepalived_ip_ttl_errors_total", "TTL errors", (), ("ttl_not_255",)),
    ("keepalived_invalid_type_received_total", "Invalid type errors", (), ("bad_type", "bad_version")),
    ("keepalived_address_list_errors_total", "Address list errors", (), ("address_list_mismatch",)),
    # ipvsmgr does not tell an unknown auth type from another known one: both are mismatches
    ("keepalived_authentication_invalid_total", "Authentication invalid", (), ()),
    ("keepalived_authentication_mismatch_total", "Authentication mismatch", (), ("auth_type",)),
    ("keepalived_authentication_failure_total", "Authentication failure", (), ("auth_failure",)),
    ("keepalived_priority_zero_received_total", "Priority zero received", ("priority_zero_received",), ()),
    ("keepalived_priority_zero_sent_total", "Priority zero sent", ("priority_zero_sent",), ()),
)  # fmt: skip


def keepalived(
    instances: list[dict[str, Any]], drops: dict[tuple[str, str], int], running: bool
) -> Iterator[Family]:
    up = exposition.gauge("keepalived_up", "Status")
    up.add_metric([], 1.0 if running else 0.0)
    yield up
    vip_labels = ["iname", "intf", "vrid", "ip_address"]
    state = exposition.gauge("keepalived_vrrp_state", "State of vrrp", vip_labels)
    common = ["iname", "intf", "vrid", "state"]
    counters = [exposition.counter(name, text, common) for name, text, _, _ in _COUNTERS]
    for inst in instances:
        name, vrid, code = str(inst["name"]), str(inst["vrid"]), _STATES.get(str(inst["state"]), 0)
        for address, dev in inst.get("vips", []):
            state.add_metric([name, dev, vrid, address], code)
        labels = [name, str(inst["interface"]), vrid, str(inst["state"]).upper()]
        for fam, (_, _, keys, reasons) in zip(counters, _COUNTERS, strict=True):
            total = sum(int(inst.get(k, 0)) for k in keys) + sum(drops.get((name, r), 0) for r in reasons)
            fam.add_metric(labels, total)
    yield state
    yield from counters
