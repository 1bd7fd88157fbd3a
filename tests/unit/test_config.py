"""ipvsmgr.config.load_text: schema + semantic checks, each problem at FILE:LINE:COL."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from ipvsmgr.config import Config, ConfigError, Problem, load, load_text
from ipvsmgr.config.durations import parse_duration
from ipvsmgr.config.model import Persistence, Timeouts, Tunnel

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_YAML = ROOT / "etc" / "examples" / "quickstart.yaml"
CONFFILE = ROOT / "etc" / "ipvsmgr" / "ipvsmgr.yaml"
ALL_METHODS_YAML = ROOT / "etc" / "examples" / "all-methods.yaml"
F = "lb.yaml"
AF4, AF6 = socket.AF_INET, socket.AF_INET6


# ---------------------------------------------------------------- helpers


def problems(text: str) -> list[Problem]:
    try:
        load_text(text, F)
    except ConfigError as e:
        return e.problems
    return []


def one(text: str) -> Problem:
    found = problems(text)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def at(text: str, needle: str, nth: int = 1) -> tuple[int, int]:
    """1-based (line, col) where the nth occurrence of `needle` starts in `text`."""
    idx = -1
    for _ in range(nth):
        idx = text.index(needle, idx + 1)
    return position(text, idx)


def position(text: str, idx: int) -> tuple[int, int]:
    """1-based (line, col) of the character at offset `idx`."""
    return text.count("\n", 0, idx) + 1, idx - (text.rfind("\n", 0, idx) + 1) + 1


def assert_one_at(text: str, needle: str, fragment: str, nth: int = 1) -> Problem:
    p = one(text)
    assert (p.line, p.col) == at(text, needle, nth), str(p)
    assert fragment in p.message, str(p)
    assert p.file == F
    return p


def test_at_helper() -> None:
    assert at("ab\ncd: x\n", "x") == (2, 5)
    assert at("x\nx\n", "x", 2) == (2, 1)


# ---------------------------------------------------------------- shipped examples


def _raw(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def _check_against_raw(cfg: Config, raw: dict[str, Any]) -> None:
    """The typed values follow the file and the documented defaults, whatever the file says."""
    ipvs = raw.get("ipvs") or {}
    t = ipvs.get("timeouts") or {}
    assert cfg.timeouts == Timeouts(
        *(int(parse_duration(t[k])) if k in t else 0 for k in ("tcp", "tcp_fin", "udp"))
    )
    assert cfg.drain_timeout == parse_duration(ipvs.get("drain_timeout", 300))
    assert len(cfg.virtual_servers) == len(raw["virtual_servers"])
    for vs, r in zip(cfg.virtual_servers, raw["virtual_servers"], strict=False):
        assert vs.scheduler == r.get("scheduler", "wlc")
        assert vs.scheduler_flags == tuple(r.get("scheduler_flags", ()))
        assert vs.one_packet == r.get("one_packet", False)
        if "fwmark" in r:
            assert (vs.fwmark, vs.address, vs.port, vs.protocol) == (r["fwmark"], "", 0, "")
            assert vs.family == {"ipv4": AF4, "ipv6": AF6}[r.get("family", "ipv4")]
        else:
            assert (vs.address, vs.port, vs.protocol) == (
                str(r["address"]),
                r["port"],
                r.get("protocol", "tcp"),
            )
            assert vs.family == (AF6 if ":" in str(r["address"]) else AF4)
        if "persistence" in r:
            p = r["persistence"]
            assert vs.persistence is not None
            assert vs.persistence.timeout == int(parse_duration(p.get("timeout", 300)))
            if "prefix" in p:
                assert vs.persistence.prefix == p["prefix"]
        else:
            assert vs.persistence is None
        assert len(vs.reals) == len(r.get("reals", []))
        for real, rr in zip(vs.reals, r.get("reals", []), strict=False):
            fwd = rr.get("forwarding", r.get("forwarding", "nat"))
            assert real.forwarding == fwd
            # the port defaults to the virtual port, 0 for fwmark services
            assert real.port == rr.get("port", vs.port)
            assert real.weight == rr.get("weight", r.get("weight", 1))
            if fwd == "tunnel":
                merged = {**(r.get("tunnel") or {}), **(rr.get("tunnel") or {})}
                assert real.tunnel == Tunnel(
                    merged.get("type", "ipip"), merged.get("port", 0), merged.get("checksum", "none")
                )
            else:
                assert real.tunnel is None


def test_default_config_loads_with_typed_values() -> None:
    cfg = load_text(DEFAULT_YAML.read_text(), str(DEFAULT_YAML))
    assert cfg.source == str(DEFAULT_YAML)
    _check_against_raw(cfg, _raw(DEFAULT_YAML))
    vs = {v.name: v for v in cfg.virtual_servers}
    web = vs["web"]
    assert (web.family, web.protocol, web.scheduler) == (AF4, "tcp", "wrr")
    assert [(r.port, r.weight, r.forwarding) for r in web.reals] == [(8080, 10, "nat")] * 2
    api = vs["api"]
    assert (api.scheduler, api.scheduler_flags) == ("mh", ("mh-port", "mh-fallback"))
    # dr reals inherit the forwarding of the virtual server and its port
    assert [(r.port, r.forwarding, r.weight) for r in api.reals] == [(api.port, "dr", 1)] * 2
    shop = vs["shop"]
    assert shop.scheduler == "lc"
    assert shop.persistence == Persistence(timeout=600, prefix=24)  # 10m, netmask 255.255.255.0


def test_the_shipped_conffile_is_the_quickstart_commented_out() -> None:
    """/etc/ipvsmgr/ipvsmgr.yaml configures nothing as installed (the unit skips it),
    and uncommented it is exactly the quickstart example."""
    text = CONFFILE.read_text()
    assert not [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    cfg = load_text(text, str(CONFFILE))
    assert cfg.virtual_servers == () and cfg.vrrp.instances == () and cfg.bgp is None and cfg.xdp is None
    body = text.split("\n#\n#\n", 1)[1]
    uncommented = "\n".join(line[2:] if line.startswith("# ") else "" for line in body.splitlines())
    quick = DEFAULT_YAML.read_text().split("\n\n", 1)[1]
    assert yaml.safe_load(uncommented) == yaml.safe_load(quick)


def test_all_methods_example_loads_with_typed_values() -> None:
    cfg = load_text(ALL_METHODS_YAML.read_text(), "all-methods.yaml")
    _check_against_raw(cfg, _raw(ALL_METHODS_YAML))
    vs = {v.name: v for v in cfg.virtual_servers}
    reals = [r for v in cfg.virtual_servers for r in v.reals]
    # what the example is there to show
    assert {r.forwarding for r in reals} == {"nat", "dr", "tunnel"}
    assert {r.tunnel.type for r in reals if r.tunnel} == {"ipip", "gre", "gue"}
    assert {r.tunnel.checksum for r in reals if r.tunnel} == {"none", "csum", "remcsum"}
    assert all(r.tunnel.port > 0 for r in reals if r.tunnel and r.tunnel.type == "gue")
    assert {v.family for v in cfg.virtual_servers} == {AF4, AF6}

    web = vs["web"]
    assert (web.scheduler, web.scheduler_flags) == ("mh", ("mh-port",))
    nat, dr, ipip, gre, gue, limited = web.reals
    assert (nat.forwarding, nat.port, nat.weight, nat.tunnel) == ("nat", 8080, 3, None)
    assert (dr.forwarding, dr.port, dr.weight) == ("dr", 80, 2)  # port defaults to the VS port
    assert (ipip.forwarding, ipip.port, ipip.tunnel) == ("tunnel", 80, Tunnel("ipip", 0, "none"))
    assert gre.tunnel == Tunnel("gre", 0, "csum")
    assert gue.tunnel == Tunnel("gue", 6080, "none")
    assert (limited.upper_threshold, limited.lower_threshold) == (1000, 800)

    assert vs["sticky"].persistence == Persistence(timeout=600, prefix=24)
    dns = vs["dns"]
    assert (dns.protocol, dns.one_packet, dns.scheduler_flags) == ("udp", True, ("sh-port", "sh-fallback"))
    web6 = vs["web6"]
    assert (web6.family, web6.address) == (AF6, "2001:db8::10")
    assert web6.persistence == Persistence(timeout=60, prefix=64)
    v6, v4 = web6.reals
    assert (v6.family, v6.port, v6.forwarding) == (AF6, 8080, "nat")
    assert (v4.family, v4.forwarding, v4.port) == (AF4, "tunnel", 80)  # IPv4 real of an IPv6 VS, tunnelled

    marked = vs["marked"]
    assert (marked.fwmark, marked.address, marked.port, marked.protocol) == (42, "", 0, "")
    # fwmark reals default to port 0; VS tunnel settings are inherited and can be overridden
    assert [(r.port, r.forwarding) for r in marked.reals] == [(0, "tunnel"), (0, "tunnel")]
    assert marked.reals[0].tunnel == Tunnel("gue", 6080, "remcsum")
    assert marked.reals[1].tunnel == Tunnel("gue", 6080, "none")
    assert vs["sctp"].protocol == "sctp"


def test_load_reads_a_file_and_reports_a_missing_one(tmp_path: Path) -> None:
    assert [v.name for v in load(str(DEFAULT_YAML)).virtual_servers] == ["web", "api", "shop"]
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as e:
        load(str(missing))
    (p,) = e.value.problems
    assert (p.file, p.line, p.col) == (str(missing), 1, 1)
    assert "cannot read" in p.message


def test_only_an_empty_list_of_virtual_servers_loads() -> None:
    cfg = load_text("virtual_servers: []\n", F)
    assert cfg.virtual_servers == ()
    assert cfg.drain_timeout == 300.0
    assert (cfg.timeouts.tcp, cfg.timeouts.tcp_fin, cfg.timeouts.udp) == (0, 0, 0)
    assert load_text("{}\n", F).virtual_servers == ()


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"], ids=["empty", "newline", "comment"])
def test_empty_file_loads(text: str) -> None:
    cfg = load_text(text, F)
    assert cfg.virtual_servers == ()


def test_problem_str_and_error_text() -> None:
    text = "virtual_servers:\n  - {address: 198.18.0.1, port: 80, sheduler: rr}\n"
    with pytest.raises(ConfigError) as e:
        load_text(text, F)
    (p,) = e.value.problems
    assert str(p) == f"{F}:2:37: unknown key 'sheduler'; did you mean 'scheduler'?"
    assert str(e.value) == str(p)


# ---------------------------------------------------------------- YAML level


def test_yaml_syntax_error_position() -> None:
    text = "virtual_servers:\n  - address: 198.18.0.1\n    port: 80: 81\n"
    p = one(text)
    assert (p.line, p.col) == (3, 13) == at(text, ": 81")
    assert p.message.startswith("YAML syntax error")


def test_yaml_tab_indentation_error_position() -> None:
    p = one("ipvs:\n\tdrain_timeout: 1s\n")
    assert (p.line, p.col) == (2, 1)
    assert "YAML syntax error" in p.message


def test_duplicate_keys() -> None:
    text = "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    port: 81\n"
    p = assert_one_at(text, "port: 81", "duplicate key 'port'")
    assert (p.line, p.col) == (4, 5)
    text = "ipvs: {}\nvirtual_servers: []\nipvs: {drain_timeout: 1s}\n"
    assert_one_at(text, "ipvs", "duplicate key 'ipvs'", nth=2)
    text = "virtual_servers:\n  - {address: 198.18.0.1, port: 80, port: 81}\n"
    assert_one_at(text, "port: 81", "duplicate key 'port'")


# ---------------------------------------------------------------- schema problems


@pytest.mark.parametrize(
    ("text", "needle", "suggestion"),
    [
        ("virtual_server: []\n", "virtual_server", "did you mean 'virtual_servers'?"),
        (
            "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    sheduler: rr\n",
            "sheduler",
            "did you mean 'scheduler'?",
        ),
        (
            "virtual_servers:\n  - {address: 198.18.0.1, port: 80,\n"
            "     reals: [{address: 198.18.1.1, wieght: 2}]}\n",
            "wieght",
            "did you mean 'weight'?",
        ),
        (
            "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    forwarding: tunnel\n"
            "    tunnel: {typ: gre}\n",
            "typ:",
            "did you mean 'type'?",
        ),
        ("ipvs:\n  timeouts: {tcp: 1m, tcpfin: 1m}\n", "tcpfin", "did you mean 'tcp_fin'?"),
        ("ipvs:\n  drain_timout: 1m\n", "drain_timout", "did you mean 'drain_timeout'?"),
    ],  # fmt: skip
)
def test_unknown_key_did_you_mean(text: str, needle: str, suggestion: str) -> None:
    p = assert_one_at(text, needle, "unknown key")
    assert p.message.endswith(suggestion)


def test_unknown_key_without_a_close_match_lists_the_valid_keys() -> None:
    text = "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    zzzqqq: 1\n"
    p = assert_one_at(text, "zzzqqq", "unknown key 'zzzqqq'; valid keys here: name, address, port")
    assert (p.line, p.col) == (4, 5)


VS_FIELD = "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    {field}: {value}\n"
REAL_FIELD = "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    reals:\n      - address: 198.18.1.1\n        {field}: {value}\n"  # noqa: E501
REAL_TUNNEL_FIELD = REAL_FIELD.replace("{field}", "forwarding: tunnel\n        {field}")


@pytest.mark.parametrize(
    ("template", "field", "value", "fragment", "needle"),
    [
        (VS_FIELD, "protocol", "icmp", "expected one of tcp, udp, sctp; got string 'icmp'", None),
        (VS_FIELD, "scheduler", "foo", "expected one of rr, wrr", None),
        (VS_FIELD, "forwarding", "masq", "expected one of nat, dr, tunnel", None),
        (VS_FIELD, "one_packet", "1", "expected boolean, got int 1", None),
        (VS_FIELD, "weight", "70000", "70000 is above the maximum of 65535", None),
        (VS_FIELD, "weight", "'3'", "expected integer, got string '3'", None),
        (VS_FIELD, "name", "-bad", "names are 1-64 characters", None),
        (VS_FIELD, "name", "a" * 65, "names are 1-64 characters", None),
        (VS_FIELD, "scheduler_flags", "[sh-port, sh-port]", "list items must be unique", "sh-port]"),
        (VS_FIELD, "scheduler_flags", "sh-port", "expected array, got string 'sh-port'", None),
        (VS_FIELD, "persistence", "{netmask: 255.0.255.0}", "expected an IPv4 netmask", "255.0.255.0"),
        (VS_FIELD, "persistence", "{netmask: '24'}", "expected an IPv4 netmask", "'24'"),
        (VS_FIELD, "persistence", "{prefix: 0}", "0 is below the minimum of 1", "0}"),
        (VS_FIELD, "persistence", "{prefix: 129}", "129 is above the maximum of 128", "129"),
        (VS_FIELD, "persistence", "{timeout: 5 min}", "expected a duration", "5 min"),
        (VS_FIELD, "persistence", "[]", "expected object, got a list", None),
        (REAL_FIELD, "weight", "-1", "-1 is below the minimum of 0", None),
        (REAL_FIELD, "weight", "true", "expected integer, got boolean true", None),
        (REAL_FIELD, "weight", "1.5", "expected integer, got float 1.5", None),
        (REAL_FIELD, "port", "65536", "65536 is above the maximum of 65535", None),
        (REAL_FIELD, "port", "'8080'", "expected integer, got string '8080'", None),
        (REAL_FIELD, "upper_threshold", "4294967296", "above the maximum of 4294967295", None),
        (REAL_FIELD, "forwarding", "tun", "expected one of nat, dr, tunnel", None),
        (REAL_TUNNEL_FIELD, "tunnel", "{type: vxlan}", "expected one of ipip, gue, gre", "vxlan"),
        (REAL_TUNNEL_FIELD, "tunnel", "{type: gue, port: 0}", "0 is below the minimum of 1", "0}"),
        (
            REAL_TUNNEL_FIELD,
            "tunnel",
            "{type: gre, checksum: yes}",
            "expected one of none, csum, remcsum",
            "yes",
        ),
        (REAL_FIELD, "health_check", "{type: ping}", "expected one of tcp, http, https", "ping"),
        (REAL_FIELD, "health_check", "{rise: 0}", "0 is below the minimum of 1", "0}"),
    ],  # fmt: skip
)
def test_wrong_types_enums_and_ranges(
    template: str, field: str, value: str, fragment: str, needle: str | None
) -> None:
    text = template.format(field=field, value=value)
    # the offending node: the value itself, or a scalar inside a flow value
    start = text.index(f"{field}: {value}") + len(field) + 2
    idx = text.index(needle, start) if needle else start
    p = one(text)
    assert (p.line, p.col) == position(text, idx), str(p)
    assert fragment in p.message, str(p)


@pytest.mark.parametrize(
    ("text", "needle", "fragment"),
    [
        (
            "virtual_servers:\n  - address: 198.18.0.400\n    port: 80\n",
            "198.18.0.400",
            "expected an IPv4 or IPv6 address (got string '198.18.0.400')",
        ),
        ("virtual_servers:\n  - address: 198.18.0.1\n    port: -1\n", "-1", "-1 is below the minimum of 0"),
        (
            "virtual_servers:\n  - address: 198.18.0.1\n    port: '80'\n",
            "'80'",
            "expected integer, got string '80'",
        ),
        ("virtual_servers: {}\n", "{}", "expected array, got a mapping"),
        ("virtual_servers:\n  - fwmark: 0\n    family: ipv4\n", "0\n", "0 is below the minimum of 1"),
        (
            "virtual_servers:\n  - {address: 198.18.0.1, port: 80, reals: [{address: 198.18.1.1, forwarding: tunnel, tunnel: {type: gue, port: 6080.5}}]}\n",  # noqa: E501
            "6080.5",
            "expected integer, got float 6080.5",
        ),
        ("- 1\n", "- 1", "expected object, got a list"),
    ],  # fmt: skip
)
def test_schema_problem_positions(text: str, needle: str, fragment: str) -> None:
    assert_one_at(text, needle, fragment)


def test_a_fwmark_of_zero_is_no_fwmark() -> None:
    # fwmark: 0 is below the minimum; the remaining checks still run on the schema-valid rest
    text = "virtual_servers:\n  - fwmark: 0\n"
    assert any(p.message == "0 is below the minimum of 1" for p in problems(text))


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("100ms", 0.1), ("2s", 2.0), ("1m", 60.0), ("1.5m", 90.0), ("1h", 3600.0), ("45", 45.0), ("0", 0.0),
     ("'30s'", 30.0), ("250ms", 0.25)],
)  # fmt: skip
def test_durations(value: str, seconds: float) -> None:
    cfg = load_text(f"ipvs:\n  drain_timeout: {value}\n", F)
    assert cfg.drain_timeout == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["5 min", "5min", "-5", "2.5", "1d", "ms", "''", "1.s", "[1]", "true", "s5"]
)
def test_bad_durations(value: str) -> None:
    text = f"ipvs:\n  drain_timeout: {value}\n"
    p = assert_one_at(text, value, "expected a duration such as 100ms, 2s, 1m or 1h")
    assert p.line == 2 and p.col == 18


@pytest.mark.parametrize(
    ("timeouts", "expected"),
    [("{tcp: 15m}", (900, 0, 0)), ("{tcp_fin: 2m, udp: 1h}", (0, 120, 3600)), ("{udp: 30}", (0, 0, 30)),
     ("{tcp: 1.5m}", (90, 0, 0)), ("{tcp: 2000ms}", (2, 0, 0))],
)  # fmt: skip
def test_timeouts(timeouts: str, expected: tuple[int, int, int]) -> None:
    t = load_text(f"ipvs:\n  timeouts: {timeouts}\n", F).timeouts
    assert (t.tcp, t.tcp_fin, t.udp) == expected


def test_persistence_timeout_durations() -> None:
    text = "virtual_servers:\n  - {address: 198.18.0.1, port: 80, persistence: {timeout: 2m}}\n"
    assert load_text(text, F).virtual_servers[0].persistence == Persistence(120, 32)
    text = "virtual_servers:\n  - {address: 198.18.0.1, port: 80, persistence: {}}\n"
    assert load_text(text, F).virtual_servers[0].persistence == Persistence(300, 32)
    text = "virtual_servers:\n  - {address: '2001:db8::1', port: 80, persistence: {timeout: 1h}}\n"
    assert load_text(text, F).virtual_servers[0].persistence == Persistence(3600, 128)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("virtual_servers:\n  - {address: 198.18.0.1, port: 80, persistence: {timeout: 1.5s}}\n", "1.5s"),
        ("virtual_servers:\n  - {address: 198.18.0.1, port: 80, persistence: {timeout: 100ms}}\n", "100ms"),
        ("virtual_servers:\n  - {address: 198.18.0.1, port: 80, persistence: {timeout: 0}}\n", "0}"),
        ("ipvs:\n  timeouts:\n    tcp: 500ms\n", "500ms"),
        ("ipvs:\n  timeouts:\n    tcp_fin: 2.5s\n", "2.5s"),
        ("ipvs:\n  timeouts:\n    udp: 0\n", "0\n"),
    ],
)
def test_non_integer_timeouts(text: str, needle: str) -> None:
    assert_one_at(text, needle, "must be a whole number of seconds, at least 1s")


# ---------------------------------------------------------------- semantic checks (build.py)

SEMANTIC_CASES = [
    # (id, text, needle, nth, message fragment)
    ("duplicate-vs",
     "virtual_servers:\n  - {name: a, address: 198.18.0.1, port: 80}\n"
     "  - {name: b, address: 198.18.0.1, port: 80}\n",
     "{name: b", 1, "virtual server b is defined twice (first on line 2)"),
    ("duplicate-vs-default-names",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n  - address: 198.18.0.1\n    port: 80\n"
     "    protocol: tcp\n",
     "address", 2, "virtual server tcp:198.18.0.1:80 is defined twice (first on line 2)"),
    ("duplicate-fwmark",
     "virtual_servers:\n  - fwmark: 7\n  - {fwmark: 7, family: ipv4, name: again}\n",
     "{fwmark: 7", 1, "virtual server again is defined twice (first on line 2)"),
    ("duplicate-name",
     "virtual_servers:\n  - {name: a, address: 198.18.0.1, port: 80}\n"
     "  - {name: a, address: 198.18.0.2, port: 80}\n",
     "a, address: 198.18.0.2", 1, "name 'a' is already used on line 2"),
    ("duplicate-real",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    reals:\n      - {address: 198.18.1.1}\n"
     "      - {address: 198.18.1.2}\n      - {address: 198.18.1.1, port: 80}\n",
     "{address: 198.18.1.1, port", 1, "real server 198.18.1.1 port 80 is listed twice (first on line 5)"),
    ("duplicate-real-ipv6-spelling",
     "virtual_servers:\n  - address: '2001:db8::10'\n    port: 80\n    reals:\n"
     "      - {address: '2001:db8::1'}\n      - {address: '2001:0db8:0::1'}\n",
     "{address: '2001:0db8", 1, "real server 2001:db8::1 port 80 is listed twice (first on line 5)"),
    ("ipv6-real-of-ipv4-vs",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    reals:\n      - address: '2001:db8::1'\n",
     "'2001:db8::1'", 1, "IPv6 real server for an IPv4 virtual server: only tunnel forwarding"),
    ("ipv4-real-of-ipv6-vs-dr",
     "virtual_servers:\n  - address: '2001:db8::10'\n    port: 80\n    forwarding: dr\n    reals:\n"
     "      - address: 198.18.1.1\n",
     "198.18.1.1", 1, "IPv4 real server for an IPv6 virtual server"),
    ("tunnel-settings-on-a-nat-real",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    reals:\n      - address: 198.18.1.1\n"
     "        tunnel: {type: gre}\n",
     "tunnel:", 1, "`tunnel` settings need `forwarding: tunnel` (this real uses nat)"),
    ("tunnel-settings-on-a-dr-real",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    forwarding: dr\n    reals:\n"
     "      - {address: 198.18.1.1, tunnel: {type: ipip}}\n",
     "tunnel:", 1, "(this real uses dr)"),
    ("tunnel-settings-on-a-nat-vs",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    tunnel: {type: gre}\n",
     "tunnel:", 1, "`tunnel` settings need `forwarding: tunnel` on the virtual server"),
    ("gue-without-port-on-vs",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    forwarding: tunnel\n"
     "    tunnel: {type: gue}\n",
     "{type: gue}", 1, "a gue tunnel needs `port:`"),
    ("gue-without-port-on-real",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    reals:\n      - address: 198.18.1.1\n"
     "        forwarding: tunnel\n        tunnel:\n          type: gue\n          checksum: csum\n",
     "type: gue", 1, "a gue tunnel needs `port:`"),
    ("port-on-ipip",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    forwarding: tunnel\n"
     "    tunnel: {type: ipip, port: 6080}\n",
     "6080", 1, "`port` only applies to gue tunnels, not ipip"),
    ("port-on-default-ipip",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    reals:\n"
     "      - {address: 198.18.1.1, forwarding: tunnel, tunnel: {port: 6080}}\n",
     "6080", 1, "`port` only applies to gue tunnels, not ipip"),
    ("port-on-gre",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    forwarding: tunnel\n"
     "    tunnel: {type: gre, port: 6080}\n",
     "6080", 1, "`port` only applies to gue tunnels, not gre"),
    ("checksum-on-ipip",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    forwarding: tunnel\n"
     "    tunnel: {type: ipip, checksum: remcsum}\n",
     "remcsum", 1, "ipip tunnels carry no checksum"),
    ("flag-of-another-scheduler",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    scheduler: mh\n"
     "    scheduler_flags: [mh-port, sh-fallback]\n",
     "sh-fallback", 1, "sh-fallback is a flag of the sh scheduler, not of mh"),
    ("flag-of-default-scheduler",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    scheduler_flags:\n      - mh-port\n",
     "mh-port", 1, "mh-port is a flag of the mh scheduler, not of wlc"),
    ("netmask-on-ipv6",
     "virtual_servers:\n  - address: '2001:db8::10'\n    port: 80\n    persistence:\n"
     "      netmask: 255.255.255.0\n",
     "netmask", 1, "netmask is for IPv4 services; use `prefix:` for IPv6"),
    ("prefix-too-long-for-ipv4",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    persistence: {timeout: 1m, prefix: 33}\n",
     "33", 1, "prefix 33 is longer than an IPv4 address (32)"),
    ("netmask-and-prefix",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    persistence:\n      netmask: 255.255.0.0\n"
     "      prefix: 16\n",
     "prefix", 1, "give either netmask or prefix, not both"),
    ("port-0-without-persistence",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 0\n",
     "0\n", 1, "port 0 (all ports) needs `persistence:`"),
    ("one-packet-on-tcp",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    one_packet: true\n",
     "true", 1, "one_packet only applies to udp (or fwmark) services, not tcp"),
    ("one-packet-on-sctp",
     "virtual_servers:\n  - {address: 198.18.0.1, port: 80, protocol: sctp, one_packet: true}\n",
     "true", 1, "not sctp"),
    ("dr-real-other-port",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    forwarding: dr\n    reals:\n"
     "      - {address: 198.18.1.1, port: 8080}\n",
     "8080", 1, "dr forwarding keeps the destination port: the real's port must be the virtual port 80"),
    ("tunnel-real-other-port",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    reals:\n"
     "      - {address: 198.18.1.1, port: 81, forwarding: tunnel}\n",
     "81", 1, "tunnel forwarding keeps the destination port"),
    ("lower-above-upper",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    reals:\n"
     "      - {address: 198.18.1.1, upper_threshold: 10, lower_threshold: 20}\n",
     "20", 1, "lower_threshold 20 is above upper_threshold 10"),
    ("lower-without-upper",
     "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    reals:\n      - address: 198.18.1.1\n"
     "        lower_threshold: 5\n",
     "5\n", 1, "lower_threshold needs an upper_threshold"),
    ("unspecified-ipv4-vip", "virtual_servers:\n  - {address: 0.0.0.0, port: 80}\n", "0.0.0.0", 1,
     "0.0.0.0 cannot be a virtual address (unspecified or multicast)"),
    ("unspecified-ipv6-vip", "virtual_servers:\n  - {address: '::', port: 80}\n", "'::'", 1,
     ":: cannot be a virtual address"),
    ("multicast-ipv4-vip", "virtual_servers:\n  - {address: 224.0.0.18, port: 80}\n", "224.0.0.18", 1,
     "224.0.0.18 cannot be a virtual address"),
    ("multicast-ipv6-vip", "virtual_servers:\n  - {address: 'ff02::12', port: 80}\n", "'ff02::12'", 1,
     "ff02::12 cannot be a virtual address"),
    ("fwmark-with-address", "virtual_servers:\n  - fwmark: 1\n    address: 198.18.0.1\n", "address", 1,
     "a fwmark service has no address, port or protocol"),
    ("fwmark-with-protocol", "virtual_servers:\n  - {fwmark: 1, protocol: udp}\n", "protocol", 1,
     "a fwmark service has no address, port or protocol"),
    ("vs-without-port", "virtual_servers:\n  - name: web\n    address: 198.18.0.1\n", "name", 1,
     "'port' is required here"),
    ("family-without-fwmark", "virtual_servers:\n  - {address: 198.18.0.1, port: 80, family: ipv4}\n",
     "family", 1, "family only applies to fwmark services"),
    ("vrrp-unknown-key", "vrrp:\n  instance: {vrid: 51}\n", "instance", 1, "did you mean 'instances'?"),
    ("bgp-unknown-key", "bgp: {local_as: 1, router_id: 198.18.0.1, asn: 65000,\n"
     "      peers: [{address: 198.18.0.2, as: 2, local_address: 198.18.0.1}]}\n", "asn", 1,
     "unknown key 'asn'"),
    ("xdp-not-a-mapping", "xdp: [eth0]\n", "[eth0]", 1, "expected"),
    ("reserved-health-checks", "health_checks:\n  web: {type: http}\n", "web", 1, "this section is reserved"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "needle", "nth", "fragment"), [c[1:] for c in SEMANTIC_CASES],
                         ids=[c[0] for c in SEMANTIC_CASES])  # fmt: skip
def test_semantic_checks(text: str, needle: str, nth: int, fragment: str) -> None:
    assert_one_at(text, needle, fragment, nth)


def test_some_positions_by_hand() -> None:
    # The same checks as above with positions counted by hand, not by the helper.
    text = (
        "virtual_servers:\n"  # 1
        "  - address: 198.18.0.1\n"  # 2
        "    port: 80\n"  # 3
        "    forwarding: dr\n"  # 4
        "    reals:\n"  # 5
        "      - {address: 198.18.1.1, port: 8080}\n"  # 6: the port value starts at col 37
        "      - address: 198.18.1.2\n"  # 7
        "        lower_threshold: 5\n"  # 8: the value at col 26
        "  - address: 224.0.0.1\n"  # 9: the value at col 14
        "    port: 0\n"  # 10: the value at col 11
        "    persistence: {prefix: 40}\n"  # 11: 40 at col 27
    )
    got = [(p.line, p.col) for p in problems(text)]
    assert got == [(6, 37), (8, 26), (9, 14), (11, 27)]


def test_reserved_sections_may_be_empty() -> None:
    cfg = load_text("vrrp:\nbgp:\nxdp: ~\nhealth_checks: {}\n", F)
    assert cfg.virtual_servers == () and cfg.bgp is None


def test_reserved_sections_each_reported() -> None:
    text = "health_checks:\n  d: 1\n"
    got = problems(text)
    assert [(p.line, p.col) for p in got] == [at(text, "d: 1")]
    assert all("reserved" in p.message for p in got)


# ---------------------------------------------------------------- what the checks allow


def test_cross_family_real_allowed_with_tunnel() -> None:
    text = (
        "virtual_servers:\n"
        "  - address: 198.18.0.1\n    port: 80\n    reals:\n"
        "      - {address: '2001:db8::1', forwarding: tunnel}\n"
        "      - {address: '2001:db8::2', forwarding: tunnel, tunnel: {type: gue, port: 6080}}\n"
    )
    a, b = load_text(text, F).virtual_servers[0].reals
    assert (a.family, a.address, a.port, a.tunnel) == (AF6, "2001:db8::1", 80, Tunnel("ipip", 0, "none"))
    assert b.tunnel == Tunnel("gue", 6080, "none")


def test_vs_tunnel_defaults_and_real_overrides() -> None:
    text = (
        "virtual_servers:\n"
        "  - address: 198.18.0.1\n    port: 80\n    forwarding: tunnel\n"
        "    tunnel: {type: gre, checksum: csum}\n"
        "    reals:\n"
        "      - {address: 198.18.1.1}\n"
        "      - {address: 198.18.1.2, tunnel: {checksum: none}}\n"
        "      - {address: 198.18.1.3, tunnel: {type: gue, port: 5555}}\n"
        "      - {address: 198.18.1.4, forwarding: nat, port: 8080}\n"
    )
    reals = load_text(text, F).virtual_servers[0].reals
    assert [r.tunnel for r in reals] == [
        Tunnel("gre", 0, "csum"),
        Tunnel("gre", 0, "none"),
        Tunnel("gue", 5555, "csum"),
        None,
    ]
    assert [(r.forwarding, r.port) for r in reals] == [("tunnel", 80)] * 3 + [("nat", 8080)]


def test_ipip_checksum_none_is_fine() -> None:
    text = (
        "virtual_servers:\n  - {address: 198.18.0.1, port: 80, forwarding: tunnel, tunnel: {checksum: none}}"
    )
    assert load_text(text, F).virtual_servers[0].name == "tcp:198.18.0.1:80"


def test_port_0_with_persistence_is_fine() -> None:
    text = "virtual_servers:\n  - address: 198.18.0.1\n    port: 0\n    persistence: {timeout: 1h}\n"
    vs = load_text(text, F).virtual_servers[0]
    assert (vs.port, vs.persistence) == (0, Persistence(3600, 32))


def test_dr_real_with_the_same_port_and_nat_real_with_another() -> None:
    text = (
        "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    reals:\n"
        "      - {address: 198.18.1.1, port: 80, forwarding: dr}\n"
        "      - {address: 198.18.1.1, port: 8080}\n"  # same address, other port: not a duplicate
    )
    reals = load_text(text, F).virtual_servers[0].reals
    assert [(r.address, r.port, r.forwarding) for r in reals] == [
        ("198.18.1.1", 80, "dr"),
        ("198.18.1.1", 8080, "nat"),
    ]


def test_thresholds_and_weights() -> None:
    text = (
        "virtual_servers:\n  - address: 198.18.0.1\n    port: 80\n    weight: 7\n    reals:\n"
        "      - {address: 198.18.1.1, upper_threshold: 10, lower_threshold: 10}\n"
        "      - {address: 198.18.1.2, upper_threshold: 10, weight: 0}\n"
    )
    a, b = load_text(text, F).virtual_servers[0].reals
    assert (a.weight, a.upper_threshold, a.lower_threshold) == (7, 10, 10)
    assert (b.weight, b.upper_threshold, b.lower_threshold) == (0, 10, 0)


def test_ipv6_prefix_up_to_128_and_udp_one_packet() -> None:
    text = (
        "virtual_servers:\n"
        "  - {address: '2001:db8::10', port: 53, protocol: udp, one_packet: true,\n"
        "     persistence: {prefix: 128}}\n"
        "  - {fwmark: 9, family: ipv6, one_packet: true, scheduler: sh, scheduler_flags: [sh-port]}\n"
    )
    udp, mark = load_text(text, F).virtual_servers
    assert (udp.one_packet, udp.persistence) == (True, Persistence(300, 128))
    assert (mark.name, mark.family, mark.one_packet, mark.scheduler_flags) == (
        "fwmark:9:ipv6",
        AF6,
        True,
        ("sh-port",),
    )


def test_addresses_are_canonical() -> None:
    text = (
        "virtual_servers:\n  - {address: '2001:DB8:0::10', port: 80, reals: [{address: '2001:db8:0:0::1'}]}\n"
    )
    vs = load_text(text, F).virtual_servers[0]
    assert (vs.address, vs.name, vs.reals[0].address) == (
        "2001:db8::10",
        "tcp:[2001:db8::10]:80",
        "2001:db8::1",
    )


def test_netmask_to_prefix() -> None:
    text = "virtual_servers:\n  - {address: 198.18.0.1, port: 80, persistence: {netmask: 255.255.240.0}}\n"
    assert load_text(text, F).virtual_servers[0].persistence == Persistence(300, 20)


# ---------------------------------------------------------------- several mistakes at once

THREE_MISTAKES_SAME_VS = (
    "virtual_servers:\n"
    "  - name: a\n"
    "    address: 198.18.0.1\n"
    "    port: 80\n"
    "    one_packet: true\n"  # semantic, same VS (line 5)
    "    reals:\n"
    "      - {address: 198.18.1.1, weight: -1}\n"  # schema, in one real (line 7)
    "      - {address: 198.18.1.2}\n"
    "  - name: b\n"
    "    address: 198.18.0.2\n"
    "    port: 0\n"  # semantic, another VS (line 11)
    "    reals:\n"
    "      - {address: 198.18.1.3}\n"
)
THREE_MISTAKES_SIBLING = (
    "virtual_servers:\n"
    "  - name: a\n"
    "    address: 198.18.0.1\n"
    "    port: 80\n"
    "    forwarding: dr\n"
    "    reals:\n"
    "      - {address: 198.18.1.1, weight: lots}\n"  # schema, in one real
    "      - {address: 198.18.1.2, port: 8080}\n"  # semantic, its sibling
    "  - name: b\n"
    "    address: 198.18.0.2\n"
    "    port: 80\n"
    "    scheduler: rr\n"
    "    scheduler_flags: [mh-port]\n"  # semantic, another VS
)


def test_three_independent_mistakes_give_three_problems() -> None:
    text = THREE_MISTAKES_SAME_VS
    got = problems(text)
    assert [(p.line, p.col) for p in got] == [at(text, "true"), at(text, "-1"), at(text, "0\n", 2)]
    assert [(p.line, p.col) for p in got] == [(5, 17), (7, 39), (11, 11)]
    assert "one_packet only applies to udp" in got[0].message
    assert got[1].message == "-1 is below the minimum of 0"
    assert "port 0 (all ports) needs `persistence:`" in got[2].message


def test_a_bad_real_hides_neither_its_siblings_nor_other_servers() -> None:
    text = THREE_MISTAKES_SIBLING
    got = problems(text)
    assert [(p.line, p.col) for p in got] == [at(text, "lots"), at(text, "8080"), at(text, "mh-port")]
    assert "expected integer, got string 'lots'" in got[0].message
    assert "dr forwarding keeps the destination port" in got[1].message
    assert "mh-port is a flag of the mh scheduler, not of rr" in got[2].message


def test_a_schema_error_in_a_vs_hides_neither_its_other_mistakes_nor_gives_follow_ons() -> None:
    # scheduler is refused: one_packet on tcp is still a mistake of its own; the flags that
    # belong to no scheduler in particular are not judged against the default (wlc)
    text = "virtual_servers:\n  - {address: 198.18.0.1, port: 80, scheduler: foo, one_packet: true}\n"
    got = problems(text)
    assert [(p.line, p.col) for p in got] == [at(text, "foo"), at(text, "true")]
    text = (
        "virtual_servers:\n  - {address: 198.18.0.1, port: 80, scheduler: mhh, scheduler_flags: [mh-port]}\n"
    )
    assert_one_at(text, "mhh", "did you mean 'mh'?")


def test_a_bad_ipvs_section_does_not_hide_virtual_server_mistakes() -> None:
    text = "ipvs:\n  drain_timeout: 5 min\nvirtual_servers:\n  - address: 198.18.0.1\n    port: 0\n"
    got = problems(text)
    assert [(p.line, p.col) for p in got] == [(2, 18), (5, 11)]


def test_problems_are_sorted() -> None:
    text = (
        "virtual_servers:\n"
        "  - {address: 198.18.0.2, port: 0}\n"
        "  - {address: 198.18.0.1, port: 80, sheduler: rr}\n"
        "  - {address: 0.0.0.0, port: 80}\n"
    )
    got = problems(text)
    assert got == sorted(got)
    assert [p.line for p in got] == [2, 3, 4]


# ---------------------------------------------------------------- product bugs (xfail)


def test_integral_floats_become_ints() -> None:
    text = (
        "virtual_servers:\n"
        "  - {address: 198.18.0.1, port: 80, persistence: {prefix: 24.0}, forwarding: tunnel,\n"
        "     tunnel: {type: gue, port: 6080.0}, reals: [{address: 198.18.1.1}]}\n"
    )
    vs = load_text(text, F).virtual_servers[0]
    assert type(vs.persistence.prefix) is int  # type: ignore[union-attr]
    assert type(vs.reals[0].tunnel.port) is int  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        'ipvs:\n  drain_timeout: "2s\\n"\n',
        "ipvs:\n  drain_timeout: |\n    2s\n",
        'ipvs:\n  timeouts: {tcp: "2s\\n"}\n',
        'virtual_servers:\n  - {address: 198.18.0.1, port: 80, persistence: {timeout: "2s\\n"}}\n',
    ],
    ids=["drain-quoted", "drain-block-scalar", "tcp-timeout", "persistence-timeout"],
)
def test_duration_with_a_trailing_newline_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        load_text(text, F)


def test_name_with_a_trailing_newline_is_rejected() -> None:
    assert problems('virtual_servers:\n  - {name: "web\\n", address: 198.18.0.1, port: 80}\n')


@pytest.mark.parametrize(
    "text",
    [
        "virtual_servers:\n  - {address: 'fe80::1%eth0', port: 80}\n",
        "virtual_servers:\n  - {address: '2001:db8::1', port: 80, reals: [{address: 'fe80::2%eth0'}]}\n",
    ],
    ids=["vip", "real"],
)
def test_scoped_ipv6_address_is_rejected(text: str) -> None:
    assert problems(text)


def test_hostmask_is_not_a_netmask() -> None:
    assert problems(
        "virtual_servers:\n  - {address: 198.18.0.1, port: 80, persistence: {netmask: 0.0.0.255}}\n"
    )
