"""The installed Debian package at work in the VM: `ipvsmgr apply` from a clean
Debian 12 root (Debian's python3, typer 0.7) programs IPVS,
read back with ipvsadm outside that root."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel.conftest import IN_VM
from tests.kernel.helpers import ipvsadm, sh
from tests.package.debroot import ROOTS

ROOTFS = ROOTS / "bookworm"  # made on the host before the VM boots (conftest._prepare_host)


@pytest.fixture
def debian12() -> Iterator[Path]:
    if not IN_VM:  # the body runs inside the VM (tests/kernel/conftest.py)
        yield ROOTFS
        return
    if not (ROOTFS / "usr" / "bin" / "ipvsmgr").exists():
        pytest.skip("no Debian 12 root with the package (made on the host by tests/package/debroot.py)")
    mounts = []
    try:
        for fs in ("proc", "sys", "dev"):
            sh("mount", "--bind", f"/{fs}", str(ROOTFS / fs))
            mounts.append(ROOTFS / fs)
        # the VM sees the host's files read-only: the root's /tmp and /run (where
        # systemd-analyze makes /run/systemd) must be its own
        for d in ("tmp", "run"):
            sh("mount", "-t", "tmpfs", "tmpfs", str(ROOTFS / d))
            mounts.append(ROOTFS / d)
        ipvsadm("-C")
        yield ROOTFS
    finally:
        ipvsadm("-C")
        for m in reversed(mounts):
            with contextlib.suppress(AssertionError):
                sh("umount", "-l", str(m))


def test_installed_package_applies_with_debian_12s_python(debian12: Path) -> None:
    run = ("chroot", str(debian12))
    assert sh(*run, "dpkg-query", "-W", "-f", "${Version}", "python3-typer").startswith("0.7.")
    example = "/usr/share/doc/ipvsmgr/examples/quickstart.yaml"
    out = sh(*run, "ipvsmgr", "apply", "-c", example, "--state-dir", "/tmp/ipvsmgr-state")
    assert "Applied" in out, out
    rules = sorted(line for line in ipvsadm("-Sn").splitlines() if line.strip())
    assert rules == sorted(
        [
            "-A -t 198.18.0.10:80 -s wrr",
            "-a -t 198.18.0.10:80 -r 198.18.1.11:8080 -m -w 10",
            "-a -t 198.18.0.10:80 -r 198.18.1.12:8080 -m -w 10",
            "-A -t 198.18.0.11:443 -s mh -b mh-fallback,mh-port",
            "-a -t 198.18.0.11:443 -r 198.18.1.21:443 -g -w 1",
            "-a -t 198.18.0.11:443 -r 198.18.1.22:443 -g -w 1",
            "-A -t 198.18.0.12:443 -s lc -p 600 -M 255.255.255.0",
            "-a -t 198.18.0.12:443 -r 198.18.1.31:8443 -m -w 1",
        ]
    ), rules
    # a second apply changes nothing (the stdlib IPVS client agrees with the kernel)
    again = sh(*run, "ipvsmgr", "plan", "-c", example, "--state-dir", "/tmp/ipvsmgr-state", check=False)
    assert "No changes" in again, again
    # the unit as installed passes systemd's own checks here too
    verify = subprocess.run(["chroot", str(debian12), "systemd-analyze", "verify", "ipvsmgr.service"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    # the stdlib rtnetlink client (vrrp/rtnetlink.py) reads this host's addresses for a real-server check
    check = sh(*run, "ipvsmgr", "realserver", "check", "--vip", "198.18.0.10", check=False)
    assert "198.18.0.10/32 on lo" in check, check
