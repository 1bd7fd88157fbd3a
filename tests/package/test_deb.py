"""The Debian package: built from this tree, lintian clean, installed with apt on
clean Debian 12 and 13 roots where it runs on Debian's own Python packages;
the systemd unit verifies; purge leaves nothing of ours behind."""

from __future__ import annotations

import re
from pathlib import Path

from tests.package.debroot import ROOT, chroot, sh

VERSION = re.findall(r'__version__ = "(.+)"', (ROOT / "ipvsmgr" / "__init__.py").read_text())[0]
EXAMPLES = ("quickstart", "all-methods", "health", "vrrp", "bgp-ecmp", "xdp-guard")


def field(info: str, name: str) -> str:
    found = re.findall(rf"^ {name}: (.*)$", info, re.M)
    assert found, (name, info)
    return str(found[0])


def test_lintian_has_no_errors_or_warnings(deb: Path) -> None:
    r = sh("lintian", "--fail-on", "error,warning", "--display-info", str(deb), check=False)
    tags = [line for line in r.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert r.returncode == 0 and tags == [], r.stdout
    # the one override is the BPF object in an arch-all package, and it is used
    shown = sh("lintian", "--show-overrides", str(deb), check=False).stdout
    tag = "arch-independent-package-contains-binary-or-object [usr/lib/ipvsmgr/xdp_guard.o]"
    assert f"O: ipvsmgr: {tag}" in shown, shown


def test_contents_and_control(deb: Path) -> None:
    files = {line.split()[-1] for line in sh("dpkg-deb", "-c", str(deb)).stdout.splitlines()}
    for path in (
        "./usr/bin/ipvsmgr", "./usr/lib/ipvsmgr/xdp_guard.o", "./usr/share/ipvsmgr/ipvsmgr.schema.json",
        "./lib/systemd/system/ipvsmgr.service", "./usr/share/man/man8/ipvsmgr.8.gz",
        "./usr/share/man/man5/ipvsmgr.yaml.5.gz", "./usr/share/bash-completion/completions/ipvsmgr",
        "./usr/share/zsh/vendor-completions/_ipvsmgr", "./etc/ipvsmgr/ipvsmgr.yaml",
        "./usr/lib/python3/dist-packages/bpf_offload/guard.py",
        "./usr/lib/python3/dist-packages/ipvsmgr/config/ipvsmgr.schema.json",
        "./usr/share/ipvsmgr/ipvsmgr-dashboard.json", "./usr/share/ipvsmgr/ipvsmgr-alerts.yml",
        "./usr/share/ipvsmgr/ipvsmgr-alerts.test.yml",
    ):  # fmt: skip
        assert path in files, path
    info = sh("dpkg-deb", "-I", str(deb)).stdout
    depends = field(info, "Depends")
    floors = ("python3-yaml (>= 6.0)", "python3-jsonschema (>= 4.10.3)", "python3-typer (>= 0.7.0)",
              "libbpf1 (>= 1:1.1)", "iproute2")  # fmt: skip
    for floor in floors:
        assert floor in depends, depends
    assert "prometheus" not in depends  # the daemon writes the format itself (ipvsmgr/exposition.py)
    assert "exabgp" in field(info, "Recommends")
    assert field(info, "Architecture") == "all"
    control = sh("sh", "-c", f"dpkg-deb --ctrl-tarfile {deb} | tar -xO ./conffiles ./postinst").stdout
    assert "/etc/ipvsmgr/ipvsmgr.yaml\n" in control  # a conffile
    # enabled for boot, not started by the installation
    assert "deb-systemd-helper" in control and "deb-systemd-invoke start" not in control


def test_installed_runs_on_debians_own_python(root: Path) -> None:
    assert chroot(root, "ipvsmgr", "--version").stdout == f"ipvsmgr {VERSION}\n"
    r = chroot(root, "ipvsmgr", "check", "/etc/ipvsmgr/ipvsmgr.yaml")
    assert r.stdout == "/etc/ipvsmgr/ipvsmgr.yaml: OK (0 virtual servers, 0 real servers)\n"
    # A dns check needs python3-dnspython, a Recommends: without it, a clear
    # problem at the check's line (not a traceback); with it, OK.
    chroot(root, "apt-get", "remove", "-y", "-q", "python3-dnspython", check=False)
    health = "/usr/share/doc/ipvsmgr/examples/health.yaml"
    r = chroot(root, "ipvsmgr", "check", health, check=False)
    assert r.returncode == 1 and "needs dnspython (Debian package python3-dnspython)" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    chroot(root, "apt-get", "install", "-y", "-q", "--no-install-recommends", "python3-dnspython")
    for example in EXAMPLES:
        path = f"/usr/share/doc/ipvsmgr/examples/{example}.yaml"
        assert chroot(root, "ipvsmgr", "check", path).stdout.startswith(f"{path}: OK ("), example
    (root / "tmp" / "bad.yaml").write_text(
        "virtual_servers:\n  - {address: 198.18.0.1, port: 80,\n"
        "     reals: [{address: 198.18.1.1, weight: -1}]}\n"
    )
    r = chroot(root, "ipvsmgr", "check", "/tmp/bad.yaml", check=False)
    assert r.returncode == 1 and r.stderr.startswith("/tmp/bad.yaml:3:"), r.stderr
    # the modules come from Debian's packages, not from anywhere else
    probe = "import ipvsmgr, yaml; print(ipvsmgr.__file__, yaml.__file__)"
    assert chroot(root, "python3", "-c", probe).stdout.split() == [
        "/usr/lib/python3/dist-packages/ipvsmgr/__init__.py",
        "/usr/lib/python3/dist-packages/yaml/__init__.py",
    ]  # fmt: skip
    # libbpf1 loads through ctypes and the packaged object is where the loader looks
    probe = "from bpf_offload import guard, libbpf; libbpf.libbpf(); print(guard.find_object())"
    assert chroot(root, "python3", "-c", probe).stdout.strip() == "/usr/lib/ipvsmgr/xdp_guard.o"
    schema = (ROOT / "ipvsmgr" / "config" / "ipvsmgr.schema.json").read_text()
    assert chroot(root, "ipvsmgr", "schema").stdout == schema
    assert (root / "usr/share/ipvsmgr/ipvsmgr.schema.json").read_text() == schema


def test_the_unit_verifies_and_waits_for_a_configuration(root: Path) -> None:
    r = chroot(root, "systemd-analyze", "verify", "/lib/systemd/system/ipvsmgr.service", check=False)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr
    unit = (root / "lib" / "systemd" / "system" / "ipvsmgr.service").read_text()
    [condition] = re.findall(r"^ExecCondition=(.*)$", unit, re.M)
    argv = ["/bin/grep", "-q", "^[[:space:]]*[^#[:space:]]", "/etc/ipvsmgr/ipvsmgr.yaml"]
    assert condition == f'{argv[0]} {argv[1]} "{argv[2]}" {argv[3]}'
    # as shipped (all comments) the unit is skipped; with a configuration it starts
    assert chroot(root, *argv, check=False).returncode == 1
    argv[3] = "/usr/share/doc/ipvsmgr/examples/quickstart.yaml"
    assert chroot(root, *argv, check=False).returncode == 0
    assert (root / "etc/systemd/system/multi-user.target.wants/ipvsmgr.service").is_symlink()


def test_purge_leaves_nothing_of_ours(root: Path) -> None:
    state = root / "var" / "lib" / "ipvsmgr"
    state.mkdir(parents=True, exist_ok=True)
    (state / "owned.json").write_text("{}")
    chroot(root, "apt-get", "purge", "-y", "-q", "ipvsmgr")
    gone = ("etc/ipvsmgr", "var/lib/ipvsmgr", "usr/lib/ipvsmgr", "usr/share/ipvsmgr", "usr/bin/ipvsmgr",
            "lib/systemd/system/ipvsmgr.service",
            "etc/systemd/system/multi-user.target.wants/ipvsmgr.service",
            "usr/lib/python3/dist-packages/ipvsmgr")  # fmt: skip
    for path in gone:
        assert not (root / path).exists(), path
    assert chroot(root, "dpkg-query", "-W", "ipvsmgr", check=False).returncode == 1
    # put it back for whatever runs next on this root
    chroot(root, "apt-get", "install", "-y", "-q", "--no-install-recommends", "/tmp/ipvsmgr.deb")
