"""`ipvsmgr show`'s rows and text from a table (the kernel read is tested in the VM)."""

from __future__ import annotations

import socket

from ipvsmgr.ipvs import constants as c
from ipvsmgr.ipvs.model import Destination, DestKey, Service, ServiceKey, Stats, Table
from ipvsmgr.showview import render, rows

OURS = ServiceKey(socket.AF_INET, 6, "198.18.0.10", 80)
FOREIGN = ServiceKey(socket.AF_INET, 6, "198.18.0.77", 80)
R1, R2 = DestKey(socket.AF_INET, "198.18.1.1", 8080), DestKey(socket.AF_INET, "198.18.1.2", 8080)


def table() -> Table:
    t = Table()
    t.services[FOREIGN] = Service(FOREIGN, "rr", stats=Stats())
    t.services[OURS] = Service(OURS, "wrr", timeout=600, stats=Stats(conns=12, cps=3, inbps=2048))
    t.dests[OURS] = {
        R1: Destination(R1, weight=2, active_conns=4, inact_conns=1, stats=Stats(cps=2, inpps=10)),
        R2: Destination(
            R2, fwd=c.IP_VS_CONN_F_TUNNEL, tun_type=c.IP_VS_CONN_F_TUNNEL_TYPE_GRE, weight=0, stats=Stats()
        ),
    }
    return t


def test_ours_first_named_and_foreign_marked() -> None:
    out = rows(table(), {OURS: "web"}, {(str(OURS), str(R1)): "up", (str(OURS), str(R2)): "down"})
    assert [s["name"] for s in out] == ["web", None]
    web = out[0]
    assert web["scheduler"] == "wrr" and web["persistence_s"] == 600 and web["cps"] == 3
    assert [(r["address"], r["forwarding"], r["weight"], r["health"]) for r in web["reals"]] == [
        ("198.18.1.1:8080", "nat", 2, "up"),
        ("198.18.1.2:8080", "tunnel gre", 0, "down"),
    ]
    text = render(out, [])
    assert "web  tcp 198.18.0.10:80  wrr  persistent 600s  conns 12  3 cps" in text
    assert "(not in the file: not ipvsmgr's)  tcp 198.18.0.77:80  rr" in text
    assert "HEALTH" in text and "tunnel gre" in text and "2.0kB/s" in text


def test_without_a_daemon_no_health_column() -> None:
    text = render(rows(table(), {OURS: "web"}, None), ["no daemon on /run/x: health not shown"])
    assert "HEALTH" not in text and text.startswith("no daemon")
