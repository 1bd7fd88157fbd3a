"""`ipvsmgr import ipvsadm`: ipvsadm -Sn lines, and the live table through the same path."""

from __future__ import annotations

import socket

import yaml

from ipvsmgr.config import load_text
from ipvsmgr.ipvs import constants as c
from ipvsmgr.ipvs.model import Destination, DestKey, Service, ServiceKey, Table
from ipvsmgr.migrate import command, ipvsadm, yamlout

SAVED = """\
-A -t 198.18.0.1:80 -s wrr
-a -t 198.18.0.1:80 -r 198.18.1.1:8080 -m -w 3
-a -t 198.18.0.1:80 -r 198.18.1.2:8080 -m -w 0 -x 100 -y 50
-A -u [2001:db8::53]:53 -s sh -b flag-1,flag-2 -o
-a -u [2001:db8::53]:53 -r [2001:db8:1::53]:53 -g -w 1
-A -f 7 -s rr -p 600 -M 255.255.255.0
-a -f 7 -r 198.18.1.7:0 -i -w 2 --tun-type gue --tun-port 6080
"""


def test_saved_rules_become_virtual_servers() -> None:
    doc, findings = ipvsadm.convert(SAVED, "rules")
    assert not findings
    web, dns, mark = doc["virtual_servers"]
    assert (web["protocol"], web["address"], web["port"], web["scheduler"], web["forwarding"]) == (
        "tcp", "198.18.0.1", 80, "wrr", "nat"
    )  # fmt: skip
    assert web["reals"] == [
        {"address": "198.18.1.1", "port": 8080, "weight": 3},
        {"address": "198.18.1.2", "port": 8080, "weight": 0, "upper_threshold": 100, "lower_threshold": 50},
    ]
    assert dns["scheduler_flags"] == ["sh-fallback", "sh-port"] and dns["one_packet"] is True
    assert dns["address"] == "2001:db8::53" and dns["forwarding"] == "dr"
    assert mark["fwmark"] == 7 and mark["persistence"] == {"timeout": "600s", "netmask": "255.255.255.0"}
    assert mark["reals"] == [{"address": "198.18.1.7", "weight": 2, "tunnel": {"type": "gue", "port": 6080}}]


def test_the_written_yaml_passes_check_and_reads_back_the_same() -> None:
    outcome = command.import_ipvsadm(SAVED, "rules")
    assert outcome.status == 0 and not outcome.problems
    cfg = load_text(outcome.text, "out.yaml")
    assert [len(v.reals) for v in cfg.virtual_servers] == [2, 1, 1]
    doc, _ = ipvsadm.convert(SAVED, "rules")
    for vs in doc["virtual_servers"]:
        vs.pop("#")
    assert yaml.safe_load(outcome.text) == doc


def test_bad_lines_are_errors_with_their_line_and_nothing_is_written() -> None:
    outcome = command.import_ipvsadm(SAVED + "-a -t 198.18.0.9:80 -r 198.18.1.9\n-A -t nowhere:80\n", "rules")
    assert outcome.status == 2 and outcome.text == ""
    assert [(f.pos.line, f.kind) for f in outcome.findings] == [(8, "error"), (9, "error")]


def test_the_live_table_goes_through_the_same_path() -> None:
    key = ServiceKey(socket.AF_INET, socket.IPPROTO_TCP, "198.18.0.1", 80)
    table = Table(
        services={
            key: Service(
                key, "mh", flags=c.IP_VS_SVC_F_PERSISTENT | c.IP_VS_SVC_F_SCHED2, timeout=300, prefix=24
            )
        },  # fmt: skip
        dests={
            key: {
                DestKey(socket.AF_INET, "198.18.1.1", 80): Destination(
                    DestKey(socket.AF_INET, "198.18.1.1", 80), fwd=c.IP_VS_CONN_F_DROUTE, weight=5
                )
            }
        },  # fmt: skip
    )
    doc, findings = ipvsadm.convert(ipvsadm.save_lines(table), "live")
    assert not findings
    (vs,) = doc["virtual_servers"]
    assert vs["scheduler"] == "mh" and vs["scheduler_flags"] == ["mh-port"]
    assert vs["persistence"] == {"timeout": "300s", "prefix": 24}
    assert vs["forwarding"] == "dr" and vs["reals"] == [{"address": "198.18.1.1", "port": 80, "weight": 5}]


def test_yaml_writer_keeps_comments_and_reads_back() -> None:
    doc = {
        "a": [{"#": "from x:1", "name": "n", "sub": {"k": [1, 2]}, "deep": [{"x": {"y": "z: w"}}]}],
        "b": "1s",
    }
    text = yamlout.dump(doc, ["header"])
    assert text.startswith("# header\n") and "  # from x:1\n  - name: n\n" in text
    doc["a"][0].pop("#")  # type: ignore[index, union-attr, attr-defined]
    assert yaml.safe_load(text) == doc
