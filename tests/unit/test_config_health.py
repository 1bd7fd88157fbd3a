"""health_check, quorum and sorry_server sections: merging, defaults, positions."""

from __future__ import annotations

import pytest

from healthchecks.checkers.dns import DnsCheck
from healthchecks.checkers.http import HttpCheck
from healthchecks.checkers.script import ScriptCheck
from healthchecks.checkers.tcp import TcpCheck
from ipvsmgr.config import ConfigError, load_text
from ipvsmgr.config.model import Quorum

F = "lb.yaml"


def problems(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(ConfigError) as e:
        load_text(text, F)
    return [(p.line, p.col, p.message) for p in e.value.problems]


BASE = """\
virtual_servers:
  - address: 198.18.0.10
    port: 443
    health_check:
      type: https
      interval: 2s
      timeout: 500ms
      rise: 3
      http: {path: /healthz, status: [200, "300-399"], verify: false}
    reals:
      - {address: 198.18.1.1}
      - {address: 198.18.1.2}
      - address: 198.18.1.3
        health_check: {port: 8443, http: {path: /ok}}
      - {address: 198.18.1.4, health_check: false}
      - address: 198.18.1.5
        health_check: {type: tcp, fall: 1}
"""


def test_defaults_merging_and_sharing() -> None:
    vs = load_text(BASE, F).virtual_servers[0]
    r1, r2, r3, r4, r5 = vs.reals
    assert r1.health is r2.health  # one object for every real without an override
    h = r1.health
    assert h is not None and h.type == "https" and (h.interval, h.timeout, h.rise, h.fall) == (2.0, 0.5, 3, 3)
    assert h.checker == HttpCheck(tls=True, path="/healthz", expect_status=(200, "300-399"), verify=False)
    assert not h.start_up and h.on_failure == "inhibit" and h.port is None
    assert r3.health is not None and r3.health.port == 8443
    assert r3.health.checker == HttpCheck(tls=True, path="/ok", expect_status=(200, "300-399"), verify=False)
    assert r4.health is None
    assert r5.health is not None and r5.health.checker == TcpCheck() and r5.health.fall == 1
    assert r5.health.rise == 3  # the rest of the default still applies
    assert vs.quorum is None and vs.sorry is None


def test_every_type_builds_its_checker() -> None:
    text = """\
virtual_servers:
  - address: 198.18.0.10
    port: 53
    protocol: udp
    reals:
      - {address: 198.18.1.1, health_check: {type: dns, dns: {name: www.test, answer: [198.18.0.9]}}}
      - {address: 198.18.1.2, health_check: {type: udp, udp: {payload_hex: "00ff", expect: pong}}}
      - {address: 198.18.1.3, health_check: {type: icmp, icmp: {size: 100}}}
      - {address: 198.18.1.4, health_check: {type: smtp, smtp: {helo: lb1}}}
      - {address: 198.18.1.5, health_check: {type: grpc, grpc: {service: api}}}
      - {address: 198.18.1.6, health_check: {type: tls, tls: {min_days_left: 14}}}
      - address: 198.18.1.7
        health_check:
          type: script
          start: up
          on_failure: remove
          script: {argv: [/usr/lib/ipvsmgr/check-db, --fast], user: nobody}
"""
    reals = load_text(text, F).virtual_servers[0].reals
    kinds = [type(r.health.checker).__name__ for r in reals if r.health]
    assert kinds == ["DnsCheck", "UdpCheck", "IcmpCheck", "SmtpCheck", "GrpcCheck", "TlsCheck", "ScriptCheck"]
    assert reals[0].health is not None and reals[0].health.checker == DnsCheck(
        "www.test", answer=frozenset({"198.18.0.9"})
    )
    udp = reals[1].health.checker  # type: ignore[union-attr]
    assert (udp.payload, udp.expect, udp.reply_required) == (b"\x00\xff", b"pong", True)

    script = reals[6].health
    assert script is not None and script.start_up and script.on_failure == "remove"
    assert script.checker == ScriptCheck(argv=("/usr/lib/ipvsmgr/check-db", "--fast"), user="nobody")


UDP_SILENCE = [("{payload: hi}", False), ("{expect: pong}", True), ("{require_reply: true}", True),
               ("{expect_regex: po, require_reply: false}", False)]  # fmt: skip


@pytest.mark.parametrize(("options", "required"), UDP_SILENCE)
def test_udp_silence_follows_keepalived_unless_a_reply_is_required(options: str, required: bool) -> None:
    text = f"""\
virtual_servers:
  - address: 198.18.0.10
    port: 53
    protocol: udp
    reals:
      - {{address: 198.18.1.2, health_check: {{type: udp, udp: {options}}}}}
"""
    health = load_text(text, F).virtual_servers[0].reals[0].health
    assert health is not None and health.checker.reply_required is required  # type: ignore[attr-defined]


def test_problems_point_at_the_setting_that_made_them() -> None:
    text = """\
virtual_servers:
  - address: 198.18.0.10
    port: 80
    health_check: {type: tcp, interval: 1s, timeout: 2s}
    reals:
      - {address: 198.18.1.1}
      - {address: 198.18.1.2, health_check: {http: {path: /x}}}
  - address: 198.18.0.11
    port: 80
    reals:
      - {address: 198.18.1.1, health_check: {type: dns}}
      - {address: 198.18.1.2, health_check: {type: http, http: {body_regex: "(", path: /}}}
      - {address: 198.18.1.3, health_check: {rise: 2}}
"""
    got = problems(text)
    lines = text.splitlines()

    def at(line: int, needle: str) -> tuple[int, int]:
        return line, lines[line - 1].index(needle) + 1

    assert got == [
        (*at(4, "2s}"), "timeout 2s is longer than the interval 1s"),  # once, not once per real
        (*at(7, "http:"), "`http` options do not apply to a tcp check"),
        (*at(11, "dns}"), "a dns check needs a `dns:` block (with name at least)"),
        (*at(12, "http: {"), got[3][2]),
        (
            *at(13, "{rise"),
            "a health_check needs `type` (set it here or on the virtual server's health_check)",
        ),
    ]
    assert got[3][2].startswith("invalid http check options: ")


def test_quorum_and_sorry_server() -> None:
    text = (
        BASE
        + """\
    quorum: {min_up: 2, hysteresis: 1}
    sorry_server: {address: 198.18.9.9, port: 8080}
  - address: 198.18.0.11
    port: 80
    sorry_server: {address: 198.18.9.9}
    reals: [{address: 198.18.1.1}]
"""
    )
    a, b = load_text(text, F).virtual_servers
    assert a.quorum == Quorum(2, 0, 1)
    assert a.sorry is not None and (a.sorry.address, a.sorry.port, a.sorry.weight) == ("198.18.9.9", 8080, 1)
    assert b.quorum == Quorum(1, 0, 0)  # a sorry server alone means "when every real is down"
    assert b.sorry is not None and b.sorry.port == 80


def test_sorry_server_must_not_be_a_real() -> None:
    text = """\
virtual_servers:
  - address: 198.18.0.10
    port: 80
    sorry_server: {address: 198.18.1.1}
    reals: [{address: 198.18.1.1}]
"""
    assert problems(text) == [(4, 19, "the sorry server is also one of the reals: use a separate server")]


def test_fwmark_reals_need_a_check_port() -> None:
    text = """\
virtual_servers:
  - fwmark: 7
    health_check: {type: tcp}
    reals:
      - {address: 198.18.1.1}
      - {address: 198.18.1.2, health_check: {port: 443}}
      - {address: 198.18.1.3, health_check: {type: icmp}}
"""
    assert problems(text) == [
        (5, 9, "this real has no port to check (fwmark service): set the tcp check's `port`")
    ]


def test_a_missing_optional_package_is_a_config_problem_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without python3-dnspython (a Recommends), a dns check is reported at its line."""
    import importlib

    real = importlib.import_module

    def no_dns(name: str, package: str | None = None) -> object:
        if name == "dns" or name.startswith("dns."):
            raise ImportError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_dns)
    text = (
        "virtual_servers:\n  - address: 198.18.0.10\n    port: 53\n    protocol: udp\n"
        "    health_check: {type: dns, dns: {name: example.org}}\n    reals: [{address: 198.18.1.1}]\n"
    )
    [(line, col, message)] = problems(text)
    assert (line, col) == (5, 26)
    assert message == "the dns health check needs dnspython (Debian package python3-dnspython)"


def test_icmp_size_below_what_the_checker_takes_is_refused_by_check() -> None:
    from ipvsmgr.config import ConfigError

    text = """\
virtual_servers:
  - address: 198.18.0.10
    port: 80
    reals:
      - {address: 198.18.1.3, health_check: {type: icmp, icmp: {size: 4}}}
"""
    with pytest.raises(ConfigError) as e:
        load_text(text, F)
    [p] = e.value.problems
    assert (p.line, p.col) == (5, text.splitlines()[4].index("4}") + 1)
    assert "8" in p.message, p.message
