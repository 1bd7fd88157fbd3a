"""`ipvsmgr import keepalived`: keepalived's syntax, its defaults, and nothing dropped silently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ipvsmgr.config import load_text
from ipvsmgr.migrate import command, kaconf, keepalived, yamlout
from ipvsmgr.migrate.findings import Finding


def parse_text(text: str, config_id: str = "lb1") -> kaconf.Parsed:
    return kaconf.parse("/etc/keepalived/keepalived.conf", config_id, read=lambda _p: text)


def convert(text: str, config_id: str = "lb1") -> tuple[dict[str, Any], list[Finding]]:
    return keepalived.convert(parse_text(text, config_id))


def kinds(findings: list[Finding], kind: str) -> list[str]:
    return [f"{f.pos.line}: {f.message}" for f in findings if f.kind == kind]


# ------------------------------------------------------------------ syntax


def test_bang_and_hash_start_a_comment_anywhere_outside_quotes() -> None:
    root = parse_text('x {\n  auth_pass k@l!ve1\n  q "a!b#c" # tail\n  y 1#2\n}\n').root
    x = root.children[0]  # type: ignore[index]
    assert [c.line for c in x.children or []] == ["auth_pass k@l", "q a!b#c", "y 1"]


def test_braces_are_tokens_wherever_they_stand() -> None:
    root = parse_text("a { b { c 1 } d 2 }\ne\n{\n  f 3\n}\n").root
    a, e = root.children or []
    assert a.name == "a" and [c.name for c in a.children or []] == ["b", "d"]
    assert [c.line for c in a.children[0].children or []] == ["c 1"]  # type: ignore[index]
    assert e.children is not None and e.children[0].line == "f 3"  # a "{" alone opens e's block


def test_continuation_lines_join() -> None:
    root = parse_text("s {\n  script /bin/x \\\n   --y\n  z 1\n}\n").root
    assert [c.line for c in root.children[0].children or []] == ["script /bin/x --y", "z 1"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('a {\n b "open\n}\n', 2, "unterminated quoted string"),
        ("a {\n b 1\n", 1, "the block of 'a' is never closed"),
        ("a 1\n}\n", 2, "'}' closes no block"),
    ],
)
def test_what_stops_keepalived_reading_has_a_position(text: str, line: int, message: str) -> None:
    with pytest.raises(kaconf.ParseError) as e:
        parse_text(text)
    assert e.value.pos.line == line and message in e.value.message


def test_include_globs_relative_to_the_including_file_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "main.conf").write_text("a 1\ninclude d/*.conf\nz 9\n")
    (tmp_path / "d" / "2.conf").write_text("c 3\n")
    (tmp_path / "d" / "1.conf").write_text("b 2\ninclude ../none-*.conf\n")
    parsed = kaconf.parse(str(tmp_path / "main.conf"), "x")
    assert [n.line for n in parsed.root.children or []] == ["a 1", "b 2", "c 3", "z 9"]
    b = (parsed.root.children or [])[1]
    assert b.pos.file.endswith("d/1.conf") and b.pos.line == 1
    assert any("matches no file" in m for _, m in parsed.warnings)


def test_an_include_loop_stops_with_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("include a.conf\n")
    with pytest.raises(kaconf.ParseError, match="nested deeper"):
        kaconf.parse(str(tmp_path / "a.conf"), "x")


def test_parameters_and_conditional_lines() -> None:
    text = "$P=150\n$V=198.18.0.1\n@lb1 p $P\n@^lb1 p 100\nv ${V}/24\n"
    assert [n.line for n in parse_text(text, "lb1").root.children or []] == ["p 150", "v 198.18.0.1/24"]
    assert [n.line for n in parse_text(text, "lb2").root.children or []] == ["p 100", "v 198.18.0.1/24"]


# ------------------------------------------------------------------ virtual servers

WEB = """
virtual_server 198.18.0.10 80 {
    lb_algo wrr
    lb_kind NAT
    protocol TCP
    real_server 198.18.1.1 8080 {
        weight 3
        TCP_CHECK { connect_timeout 2 }
    }
    real_server 198.18.1.2 8080 {
        TCP_CHECK { connect_timeout 2 }
    }
}
"""


def test_keepalived_defaults_are_written_out() -> None:
    doc, findings = convert(WEB)
    assert not kinds(findings, "error") and not kinds(findings, "unmapped")
    (vs,) = doc["virtual_servers"]
    assert (vs["address"], vs["port"], vs["protocol"], vs["scheduler"], vs["forwarding"]) == (
        "198.18.0.10", 80, "tcp", "wrr", "nat"
    )  # fmt: skip
    # keepalived: every 60 s, removed (not weight 0) on failure, up before the first check,
    # down on the first failure after one retry 1 s later, back on the first pass
    assert vs["health_check"] == {
        "type": "tcp", "interval": "60s", "timeout": "2s", "rise": 1, "fall": 1, "retries": 1,
        "retry_delay": "1s", "start": "up", "on_failure": "remove",
    }  # fmt: skip
    assert vs["reals"] == [
        {"address": "198.18.1.1", "port": 8080, "weight": 3},
        {"address": "198.18.1.2", "port": 8080, "weight": 1},
    ]


def test_inhibit_alpha_and_retry_are_inherited_virtual_server_to_real_to_checker() -> None:
    text = WEB.replace("protocol TCP", "protocol TCP\n    inhibit_on_failure\n    alpha\n    delay_loop 5")
    text = text.replace("TCP_CHECK { connect_timeout 2 }", "TCP_CHECK { connect_timeout 2\n retry 0 }", 1)
    doc, _ = convert(text)
    reals = doc["virtual_servers"][0]["reals"]
    first, second = reals[0]["health_check"], reals[1]["health_check"]
    assert first["on_failure"] == second["on_failure"] == "inhibit"
    assert first["start"] == second["start"] == "down"
    assert first["interval"] == "5s" and "retries" not in first and second["retries"] == 1


def test_http_get_digest_status_codes_and_virtualhost() -> None:
    text = WEB.replace(
        "TCP_CHECK { connect_timeout 2 }",
        "HTTP_GET { url { path /h\n status_code 200 300-302\n digest 9E107D9D372BB6826BD81D3542A419D6 }"
        "\n virtualhost www.example.test }",
    )
    doc, findings = convert(text)
    check = doc["virtual_servers"][0]["health_check"]
    assert check["http"] == {
        "path": "/h", "host": "www.example.test", "status": [200, "300-302"],
        "body_md5": "9e107d9d372bb6826bd81d3542a419d6",
    }  # fmt: skip
    assert check["retry_delay"] == "3s"  # HTTP_GET's own default delay_before_retry


def test_ssl_get_keeps_keepalived_not_verifying() -> None:
    doc, findings = convert(WEB.replace("TCP_CHECK { connect_timeout 2 }", "SSL_GET { url { path / } }"))
    check = doc["virtual_servers"][0]["health_check"]
    assert check["type"] == "https" and check["http"]["verify"] is False
    assert any("verifies by default" in n for n in kinds(findings, "note"))


def test_group_ranges_expand_ipv4_by_byte_and_ipv6_by_hex_group() -> None:
    text = """
virtual_server_group G {
    198.18.0.3-5 80
    2001:db8::9-b 443
    fwmark 7
}
virtual_server group G {
    ip_family inet6
    lb_algo rr
    lb_kind DR
    protocol TCP
    real_server 2001:db8:1::1 0 { weight 1 }
}
"""
    doc, findings = convert(text)
    keys = [(v.get("address"), v.get("port"), v.get("fwmark")) for v in doc["virtual_servers"]]
    assert keys == [
        ("198.18.0.3", 80, None), ("198.18.0.4", 80, None), ("198.18.0.5", 80, None),
        ("2001:db8::9", 443, None), ("2001:db8::a", 443, None), ("2001:db8::b", 443, None),
        (None, None, 7),
    ]  # fmt: skip
    assert doc["virtual_servers"][-1]["family"] == "ipv6"


def test_scheduler_flags_take_the_schedulers_names() -> None:
    doc, _ = convert(WEB.replace("lb_algo wrr", "lb_algo mh\n    flag-1\n    mh-port"))
    assert doc["virtual_servers"][0]["scheduler_flags"] == ["mh-fallback", "mh-port"]


def test_quorum_hysteresis_is_by_weight_alone() -> None:
    doc, findings = convert(WEB.replace("protocol TCP", "protocol TCP\n    quorum 3\n    hysteresis 1"))
    # keepalived: lost below 3 - 1, back at 3 + 1
    assert doc["virtual_servers"][0]["quorum"] == {"min_up": 0, "min_weight": 2, "hysteresis": 2}
    assert not kinds(findings, "unmapped")


def test_quorum_commands_and_omega() -> None:
    extra = 'protocol TCP\n    quorum_up "/bin/up.sh web"\n    quorum_down /bin/down.sh\n    omega'
    doc, findings = convert(WEB.replace("protocol TCP", extra))
    assert doc["virtual_servers"][0]["quorum"] == {
        "min_up": 1, "min_weight": 1, "up_command": ["/bin/up.sh", "web"], "down_command": ["/bin/down.sh"],
        "down_on_stop": True,
    }  # fmt: skip
    assert not kinds(findings, "unmapped")


def test_quorum_is_a_weight_and_the_sorry_server_comes_along() -> None:
    doc, _ = convert(
        WEB.replace("protocol TCP", "protocol TCP\n    quorum 3\n    sorry_server 198.18.9.9 8080")
    )
    vs = doc["virtual_servers"][0]
    assert vs["quorum"] == {"min_up": 1, "min_weight": 3}
    assert vs["sorry_server"] == {"address": "198.18.9.9", "port": 8080}


# ------------------------------------------------------------------ VRRP

VRRP = """
vrrp_script chk {
    script "/usr/bin/pgrep -x haproxy"
    interval 2
    weight 10
}
vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int 1
    virtual_ipaddress {
        198.18.0.100/24 dev eth0 label eth0:1
    }
    track_interface {
        eth1 weight -20
        eth2
    }
    track_script {
        chk
    }
}
"""


def test_vrrp_defaults_to_version_2_and_weights_become_ipvsmgrs() -> None:
    doc, findings = convert(VRRP)
    (inst,) = doc["vrrp"]["instances"]
    assert inst["version"] == 2  # keepalived's default; ipvsmgr's is 3
    # +10 while the script passes == base 110 and -10 while it fails
    assert inst["priority"] == 110
    assert inst["track"]["scripts"] == [
        # keepalived adds nothing before the script's first run: failing until then, here
        {"argv": ["/usr/bin/pgrep", "-x", "haproxy"], "interval": "2s", "timeout": "2s", "weight": -10,
         "start": "down"}
    ]  # fmt: skip
    assert inst["track"]["interfaces"] == [{"name": "eth1", "weight": -20}, {"name": "eth2"}]
    assert inst["virtual_addresses"] == [{"address": "198.18.0.100/24", "label": "eth0:1"}]
    assert any("state MASTER" in n for n in kinds(findings, "note"))


def test_a_vip_keeps_its_label_and_scope_and_a_labelled_repeat_stays_in_the_adverts() -> None:
    text = VRRP.replace(
        "198.18.0.100/24 dev eth0 label eth0:1",
        "198.18.0.100/24 dev eth0 label eth0:1\n 198.18.0.101 scope link\n 198.18.0.101 label eth0:2\n"
        " 198.18.0.102\n 198.18.0.102",
    )
    doc, findings = convert(text)
    (inst,) = doc["vrrp"]["instances"]
    assert inst["virtual_addresses"] == [
        {"address": "198.18.0.100/24", "label": "eth0:1"},
        {"address": "198.18.0.101", "scope": "link"},
        {"address": "198.18.0.101", "label": "eth0:2"},  # keepalived advertises both: so does the import
        "198.18.0.102",
    ]
    # a plain repeat is refused by ipvsmgr as a slip: the adverts would differ, so it is said
    assert any("198.18.0.102 is listed twice" in n for n in kinds(findings, "unmapped"))


def test_auth_pass_is_cut_at_the_bang_like_keepalived() -> None:
    text = VRRP.replace(
        "advert_int 1", "advert_int 1\n    authentication {\n auth_type PASS\n auth_pass k@l!ve1\n }"
    )
    parsed = parse_text(text)
    inst = next(n for n in parsed.root.children or [] if n.name == "vrrp_instance")
    auth = inst.find("authentication")
    assert auth is not None and auth.find("auth_pass").args == ["k@l"]  # type: ignore[union-attr]
    doc, findings = keepalived.convert(parsed)
    assert doc["vrrp"]["instances"][0]["authentication"] == {"type": "pass", "password": "k@l"}
    _, findings = convert(text.replace("advert_int 1", "advert_int 1\n    version 3"))
    assert any("VRRP version 3 does not support authentication" in e for e in kinds(findings, "error"))


# ------------------------------------------------------------------ nothing dropped silently


def test_unknown_keywords_are_errors_where_keepalived_says_so() -> None:
    _, findings = convert(WEB.replace("weight 3", "wieght 3"))
    assert kinds(findings, "error") == ["7: Unknown keyword 'wieght'"]


def test_every_statement_without_an_equivalent_is_listed_with_its_line() -> None:
    text = VRRP.replace("advert_int 1", "advert_int 1\n    virtual_routes {\n 198.18.9.0/24 dev eth0\n }")
    text += "static_ipaddress {\n 198.18.7.1/24 dev eth0\n}\nglobal_defs {\n router_id x\n vrrp_strict\n}\n"
    _, findings = convert(text)
    unmapped = kinds(findings, "unmapped")
    assert any(u.startswith("13: virtual_routes") for u in unmapped)
    assert any(u.startswith("27: static_ipaddress") for u in unmapped)
    assert any(u.startswith("32: vrrp_strict") for u in unmapped)
    assert kinds(findings, "ignored") == ["31: router_id: ipvsmgr names nodes by host name"]


@pytest.mark.parametrize(
    ("text", "status"),
    [
        (WEB, 0),
        (
            WEB.replace(
                "TCP_CHECK { connect_timeout 2 }", "TCP_CHECK { connect_timeout 2\n bind_port 5000 }"
            ),
            1,
        ),
        (WEB.replace("lb_algo wrr", "lb_algo fastest"), 2),
    ],
)
def test_the_exit_status_says_whether_the_result_is_complete(text: str, status: int, tmp_path: Path) -> None:
    path = tmp_path / "k.conf"
    path.write_text(text)
    outcome = command.import_keepalived(str(path), "lb1")
    assert outcome.status == status
    if status < 2:
        cfg = load_text(outcome.text, "out.yaml")  # what was written passes ipvsmgr check
        assert len(cfg.virtual_servers) == 1
        assert yaml.safe_load(outcome.text)["virtual_servers"][0]["scheduler"] == "wrr"
    else:
        assert outcome.text == ""


def test_notify_scripts_keep_keepalived_arguments() -> None:
    extra = 'advert_int 1\n    notify "/etc/keepalived/n.sh --x"\n    notify_master "/bin/m.sh a"\n'
    extra += "    notify_stop /bin/s"
    doc, findings = convert(VRRP.replace("advert_int 1", extra))
    inst = doc["vrrp"]["instances"][0]
    # notify_keepalived: INSTANCE NAME STATE PRIORITY appended, as keepalived's notify
    assert inst["notify_keepalived"] == ["/etc/keepalived/n.sh", "--x"]
    assert (inst["notify_master"], inst["notify_stop"]) == (["/bin/m.sh", "a"], ["/bin/s"])
    assert not [u for u in kinds(findings, "unmapped") if "notify" in u]


def test_a_reverse_script_weight_is_listed_not_carried_inverted() -> None:
    doc, findings = convert(VRRP.replace("    weight 10\n", "    weight 10 reverse\n"))
    inst = doc["vrrp"]["instances"][0]
    assert "scripts" not in inst["track"] and inst["priority"] == 100
    assert any("reverse" in u for u in kinds(findings, "unmapped"))


FILE_CHECKS = """\
track_file down { file "/run/lb/web-down"
    weight 0 }
track_file plain { file "/run/lb/plain"
    init_file 0 }
virtual_server 198.18.0.40 80 {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 198.18.2.40 80 { FILE_CHECK { track_file down } }
    real_server 198.18.2.41 80 { FILE_CHECK { track_file plain
        weight 0 reverse } }
    real_server 198.18.2.42 80 { FILE_CHECK { track_file plain } }
}
"""


def test_file_check_with_weight_0_is_a_file_check_and_a_weight_only_one_is_said() -> None:
    doc, findings = convert(FILE_CHECKS)
    r40, r41, r42 = doc["virtual_servers"][0]["reals"]
    assert r40["health_check"]["type"] == "file"
    assert r40["health_check"]["file"] == {"path": "/run/lb/web-down"}
    assert r40["health_check"]["interval"] == "1s"  # keepalived reacts at once (inotify)
    assert "retries" not in r40["health_check"]  # FILE_CHECK has no retries
    assert r41["health_check"]["file"] == {"path": "/run/lb/plain", "reverse": True}
    assert "health_check" not in r42  # weight 1 (the default) never takes a real down in keepalived
    notes = kinds(findings, "note")
    assert any("weight 1 without dynamic" in n for n in notes), notes
    assert any("init_file" in n for n in notes), notes
    assert not kinds(findings, "unmapped") and not kinds(findings, "error")


def test_a_reals_notify_up_and_down_are_its_commands() -> None:
    first_real = WEB.index("real_server")
    body = WEB.index("{", first_real) + 1
    text = WEB[:body] + '\n notify_up "/bin/up.sh web 1"\n notify_down /bin/down.sh\n' + WEB[body:]
    doc, findings = convert(text)
    real = doc["virtual_servers"][0]["reals"][0]
    assert real["notify_up"] == ["/bin/up.sh", "web", "1"] and real["notify_down"] == ["/bin/down.sh"]
    assert not kinds(findings, "unmapped")
    (vs,) = load_text(yamlout.dump(doc), "imported.yaml").virtual_servers
    r = vs.reals[0]
    assert r.notify_up == ("/bin/up.sh", "web", "1") and r.notify_down == ("/bin/down.sh",)


def test_every_smtp_host_is_checked() -> None:
    smtp = (
        "SMTP_CHECK {\n helo_name mx.test\n host { connect_ip 198.18.1.11\n bindto 198.18.1.2 }\n"
        " host { connect_ip 198.18.2.11\n connect_port 587 }\n }"
    )
    first_real = WEB.index("real_server")
    check_at = WEB.index("TCP_CHECK", first_real)
    end = WEB.index("}", WEB.index("{", check_at)) + 1
    doc, findings = convert(WEB[:check_at] + smtp + WEB[end:])
    hc = doc["virtual_servers"][0]["reals"][0]["health_check"]
    assert (hc["type"], hc["address"], hc["source"]) == ("smtp", "198.18.1.11", "198.18.1.2")
    assert hc["smtp"] == {"helo": "mx.test", "also": [{"address": "198.18.2.11", "port": 587}]}
    assert not kinds(findings, "unmapped")
