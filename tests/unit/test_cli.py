"""The typer CLI, without the kernel: --version, check, schema and the help texts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ipvsmgr import __version__
from ipvsmgr.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [ROOT / "etc" / "ipvsmgr" / "ipvsmgr.yaml", *sorted((ROOT / "etc" / "examples").glob("*.yaml"))]
PACKAGE_SCHEMA = ROOT / "ipvsmgr" / "config" / "ipvsmgr.schema.json"
ETC_SCHEMA = ROOT / "etc" / "ipvsmgr" / "ipvsmgr.schema.json"
COMMANDS = [
    "check",
    "schema",
    "plan",
    "apply",
    "run",
    "status",
    "show",
    "top",
    "reload",
    "drain",
    "undrain",
    "disable",
    "enable",
    "drain-node",
    "undrain-node",
    "lab",
]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(mix_stderr=False)


def invoke(runner: CliRunner, *args: str, env: dict[str, str | None] | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), prog_name="ipvsmgr", env={"IPVSMGR_CONFIG": None, **(env or {})})


def test_version(runner: CliRunner) -> None:
    r = invoke(runner, "--version")
    assert r.exit_code == 0
    assert r.stdout == f"ipvsmgr {__version__}\n"


def test_no_arguments_shows_help(runner: CliRunner) -> None:
    r = invoke(runner)
    assert "Usage: ipvsmgr" in r.stdout
    for cmd in COMMANDS:
        assert cmd in r.stdout


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_check_examples(runner: CliRunner, path: Path) -> None:  # counts in the singular when 1
    r = invoke(runner, "check", str(path))
    assert r.exit_code == 0, r.stderr
    assert re.fullmatch(
        rf"{re.escape(str(path))}: OK \(\d+ virtual servers?, \d+ real servers?(, \d+ VRRP instances?)?"
        r"(, \d+ BGP peers?, \d+ BGP prefix(es)?)?(, XDP guard on [\w, ]+)?\)\n",
        r.stdout,
    )
    assert r.stderr == ""


def test_check_counts(runner: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "lb.yaml"
    f.write_text(
        "virtual_servers:\n"
        "  - {address: 198.18.0.1, port: 80, reals: [{address: 198.18.1.1}, {address: 198.18.1.2}]}\n"
        "  - {fwmark: 3, reals: [{address: 198.18.1.3}]}\n"
    )
    r = invoke(runner, "check", str(f))
    assert (r.exit_code, r.stdout) == (0, f"{f}: OK (2 virtual servers, 3 real servers)\n")


def test_check_counts_one_of_each_in_the_singular(runner: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "lb.yaml"
    f.write_text(
        "virtual_servers:\n  - {address: 198.18.0.1, port: 80, reals: [{address: 198.18.1.1}]}\n"
        "vrrp:\n  instances:\n"
        "    - {name: vi_1, interface: eth0, vrid: 51, virtual_addresses: [198.18.0.1/24]}\n"
    )
    r = invoke(runner, "check", str(f))
    assert (r.exit_code, r.stdout) == (0, f"{f}: OK (1 virtual server, 1 real server, 1 VRRP instance)\n")


def test_check_with_config_option_and_environment(runner: CliRunner) -> None:
    path = str(EXAMPLES[0])
    r = invoke(runner, "check", "-c", path)
    assert r.exit_code == 0 and r.stdout.startswith(f"{path}: OK")
    r = invoke(runner, "check", "--config", path)
    assert r.exit_code == 0 and r.stdout.startswith(f"{path}: OK")
    r = invoke(runner, "check", env={"IPVSMGR_CONFIG": path})
    assert r.exit_code == 0 and r.stdout.startswith(f"{path}: OK")


BAD = (
    "virtual_servers:\n"
    "  - name: web\n"
    "    address: 198.18.0.10\n"
    "    port: 80\n"
    "    sheduler: rr\n"  # 5:5 unknown key
    "    reals:\n"
    "      - {address: 198.18.1.1, weight: -1}\n"  # 7:39 below minimum
    "  - {address: 198.18.0.11, port: 0}\n"  # 8:34 port 0 without persistence
)


def test_check_bad_file(runner: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(BAD)
    r = invoke(runner, "check", str(f))
    assert r.exit_code == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[:3] == [
        f"{f}:5:5: unknown key 'sheduler'; did you mean 'scheduler'?",
        f"{f}:7:39: -1 is below the minimum of 0",
        f"{f}:8:34: port 0 (all ports) needs `persistence:`, as in ipvsadm -p",
    ]
    assert lines[3] == f"3 problems in {f}; nothing was applied."
    assert len(lines) == 4
    for line in lines[:3]:
        assert re.match(rf"{re.escape(str(f))}:\d+:\d+: ", line)


def test_check_one_problem_is_singular(runner: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("virtual_servers:\n  - address: 198.18.0.1\n    port: 80: 81\n")
    r = invoke(runner, "check", str(f))
    assert r.exit_code == 1
    first, last = r.stderr.splitlines()
    assert first.startswith(f"{f}:3:13: YAML syntax error")
    assert last == f"1 problem in {f}; nothing was applied."


def test_check_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "missing.yaml"
    r = invoke(runner, "check", str(f))
    assert r.exit_code == 1
    assert r.stderr.startswith(f"{f}:1:1: cannot read the configuration")


def test_schema_prints_the_packaged_schema(runner: CliRunner) -> None:
    r = invoke(runner, "schema")
    assert r.exit_code == 0
    printed = json.loads(r.stdout)
    assert printed == json.loads(PACKAGE_SCHEMA.read_text())
    assert r.stdout == PACKAGE_SCHEMA.read_text()
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_etc_schema_is_the_packaged_schema() -> None:
    assert ETC_SCHEMA.read_text() == PACKAGE_SCHEMA.read_text()


@pytest.mark.parametrize("cmd", [*COMMANDS, "vrrp release", "vrrp reclaim"])
def test_help_of_every_command_has_an_example(runner: CliRunner, cmd: str) -> None:
    for flag in ("--help", "-h"):
        r = invoke(runner, *cmd.split(), flag)
        assert r.exit_code == 0
        assert f"Usage: ipvsmgr {cmd}" in r.stdout
        assert "Example" in r.stdout
        assert f"ipvsmgr {cmd}" in r.stdout.split("Example", 1)[1]


def test_every_command_is_covered() -> None:
    import typer.main

    names = {c.name or c.callback.__name__ for c in app.registered_commands}  # type: ignore[union-attr]
    assert names == set(COMMANDS)
    assert typer.main.get_command(app).name  # the app builds a click group


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("30", "write 30s for seconds"),
        ("10S", "not a duration"),
        ("bogus", "not a duration"),
        ("0s", "longer than 0"),
        ("-1s", "not a duration"),
    ],
)
def test_run_refuses_a_bad_resync_in_one_line(runner: CliRunner, value: str, words: str) -> None:
    r = invoke(runner, "run", "-c", str(EXAMPLES[1]), "--resync", value)
    assert r.exit_code == 64, r.stdout
    assert words in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_usage_errors_do_not_read_as_changes_pending(runner: CliRunner) -> None:
    # plan's 2 means "changes pending" to a CI job; a usage error is 64 (EX_USAGE).
    assert invoke(runner, "run", "--log-level", "bogus").exit_code == 64
    assert invoke(runner, "plan", "--no-such-option").exit_code == 64
    r = invoke(runner, "check", str(EXAMPLES[1]), "-c", str(EXAMPLES[2]))
    assert r.exit_code == 64 and "two configurations" in r.stderr


def test_check_json(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("virtual_servers:\n  - {name: w, address: 198.18.0.1, port: 0443}\n")
    r = invoke(runner, "check", "--json", str(bad))
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    assert out["valid"] is False and (out["problems"][0]["line"], out["problems"][0]["column"]) == (2, 42)
    r = invoke(runner, "check", "--json", str(EXAMPLES[1]))
    assert r.exit_code == 0 and json.loads(r.stdout) == {
        "file": str(EXAMPLES[1]),
        "valid": True,
        "problems": [],
        "warnings": [],
    }


def test_help_shows_each_example_on_its_own_line(runner: CliRunner) -> None:
    r = invoke(runner, "status", "--help")
    lines = [line.strip() for line in r.stdout.splitlines()]
    assert "ipvsmgr status" in lines
    assert any(line.startswith("ipvsmgr status --json | jq") for line in lines), r.stdout


def test_xdp_detach_of_an_unknown_interface_is_an_error(runner: CliRunner) -> None:
    r = invoke(runner, "xdp", "detach", "nosuch0")
    assert r.exit_code == 1 and "no interface named nosuch0" in r.stderr


def test_enum_options_are_choices(runner: CliRunner) -> None:
    r = invoke(runner, "realserver", "check", "--help")
    assert "[dr|tunnel]" in r.stdout and "[ipip|gre|gue]" in r.stdout and "[default: dr]" in r.stdout
    r = invoke(runner, "realserver", "check", "--vip", "198.18.0.1", "--forwarding", "nat")
    assert r.exit_code == 64 and "'nat' is not one of 'dr', 'tunnel'" in r.stderr


def test_check_prints_warnings_and_stays_valid(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(
        "virtual_servers:\n"
        "  - {name: web, address: 198.18.0.10, port: 80, reals: [{address: 198.18.1.1}]}\n"
        "vrrp:\n  instances:\n"
        "    - {name: v, interface: eth0, vrid: 1, priority: 100, virtual_addresses: [198.18.0.99/24]}\n"
    )
    r = invoke(runner, "check", str(path))
    assert r.exit_code == 0 and "OK" in r.stdout
    assert ": warning: " in r.stderr and "198.18.0.10" in r.stderr, r.stderr
    out = json.loads(invoke(runner, "check", "--json", str(path)).stdout)
    assert out["valid"] is True and len(out["warnings"]) == 1
