"""reconcile.diff.diff: desired state vs. a kernel table -> ordered operations (pure)."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from ipvsmgr.config import load_text
from ipvsmgr.ipvs import wire
from ipvsmgr.ipvs.model import Destination, DestKey, Service, ServiceKey, Stats, Table, Timeouts
from ipvsmgr.reconcile.desired import Desired, desired_state
from ipvsmgr.reconcile.diff import Draining, Plan, diff
from ipvsmgr.reconcile.operations import (
    AddReal,
    AddService,
    DeleteReal,
    DeleteService,
    EditReal,
    EditService,
    SetSysctl,
    SetTimeouts,
)

AF4, AF6 = socket.AF_INET, socket.AF_INET6
TCP, UDP = 6, 17
NOW = 1_000_000.0
DRAIN = 300.0

CONFIG = """\
ipvs:
  timeouts: {tcp: 900s, tcp_fin: 120s, udp: 300s}
virtual_servers:
  - name: web
    address: 198.18.0.10
    port: 80
    scheduler: wrr
    reals:
      - {address: 198.18.1.11, port: 8080, weight: 10}
      - {address: 198.18.1.12, port: 8080, weight: 10}
  - name: dns
    address: 198.18.0.12
    port: 53
    protocol: udp
    scheduler: sh
    scheduler_flags: [sh-port]
    one_packet: true
    persistence: {timeout: 10m, prefix: 24}
    reals:
      - {address: 198.18.1.21, forwarding: dr}
      - {address: 198.18.1.22, forwarding: tunnel, tunnel: {type: gue, port: 6080, checksum: csum}}
"""

WEB = ServiceKey(AF4, TCP, "198.18.0.10", 80)
DNS = ServiceKey(AF4, UDP, "198.18.0.12", 53)
R11 = DestKey(AF4, "198.18.1.11", 8080)
R12 = DestKey(AF4, "198.18.1.12", 8080)
R21 = DestKey(AF4, "198.18.1.21", 53)
R22 = DestKey(AF4, "198.18.1.22", 53)
FOREIGN = ServiceKey(AF4, TCP, "198.18.0.99", 25)


def desired(text: str = CONFIG) -> Desired:
    return desired_state(load_text(text, "lb.yaml"))


def kernel_matching_config() -> Table:
    """The kernel as it looks after CONFIG was applied, written out by hand."""
    return Table(
        services={
            WEB: Service(WEB, "wrr", 0, 0, 32, stats=Stats(conns=5)),
            DNS: Service(DNS, "sh", 0x1 | 0x4 | 0x10, 600, 24),  # persistent, one-packet, sh-port
        },
        dests={
            WEB: {
                R11: Destination(R11, 0, 10, active_conns=3),
                R12: Destination(R12, 0, 10, inact_conns=1),
            },
            DNS: {  # as dumped: IPVS lists the last added real first (sh hashes in list order)
                R22: Destination(R22, 2, 1, tun_type=1, tun_port=6080, tun_flags=1),
                R21: Destination(R21, 3, 1),
            },
        },
        timeouts=Timeouts(900, 120, 300),
    )


def run(
    want: Desired,
    kernel: Table,
    owned: set[ServiceKey] | None = None,
    drain_started: dict[tuple[ServiceKey, DestKey], float] | None = None,
    now: float = NOW,
) -> Plan:
    return diff(want, kernel, set(owned or ()), dict(drain_started or {}), now, DRAIN)


def kinds(plan: Plan) -> list[str]:
    return [type(op).__name__ for op in plan.operations]


# ---------------------------------------------------------------- desired state


def test_desired_state_is_what_the_kernel_would_hold() -> None:
    want = desired()
    k = kernel_matching_config()
    assert want.services == k.services
    assert {s: {d: x.settings() for d, x in ds.items()} for s, ds in want.dests.items()} == {
        s: {d: x.settings() for d, x in ds.items()} for s, ds in k.dests.items()
    }
    assert want.timeouts == k.timeouts
    assert want.names == {WEB: "web", DNS: "dns"}


# ---------------------------------------------------------------- from nothing, and nothing to do


def test_empty_kernel_adds_services_then_reals_in_order() -> None:
    plan = run(desired(), Table())
    assert kinds(plan) == [
        "SetTimeouts",
        "AddService",
        "AddService",
        "AddReal",
        "AddReal",
        "AddReal",
        "AddReal",
    ]
    t = plan.operations[0]
    assert isinstance(t, SetTimeouts) and t.new == Timeouts(900, 120, 300) and t.old == Timeouts()
    adds = [op for op in plan.operations if isinstance(op, AddService)]
    assert [(a.svc.key, a.name) for a in adds] == [(WEB, "web"), (DNS, "dns")]
    assert adds[1].svc == Service(DNS, "sh", 0x1 | 0x4 | 0x10, 600, 24)
    reals = [op for op in plan.operations if isinstance(op, AddReal)]
    assert [(r.service, r.dest.key) for r in reals] == [(WEB, R11), (WEB, R12), (DNS, R21), (DNS, R22)]
    assert reals[3].dest.settings() == (2, 1, 0, 0, 1, 6080, 1)  # tunnel, weight 1, gue:6080, csum
    assert plan.owned == {WEB, DNS}
    assert plan.drain_started == {} and plan.draining == []
    assert plan.changes


def test_identical_kernel_needs_no_operation() -> None:
    plan = run(desired(), kernel_matching_config(), owned={WEB, DNS})
    assert plan.operations == []
    assert not plan.changes
    assert plan.owned == {WEB, DNS}


def test_identical_kernel_as_decoded_from_netlink_needs_no_operation() -> None:
    # the kernel reports HASHED (0x2) and other bits; decoding masks them, settings compare equal
    want = desired()
    k = Table(timeouts=Timeouts(900, 120, 300))
    for key, svc in want.services.items():
        reported = replace(svc, flags=svc.flags | 0x2)
        msg = next(wire.iter_messages(wire.message(0x20, 2, 1, 1, wire.service_attr(reported))))
        k.services[key] = wire.decode_service(msg)
        k.dests[key] = {}
        for d in reversed(want.dests[key].values()):  # a dump lists the last added real first
            dm = next(wire.iter_messages(wire.message(0x20, 2, 1, 8, wire.dest_attr(d))))
            k.dests[key][d.key] = wire.decode_dest(dm, key.af)
    assert k.services[DNS].settings() == want.services[DNS].settings()
    assert run(want, k, owned={WEB, DNS}).operations == []


def test_all_methods_example_against_itself() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "etc" / "examples" / "all-methods.yaml").read_text()
    want = desired(text)
    assert run(want, Table()).operations  # something to do from scratch
    k = Table(
        services=dict(want.services),
        dests={s: dict(reversed(d.items())) for s, d in want.dests.items()},  # as dumped: last added first
        timeouts=want.timeouts,
    )
    assert run(want, k).operations == []


# ---------------------------------------------------------------- edits


def test_changed_scheduler_is_one_edit_service() -> None:
    k = kernel_matching_config()
    k.services[WEB] = replace(k.services[WEB], scheduler="rr")
    plan = run(desired(), k, owned={WEB, DNS})
    (op,) = plan.operations
    assert isinstance(op, EditService)
    assert (op.old.scheduler, op.new.scheduler, op.name) == ("rr", "wrr", "web")


@pytest.mark.parametrize(
    "change",
    [
        {"flags": 0x1 | 0x4},  # sh-port missing
        {"timeout": 300},
        {"prefix": 32},
        {"pe_name": "sip"},
    ],
)
def test_other_service_settings_are_edits(change: dict[str, object]) -> None:
    k = kernel_matching_config()
    k.services[DNS] = replace(k.services[DNS], **change)
    (op,) = run(desired(), k, owned={WEB, DNS}).operations
    assert isinstance(op, EditService) and op.new == desired().services[DNS]


def test_changed_weight_is_one_edit_real() -> None:
    k = kernel_matching_config()
    k.dests[WEB][R12] = replace(k.dests[WEB][R12], weight=3)
    (op,) = run(desired(), k, owned={WEB, DNS}).operations
    assert isinstance(op, EditReal)
    assert (op.service, op.old.weight, op.new.weight, op.new.key) == (WEB, 3, 10, R12)


@pytest.mark.parametrize(
    "change",
    [{"fwd": 0}, {"tun_port": 6081}, {"tun_flags": 0}, {"tun_type": 2}, {"u_thresh": 5}, {"l_thresh": 1}],
)
def test_other_real_settings_are_edits(change: dict[str, object]) -> None:
    k = kernel_matching_config()
    k.dests[DNS][R22] = replace(k.dests[DNS][R22], **change)
    (op,) = run(desired(), k, owned={WEB, DNS}).operations
    assert isinstance(op, EditReal) and op.new == desired().dests[DNS][R22]


def test_connection_counts_and_stats_are_not_settings() -> None:
    k = kernel_matching_config()
    k.dests[WEB][R11] = replace(k.dests[WEB][R11], active_conns=999, stats=Stats(1, 2, 3))
    k.services[WEB] = replace(k.services[WEB], stats=Stats(7))
    assert run(desired(), k, owned={WEB, DNS}).operations == []


def test_missing_real_is_added_to_an_existing_service() -> None:
    k = kernel_matching_config()
    del k.dests[WEB][R11]
    (op,) = run(desired(), k).operations
    assert isinstance(op, AddReal) and (op.service, op.dest.key) == (WEB, R11)


def test_service_without_a_dest_table_gets_all_its_reals() -> None:
    k = kernel_matching_config()
    del k.dests[WEB]  # e.g. dumped with `only=` not including it
    assert [(type(op).__name__, op.dest.key) for op in run(desired(), k).operations] == [  # type: ignore[union-attr]
        ("AddReal", R11),
        ("AddReal", R12),
    ]


# ---------------------------------------------------------------- removed reals and drains

WITHOUT_R12 = CONFIG.replace("      - {address: 198.18.1.12, port: 8080, weight: 10}\n", "")


def test_removed_idle_real_is_deleted() -> None:
    k = kernel_matching_config()
    k.dests[WEB][R12] = replace(k.dests[WEB][R12], inact_conns=0)
    plan = run(desired(WITHOUT_R12), k, owned={WEB, DNS})
    (op,) = plan.operations
    assert isinstance(op, DeleteReal) and (op.service, op.key) == (WEB, R12)
    assert "no connections" in op.reason
    assert plan.drain_started == {} and plan.draining == []


def test_removed_busy_real_is_drained() -> None:
    k = kernel_matching_config()
    k.dests[WEB][R12] = replace(k.dests[WEB][R12], active_conns=4, inact_conns=2)
    plan = run(desired(WITHOUT_R12), k, owned={WEB, DNS})
    (op,) = plan.operations
    assert isinstance(op, EditReal)
    assert (op.service, op.old.weight, op.new.weight) == (WEB, 10, 0)
    assert op.new.settings() == replace(k.dests[WEB][R12], weight=0).settings()
    assert "draining" in op.reason
    assert plan.drain_started == {(WEB, R12): NOW}
    assert plan.draining == [Draining(WEB, R12, NOW, 6, NOW + DRAIN)]
    assert plan.owned == {WEB, DNS}


def test_still_draining_before_the_timeout_with_weight_0_is_no_operation() -> None:
    k = kernel_matching_config()
    k.dests[WEB][R12] = replace(k.dests[WEB][R12], weight=0, active_conns=2, inact_conns=0)
    since = NOW - 100
    plan = run(desired(WITHOUT_R12), k, owned={WEB, DNS}, drain_started={(WEB, R12): since})
    assert plan.operations == []
    assert plan.drain_started == {(WEB, R12): since}  # the original start is kept
    assert plan.draining == [Draining(WEB, R12, since, 2, since + DRAIN)]


def test_drain_without_a_recorded_start_starts_now() -> None:
    k = kernel_matching_config()
    k.dests[WEB][R12] = replace(k.dests[WEB][R12], weight=0, active_conns=2)
    plan = run(desired(WITHOUT_R12), k, owned={WEB, DNS})
    assert plan.operations == []
    assert plan.drain_started == {(WEB, R12): NOW}


def test_drain_timeout_deletes_the_real() -> None:
    k = kernel_matching_config()
    k.dests[WEB][R12] = replace(k.dests[WEB][R12], weight=0, active_conns=2)
    plan = run(desired(WITHOUT_R12), k, owned={WEB, DNS}, drain_started={(WEB, R12): NOW - DRAIN})
    (op,) = plan.operations
    assert isinstance(op, DeleteReal) and (op.service, op.key) == (WEB, R12)
    assert "drain timeout" in op.reason
    assert plan.drain_started == {} and plan.draining == []


def test_drain_finishes_when_connections_reach_zero() -> None:
    k = kernel_matching_config()
    k.dests[WEB][R12] = replace(k.dests[WEB][R12], weight=0, active_conns=0, inact_conns=0)
    plan = run(desired(WITHOUT_R12), k, owned={WEB, DNS}, drain_started={(WEB, R12): NOW - 1})
    (op,) = plan.operations
    assert isinstance(op, DeleteReal)
    assert plan.drain_started == {}


def test_real_re_added_while_draining_gets_its_weight_back() -> None:
    k = kernel_matching_config()
    k.dests[WEB][R12] = replace(k.dests[WEB][R12], weight=0, active_conns=2)
    plan = run(desired(), k, owned={WEB, DNS}, drain_started={(WEB, R12): NOW - 10})
    (op,) = plan.operations
    assert isinstance(op, EditReal)
    assert (op.service, op.old.weight, op.new.weight) == (WEB, 0, 10)
    assert plan.drain_started == {} and plan.draining == []  # the drain is forgotten


# ---------------------------------------------------------------- ownership


def test_foreign_services_are_left_alone() -> None:
    k = kernel_matching_config()
    k.services[FOREIGN] = Service(FOREIGN, "rr")
    k.dests[FOREIGN] = {
        DestKey(AF4, "10.0.0.1", 25): Destination(DestKey(AF4, "10.0.0.1", 25), 0, 1),
        DestKey(AF4, "10.0.0.2", 25): Destination(DestKey(AF4, "10.0.0.2", 25), 0, 1, active_conns=9),
    }
    plan = run(desired(), k, owned={WEB, DNS})
    assert plan.operations == []
    assert FOREIGN not in plan.owned


def test_owned_service_removed_from_config_with_idle_reals_is_one_delete() -> None:
    only_web = CONFIG[: CONFIG.index("  - name: dns")]
    k = kernel_matching_config()
    plan = run(desired(only_web), k, owned={WEB, DNS})
    (op,) = plan.operations
    assert isinstance(op, DeleteService) and op.key == DNS
    assert plan.owned == {WEB}


def test_owned_service_without_reals_is_deleted() -> None:
    only_web = CONFIG[: CONFIG.index("  - name: dns")]
    k = kernel_matching_config()
    k.dests[DNS] = {}
    assert kinds(run(desired(only_web), k, owned={WEB, DNS})) == ["DeleteService"]
    del k.dests[DNS]
    assert kinds(run(desired(only_web), k, owned={WEB, DNS})) == ["DeleteService"]


def test_owned_service_removed_with_busy_reals_drains_and_stays_owned() -> None:
    only_web = CONFIG[: CONFIG.index("  - name: dns")]
    k = kernel_matching_config()
    k.dests[DNS][R21] = replace(k.dests[DNS][R21], active_conns=7)  # busy; R22 is idle
    plan = run(desired(only_web), k, owned={WEB, DNS})
    assert kinds(plan) == ["EditReal", "DeleteReal"]
    edit, delete = plan.operations
    assert isinstance(edit, EditReal) and (edit.service, edit.new.key, edit.new.weight) == (DNS, R21, 0)
    assert isinstance(delete, DeleteReal) and (delete.service, delete.key) == (DNS, R22)
    assert plan.owned == {WEB, DNS}
    assert plan.drain_started == {(DNS, R21): NOW}


def test_owned_service_removed_deleted_after_the_drain_timeout() -> None:
    only_web = CONFIG[: CONFIG.index("  - name: dns")]
    k = kernel_matching_config()
    k.dests[DNS][R21] = replace(k.dests[DNS][R21], weight=0, active_conns=7)
    plan = run(desired(only_web), k, owned={WEB, DNS}, drain_started={(DNS, R21): NOW - DRAIN - 1})
    assert kinds(plan) == ["DeleteService"]
    assert plan.owned == {WEB} and plan.drain_started == {}


def test_owned_service_already_gone_is_dropped_from_owned() -> None:
    only_web = CONFIG[: CONFIG.index("  - name: dns")]
    k = kernel_matching_config()
    del k.services[DNS], k.dests[DNS]
    plan = run(desired(only_web), k, owned={WEB, DNS})
    assert plan.operations == []
    assert plan.owned == {WEB}


def test_existing_desired_service_is_adopted() -> None:
    plan = run(desired(), kernel_matching_config(), owned=set())
    assert plan.operations == []
    assert plan.owned == {WEB, DNS}


# ---------------------------------------------------------------- timeouts


def test_timeouts_only_when_configured_and_different() -> None:
    no_timeouts = CONFIG.replace(
        "  timeouts: {tcp: 900s, tcp_fin: 120s, udp: 300s}\n", "  drain_timeout: 5m\n"
    )
    k = kernel_matching_config()
    k.timeouts = Timeouts(7200, 120, 300)
    assert run(desired(no_timeouts), k).operations == []
    only_udp = CONFIG.replace("{tcp: 900s, tcp_fin: 120s, udp: 300s}", "{udp: 300s}")
    assert run(desired(only_udp), k).operations == []  # udp already 300
    (op,) = run(desired(), k).operations
    assert (
        isinstance(op, SetTimeouts)
        and op.old == Timeouts(7200, 120, 300)
        and op.new == Timeouts(900, 120, 300)
    )
    k.timeouts = Timeouts(900, 120, 300)
    assert run(desired(), k).operations == []


# ---------------------------------------------------------------- everything at once: the order


def test_operation_order() -> None:
    text = CONFIG.replace("      - {address: 198.18.1.12, port: 8080, weight: 10}\n", "").replace(
        "scheduler: sh\n", "scheduler: mh\n"
    ).replace("[sh-port]", "[mh-port]") + (
        "  - name: new\n    address: 198.18.0.20\n    port: 443\n    reals: [{address: 198.18.1.41}]\n"
    )
    old = ServiceKey(AF4, TCP, "198.18.0.30", 80)
    k = kernel_matching_config()
    k.timeouts = Timeouts(1, 1, 1)
    del k.dests[WEB][R11]  # -> add-real
    k.dests[WEB][R12] = replace(k.dests[WEB][R12], active_conns=5)  # removed, busy -> edit-real (drain)
    stale = DestKey(AF4, "198.18.1.99", 8080)
    k.dests[WEB][stale] = Destination(stale, 0, 1)  # removed, idle -> delete-real
    k.dests[DNS][R21] = replace(k.dests[DNS][R21], weight=9)  # -> edit-real
    k.services[old] = Service(old, "rr")  # owned, removed -> delete-service
    k.dests[old] = {}
    plan = run(desired(text), k, owned={WEB, DNS, old})
    assert kinds(plan) == [
        "SetTimeouts",
        "AddService",
        "EditService",
        "AddReal",
        "AddReal",
        "EditReal",
        "EditReal",
        "DeleteReal",
        "DeleteService",
    ]
    add_reals = [op for op in plan.operations if isinstance(op, AddReal)]
    assert {(op.service, op.dest.key.addr) for op in add_reals} == {
        (WEB, "198.18.1.11"),
        (ServiceKey(AF4, TCP, "198.18.0.20", 443), "198.18.1.41"),
    }
    assert plan.owned == {WEB, DNS, ServiceKey(AF4, TCP, "198.18.0.20", 443)}


def test_plan_text_and_json_describe_every_operation() -> None:
    k = kernel_matching_config()
    k.services[WEB] = replace(k.services[WEB], scheduler="rr")
    k.dests[WEB][R12] = replace(k.dests[WEB][R12], active_conns=5)
    plan = run(desired(WITHOUT_R12), Table())
    plan2 = run(desired(WITHOUT_R12), k, owned={WEB, DNS})
    for op in plan.operations + plan2.operations:
        assert op.text()
        assert op.json()["op"]
        assert op.request().attrs
    texts = [op.text() for op in plan2.operations]
    assert texts[0] == "~ service tcp 198.18.0.10:80 scheduler rr -> wrr"
    assert texts[1].startswith("~ real 198.18.1.12:8080 of tcp 198.18.0.10:80 weight 10 -> 0 (draining")


def test_ipv6_and_fwmark_services() -> None:
    text = (
        "virtual_servers:\n"
        "  - {address: '2001:db8::10', port: 80, reals: [{address: '2001:db8::1'}]}\n"
        "  - {fwmark: 5, family: ipv6, reals: [{address: '2001:db8::2'}]}\n"
    )
    want = desired(text)
    v6 = ServiceKey(AF6, TCP, "2001:db8::10", 80)
    mark = ServiceKey(AF6, 0, "", 0, 5)
    assert set(want.services) == {v6, mark}
    assert want.services[v6].prefix == 128 and want.services[mark].prefix == 128
    assert set(want.dests[mark]) == {DestKey(AF6, "2001:db8::2", 0)}
    k = Table(services=dict(want.services), dests={s: dict(d) for s, d in want.dests.items()})
    assert run(want, k).operations == []


# ---------------------------------------------------------------- hashing order, sysctls

MH = """\
ipvs:
  sysctl: {sloppy_tcp: true, conn_reuse_mode: 3}
virtual_servers:
  - name: web
    address: 198.18.100.1
    port: 80
    scheduler: mh
    forwarding: dr
    reals:
      - {address: 198.18.2.1}
      - {address: 198.18.2.2}
      - {address: 198.18.2.3}
      - {address: 198.18.2.4}
"""
VIP = ServiceKey(AF4, TCP, "198.18.100.1", 80)


def _mh_kernel(order: list[int], sysctls: dict[str, int] | None = None) -> tuple[Desired, Table]:
    want = desired_state(load_text(MH, "lb.yaml"))
    dests = want.dests[VIP]
    keys = list(dests)
    kernel = Table(
        services={VIP: want.services[VIP]},
        # `order` is the order of addition; IPVS lists the last added first
        dests={VIP: {keys[i - 1]: dests[keys[i - 1]] for i in reversed(order)}},
        timeouts=Timeouts(),
        sysctls={"sloppy_tcp": 1, "conn_reuse_mode": 3} if sysctls is None else sysctls,
    )
    return want, kernel


def _rk(n: int) -> DestKey:
    return DestKey(AF4, f"198.18.2.{n}", 80)


def _what(o: object) -> DestKey:
    return o.key if isinstance(o, DeleteReal) else o.dest.key  # type: ignore[attr-defined]


def test_mh_in_order_needs_nothing() -> None:
    want, kernel = _mh_kernel([1, 2, 3, 4])
    assert diff(want, kernel, {VIP}, {}, NOW, DRAIN).operations == []


def test_mh_appended_reals_keep_the_order() -> None:
    want, kernel = _mh_kernel([1, 2])
    ops = diff(want, kernel, {VIP}, {}, NOW, DRAIN).operations
    assert [(type(o).__name__, o.dest.key) for o in ops] == [("AddReal", _rk(3)), ("AddReal", _rk(4))]  # type: ignore[union-attr]


def test_mh_out_of_order_tail_is_readded() -> None:
    # 2 was deleted and re-added at some point: the kernel has it last.
    want, kernel = _mh_kernel([1, 3, 4, 2])
    ops = diff(want, kernel, {VIP}, {}, NOW, DRAIN).operations
    assert [(type(o).__name__, _what(o)) for o in ops] == [  # type: ignore[union-attr]
        ("DeleteReal", _rk(3)),
        ("DeleteReal", _rk(4)),
        ("DeleteReal", _rk(2)),
        ("AddReal", _rk(2)),
        ("AddReal", _rk(3)),
        ("AddReal", _rk(4)),
    ]
    assert ops[0].text() == "- real 198.18.2.3:80 of tcp 198.18.100.1:80 (re-added to keep the hashing order)"


def test_mh_missing_middle_real_is_inserted_in_place() -> None:
    want, kernel = _mh_kernel([1, 3, 4])
    ops = diff(want, kernel, {VIP}, {}, NOW, DRAIN).operations
    names = [(type(o).__name__, _what(o)) for o in ops]  # type: ignore[union-attr]
    assert names == [
        ("DeleteReal", _rk(3)), ("DeleteReal", _rk(4)),
        ("AddReal", _rk(2)), ("AddReal", _rk(3)), ("AddReal", _rk(4)),
    ]  # fmt: skip


def test_order_is_not_enforced_for_other_schedulers() -> None:
    want, kernel = _mh_kernel([1, 3, 4, 2])
    svc = replace(want.services[VIP], scheduler="wrr")
    want.services[VIP] = svc
    kernel.services[VIP] = svc
    assert diff(want, kernel, {VIP}, {}, NOW, DRAIN).operations == []


def test_sysctls_set_when_different_and_first() -> None:
    want, kernel = _mh_kernel([1, 2, 3, 4], sysctls={"sloppy_tcp": 0})
    ops = diff(want, kernel, {VIP}, {}, NOW, DRAIN).operations
    assert [o.text() for o in ops] == [
        "~ sysctl net.ipv4.vs.sloppy_tcp 0 -> 1",
        "~ sysctl net.ipv4.vs.conn_reuse_mode - -> 3",
    ]
    assert ops[0].json() == {"op": "set-sysctl", "name": "net.ipv4.vs.sloppy_tcp", "from": 0, "to": 1}


def test_a_pending_real_of_a_hashing_scheduler_keeps_its_table_share() -> None:
    from ipvsmgr.config.model import Config
    from ipvsmgr.reconcile.health import RealHealth, healthy_state

    text = MH.replace("    forwarding: dr\n", "    forwarding: dr\n    scheduler_flags: [mh-fallback]\n"
                      "    health_check: {type: tcp}\n")  # fmt: skip
    cfg: Config = load_text(text, "lb.yaml")
    # rs1 up, the rest not checked yet (weight 0): each is added at weight 1 and quiesced at once
    want, _ = healthy_state(cfg, {(VIP, _rk(1)): RealHealth(True)})
    ops = diff(want, Table(), set(), {}, NOW, DRAIN).operations
    texts = [o.text() for o in ops if not isinstance(o, SetSysctl)]
    assert texts[1:4] == [
        "+ real 198.18.2.1:80 of tcp 198.18.100.1:80 dr weight 1",
        "+ real 198.18.2.2:80 of tcp 198.18.100.1:80 dr weight 1",
        "~ real 198.18.2.2:80 of tcp 198.18.100.1:80 weight 1 -> 0 (quiesced: its table share kept)",
    ]
    assert len(texts) == 1 + 4 + 3  # the service, four adds, three quiesced


def test_fallback_is_required_with_inhibited_reals() -> None:
    from ipvsmgr.config import ConfigError

    text = MH.replace("    forwarding: dr\n", "    forwarding: dr\n    health_check: {type: tcp}\n")
    with pytest.raises(ConfigError) as e:
        load_text(text, "lb.yaml")
    (p,) = e.value.problems
    assert (p.line, p.col) == (7, 16) and p.message.startswith("add mh-fallback to scheduler_flags")
