"""A bounded spoofed SYN flood against a service behind the guarded veth, with
a legitimate client opening 1,000 connections meanwhile: guard on vs off in
the same run (bench/xdp_flood.py does the work and prints the figures)."""

from __future__ import annotations

import json

import pytest

from tests.netns.lab import have_root

pytestmark = pytest.mark.skipif(not have_root(), reason="namespaces and XDP need root")


def test_legitimate_clients_get_through_a_syn_flood() -> None:
    from bench.xdp_flood import compare

    # bounded at 10 s of flood; stopped as soon as the legitimate client is done
    r = compare(flood=2_000_000, rate=200_000, legit=1000)
    print(json.dumps(r, indent=2))
    on, off = r["on"], r["off"]
    for m in (on, off):
        assert m["flood_still_running_at_end"], m  # every legitimate connect met the flood
    assert on["success_rate"] >= 0.99
    g = on["guard_counters"]
    # the flood was answered from XDP: the server's stack saw only what came
    # before attack mode (the first attack_rate SYNs) and the verified client
    assert g["retransmit_wait"] >= 0.9 * on["flood_sent"]  # held back, nothing sent to the sources
    assert g["retransmit_passed"] >= 1 and g["verified"] >= 990
    cookies_on = on["server_kernel"]["TcpExtSyncookiesSent"] / on["flood_sent"]
    cookies_off = off["server_kernel"]["TcpExtSyncookiesSent"] / off["flood_sent"]
    assert cookies_on < 0.05 < 0.5 < cookies_off, (cookies_on, cookies_off)
