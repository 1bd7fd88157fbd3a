"""The xdp: section: schema, cross-field rules with file:line:col, defaults."""

from __future__ import annotations

import pytest

from ipvsmgr.config import ConfigError, load_text
from tests.unit.test_config import at

F = "lb.yaml"
VS = "virtual_servers:\n  - {name: web, address: 198.18.1.10, port: 80, reals: [{address: 198.18.2.1}]}\n"


def problems(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(ConfigError) as e:
        load_text(text, F)
    return [(p.line, p.col, p.message) for p in e.value.problems]


METHODS = [("retransmit", "retransmit"), ("rst-cookie", "rst-cookie"), ("off", "off"),
           ("true", "retransmit"), ("false", "off")]  # fmt: skip


@pytest.mark.parametrize(("given", "method"), METHODS)
def test_challenge_methods(given: str, method: str) -> None:
    text = VS + f"xdp:\n  interfaces: [eth0]\n  attack: {{challenge: {given}, verified_syn_rate: 5}}\n"
    x = load_text(text, F).xdp
    assert x is not None and x.challenge == method
    assert (x.verified_syn_rate, x.verified_syn_burst) == (5, 10)


def test_defaults_and_values() -> None:
    cfg = load_text(VS + "xdp:\n  interfaces: [eth0, eth1]\n", F)
    x = cfg.xdp
    assert x is not None
    assert x.interfaces == ("eth0", "eth1") and x.mode == "auto" and x.pin_path == "/sys/fs/bpf/ipvsmgr"
    assert (x.syn_rate_per_source, x.attack_syn_rate, x.challenge) == (0, 0, "retransmit")
    assert (x.verified_syn_rate, x.verified_syn_burst) == (50, 100)
    assert (x.attack_hold, x.verified_ttl, x.drop_sample_every) == (10.0, 600.0, 64)
    text = VS + (
        "xdp:\n  interfaces: [eth0]\n  mode: generic\n  syn_rate_per_source: 50\n"
        "  attack: {syn_rate: 20000, hold: 30s, challenge: false, verified_ttl: 1h}\n"
        "  allowlist: [198.18.5.0/24, '2001:db8:5::/48']\n"
        "  blocklist: [198.18.6.7, {prefix: 198.18.7.0/24, action: tarpit}]\n"
    )
    x = load_text(text, F).xdp
    assert x is not None
    assert x.syn_burst_per_source == 100  # twice the rate by default
    assert (x.attack_syn_rate, x.attack_hold, x.challenge, x.verified_ttl) == (20000, 30.0, "off", 3600.0)
    assert x.allowlist == ("198.18.5.0/24", "2001:db8:5::/48")
    assert x.blocklist == (("198.18.6.7/32", "drop"), ("198.18.7.0/24", "tarpit"))


CASES = [
    ("host bits", "  allowlist: [198.18.5.1/24]\n", "198.18.5.1/24", "the prefix is 198.18.5.0/24"),
    ("twice", "  allowlist: [198.18.5.0/24]\n  blocklist: [198.18.6.0/24, 198.18.5.0/24]\n",
     "198.18.5.0/24]\n#2", "already in the allowlist on line 5"),
    ("burst", "  syn_rate_per_source: 100\n  syn_burst_per_source: 10\n", "10\n", "make it at least 100"),
    ("hold", "  attack: {hold: 100ms}\n", "100ms", "at least 1s"),
    ("ttl", "  attack: {verified_ttl: 0}\n", "0}", "at least 1s"),
    ("mode", "  mode: fast\n", "fast", "expected one of"),
    ("challenge", "  attack: {challenge: cookie}\n", "cookie", "expected retransmit, rst-cookie or off"),
    ("budget", "  attack: {verified_syn_rate: 50, verified_syn_burst: 5}\n", "5}", "make it at least 50"),
    ("action", "  blocklist: [{prefix: 198.18.5.0/24, action: nuke}]\n", "{prefix", "action: drop|tarpit"),
    ("pin", "  pin_path: /tmp/x\n", "/tmp/x", "directly under /sys/fs/bpf/"),
    ("unknown", "  interface: eth0\n", "interface:", "unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "needle", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_errors_point_at_the_value(extra: str, needle: str, fragment: str) -> None:
    text = VS + "xdp:\n  interfaces: [eth0]\n" + extra
    got = problems(text)
    assert len(got) == 1, got
    line, col, message = got[0]
    assert fragment in message
    needle, _, nth = needle.partition("#")
    assert (line, col) == at(text, needle, int(nth or 1))


def test_nothing_to_guard() -> None:
    text = (
        "virtual_servers:\n  - {fwmark: 3, family: ipv4, reals: [{address: 198.18.0.1}]}\n"
        "xdp: {interfaces: [eth0]}\n"
    )
    [(line, col, message)] = problems(text)
    assert (line, col) == (3, 6) and "no virtual server has an address" in message
    assert "xdp.protect" in message


def test_guard_only_protects_its_listed_services() -> None:
    from ipvsmgr.config import load_text
    from ipvsmgr.xdpshield import tables_for

    text = (
        "xdp:\n  interfaces: [eth0]\n  protect:\n    - {address: 198.18.0.10, port: 443}\n"
        "    - {address: '2001:db8:0::1', port: 53, protocol: udp}\n"
    )
    cfg = load_text(text, "lb.yaml")
    assert cfg.virtual_servers == () and cfg.xdp is not None
    assert cfg.xdp.protect == (("198.18.0.10", 443, "tcp"), ("2001:db8::1", 53, "udp"))
    services = {(s.address, s.port, s.proto) for s in tables_for(cfg, frozenset(), {}).services}
    assert services == {("198.18.0.10", 443, 6), ("2001:db8::1", 53, 17)}
    bad = "xdp:\n  interfaces: [eth0]\n  protect: [{address: 198.18.0.300, port: 0}]\n"
    found = problems(bad)
    assert [(line, col) for line, col, _ in found] == [(3, 23), (3, 43)], found


def test_interfaces_required_and_not_empty() -> None:
    assert "'interfaces' is required" in problems(VS + "xdp: {mode: auto}\n")[0][2]
    assert problems(VS + "xdp: {interfaces: []}\n")[0][:2] == (3, 19)
