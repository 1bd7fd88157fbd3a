"""Drop-in series for existing dashboards (ipvsmgr/compat.py): node_exporter's IPVS names and labels
as it spells them from /proc, and the keepalived exporter's VRRP encoding. The VM test
(tests/kernel/test_compat_metrics.py) holds node_ipvs_* to the real node_exporter."""

from __future__ import annotations

import socket

from prometheus_client.parser import text_string_to_metric_families

from ipvsmgr import compat, exposition
from ipvsmgr.ipvs.model import Destination, DestKey, Service, ServiceKey, Table
from ipvsmgr.metrics import Snapshot, render

# /proc/net/ip_vs_stats as the kernel prints it (hex counters)
PROC_STATS = """\
   Total Incoming Outgoing         Incoming         Outgoing
   Conns  Packets  Packets            Bytes            Bytes
      1F      3E8      3E6            186A0          F4240

 Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s
       0        0        0                0                0
"""

TCP = ServiceKey(socket.AF_INET, 6, "198.18.0.10", 80)
UDP6 = ServiceKey(socket.AF_INET6, 17, "2001:db8::10", 53)
MARK = ServiceKey(socket.AF_INET, 0, "", 0, fwmark=10)
R1 = DestKey(socket.AF_INET, "198.18.2.2", 8080)
R6 = DestKey(socket.AF_INET6, "2001:db8:1::2", 53)


def samples(fams: list[exposition.Family]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = exposition.render(fams).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_totals_read_as_the_kernel_prints_them() -> None:
    t = compat.parse_totals(PROC_STATS)
    assert t == compat.Totals(conns=31, inpkts=1000, outpkts=998, inbytes=100000, outbytes=1000000)
    assert compat.parse_totals("") is None
    assert compat.parse_totals("a\nb\n1 2 zz 4 5\n") is None
    assert compat.parse_totals("a\nb\n1 2 3\n") is None
    assert compat.read_totals("/nonexistent/ip_vs_stats") is None


def test_node_ipvs_names_and_labels_as_node_exporter_spells_them() -> None:
    table = Table(
        services={k: Service(k, "rr") for k in (TCP, UDP6, MARK)},
        dests={
            TCP: {R1: Destination(R1, weight=3, active_conns=4, inact_conns=5)},
            UDP6: {R6: Destination(R6, weight=1, active_conns=0, inact_conns=2)},
            MARK: {R1: Destination(R1, weight=7, active_conns=1, inact_conns=0)},
        },
    )
    got = samples(list(compat.node_ipvs(table, compat.parse_totals(PROC_STATS))))
    assert got[("node_ipvs_connections_total", ())] == 31
    assert got[("node_ipvs_outgoing_bytes_total", ())] == 1000000

    def labels(la: str, lp: str, mark: str, proto: str, ra: str, rp: str) -> tuple[tuple[str, str], ...]:
        return tuple(
            sorted(
                {
                    "local_address": la, "local_port": lp, "local_mark": mark, "proto": proto,
                    "remote_address": ra, "remote_port": rp,
                }.items()
            )
        )  # fmt: skip

    tcp = labels("198.18.0.10", "80", "", "TCP", "198.18.2.2", "8080")
    assert got[("node_ipvs_backend_connections_active", tcp)] == 4
    assert got[("node_ipvs_backend_connections_inactive", tcp)] == 5
    assert got[("node_ipvs_backend_weight", tcp)] == 3
    udp6 = labels("2001:db8::10", "53", "", "UDP", "2001:db8:1::2", "53")
    assert got[("node_ipvs_backend_connections_inactive", udp6)] == 2
    mark = labels("", "0", "0000000A", "FWM", "198.18.2.2", "8080")  # /proc prints the mark as %08X
    assert got[("node_ipvs_backend_weight", mark)] == 7
    # no totals file (IPVS not loaded): the backends still, the totals left out
    assert not any(
        n.startswith("node_ipvs_connections") for n, _ in samples(list(compat.node_ipvs(table, None)))
    )


def vrrp_instance(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "VI_1", "interface": "eth0", "vrid": 51, "state": "master", "priority": 150, "transitions": 3,
        "adverts_sent": 40,
        "adverts_received": 3, "became_master": 2, "released_master": 1, "priority_zero_received": 1,
        "priority_zero_sent": 0, "vips": [["198.18.0.10", "eth0"], ["198.18.0.11", "vrrp.51"]],
    }  # fmt: skip
    return base | over


def test_keepalived_exporter_encoding() -> None:
    drops = {("VI_1", "ttl_not_255"): 4, ("VI_1", "auth_failure"): 2, ("VI_1", "interval_mismatch"): 1,
             ("VI_1", "zero_interval"): 1, ("", "ttl_not_255"): 9}  # fmt: skip
    got = samples(list(compat.keepalived([vrrp_instance()], drops, running=True)))
    assert got[("keepalived_up", ())] == 1
    vip = (("iname", "VI_1"), ("intf", "eth0"), ("ip_address", "198.18.0.10"), ("vrid", "51"))
    assert got[("keepalived_vrrp_state", vip)] == 2  # MASTER
    vip2 = (("iname", "VI_1"), ("intf", "vrrp.51"), ("ip_address", "198.18.0.11"), ("vrid", "51"))
    assert got[("keepalived_vrrp_state", vip2)] == 2
    c = (("iname", "VI_1"), ("intf", "eth0"), ("state", "MASTER"), ("vrid", "51"))
    assert got[("keepalived_advertisements_sent_total", c)] == 40
    assert got[("keepalived_become_master_total", c)] == 2
    assert got[("keepalived_release_master_total", c)] == 1
    assert got[("keepalived_ip_ttl_errors_total", c)] == 4  # only the instance's own, not the unclaimed 9
    assert got[("keepalived_authentication_failure_total", c)] == 2
    assert got[("keepalived_advertisements_interval_errors_total", c)] == 2
    assert got[("keepalived_priority_zero_received_total", c)] == 1
    for state, code in (("init", 0), ("backup", 1), ("fault", 3)):
        got = samples(list(compat.keepalived([vrrp_instance(state=state)], {}, running=False)))
        assert got[("keepalived_vrrp_state", vip)] == code
        assert got[("keepalived_up", ())] == 0


def test_served_with_ipvsmgr_series_and_switched_off_with_none() -> None:
    table = Table(services={TCP: Service(TCP, "rr")}, dests={TCP: {R1: Destination(R1, weight=3)}})
    snap = Snapshot(version="1", services={TCP: "web"}, vrrp=[vrrp_instance()], vrrp_running=True)
    names = {n for n, _ in samples_of(render(snap, table, True))}
    assert {"node_ipvs_backend_weight", "keepalived_vrrp_state", "ipvsmgr_kernel_readable"} <= names
    snap.compat = ()
    names = {n for n, _ in samples_of(render(snap, table, True))}
    assert not any(n.startswith(("node_", "keepalived_")) for n in names)
    # no VRRP configured: no keepalived_* at all (keepalived_up 0 would page someone)
    snap = Snapshot(version="1", services={TCP: "web"})
    assert not any(n.startswith("keepalived_") for n, _ in samples_of(render(snap, table, True)))


def samples_of(text: bytes) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for fam in text_string_to_metric_families(text.decode())
        for s in fam.samples
    }
