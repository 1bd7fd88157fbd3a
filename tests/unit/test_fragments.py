"""conf.d/*.yaml: virtual servers in files of their own, merged into the main file, each problem
at its own file, line and column (ipvsmgr/config/fragments.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipvsmgr.config import ConfigError, load

MAIN = """\
ipvs:
  drain_timeout: 1m
virtual_servers:
  - {name: web, address: 198.18.0.10, port: 80, reals: [{address: 198.18.1.1}]}
"""
DNS = """\
# the DNS team's file
virtual_servers:
  - name: dns
    address: 198.18.0.53
    port: 53
    protocol: udp
    reals: [{address: 198.18.1.53}]
"""
API = """\
virtual_servers:
  - {name: api, address: 198.18.0.11, port: 443, reals: [{address: 198.18.1.2}]}
"""


def tree(tmp_path: Path, **files: str) -> str:
    main = tmp_path / "ipvsmgr.yaml"
    main.write_text(MAIN)
    (tmp_path / "conf.d").mkdir()
    for name, text in files.items():
        (tmp_path / "conf.d" / f"{name}.yaml").write_text(text)
    return str(main)


def problems(path: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(path)
    return [str(p) for p in e.value.problems]


def test_fragments_are_appended_in_name_order(tmp_path: Path) -> None:
    main = tree(tmp_path, b_dns=DNS, a_api=API, empty="# nothing yet\n")
    (tmp_path / "conf.d" / "notes.txt").write_text("not yaml: ignored")
    cfg = load(main)
    assert [vs.name for vs in cfg.virtual_servers] == ["web", "api", "dns"]
    assert cfg.drain_timeout == 60.0
    assert [vs.name for vs in load(str(tmp_path / "conf.d" / "b_dns.yaml")).virtual_servers] == ["dns"]


def test_a_problem_in_a_fragment_is_at_its_own_place(tmp_path: Path) -> None:
    main = tree(tmp_path, a_api=API, b_dns=DNS.replace("port: 53", "port: 99999"))
    assert problems(main) == [f"{tmp_path}/conf.d/b_dns.yaml:5:11: 99999 is above the maximum of 65535"]


def test_a_name_twice_across_files_is_refused_where_it_repeats(tmp_path: Path) -> None:
    main = tree(tmp_path, a_api=API.replace("name: api", "name: web"))
    got = problems(main)
    assert len(got) == 1 and got[0].startswith(f"{tmp_path}/conf.d/a_api.yaml:2:"), got
    assert "web" in got[0]


def test_a_fragment_holds_only_virtual_servers(tmp_path: Path) -> None:
    main = tree(tmp_path, a_api=API + "vrrp:\n  instances: []\n")
    assert problems(main) == [
        f"{tmp_path}/conf.d/a_api.yaml:3:1: a conf.d file holds only virtual_servers, not 'vrrp' "
        "(that belongs in the main file)"
    ]


def test_syntax_errors_of_every_fragment_at_once(tmp_path: Path) -> None:
    main = tree(tmp_path, a_api="virtual_servers: [\n", b_dns="virtual_servers:\n  - {name: x\n")
    got = problems(main)
    assert [g.split(":")[0].rsplit("/", 1)[1] for g in got] == ["a_api.yaml", "b_dns.yaml"], got
    assert all("YAML syntax error" in g for g in got)
