"""The .deb built from this tree, and clean Debian roots (debootstrap) it is installed in.

Roots live in build/roots/<suite> and are reused across runs (the package is
reinstalled every time); a fresh CI machine makes them in about 30 s each
from Debian's package registry.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOTS = ROOT / "build" / "roots"
# What the tests use inside a root next to the package: systemd (systemd-analyze, and
# PID 1 of the container the unit runs in), man (the unit's Documentation= check),
# kill (ExecReload), and ExaBGP, the package's Recommends that `bgp:` runs.
EXTRAS = ("systemd", "man-db", "procps", "exabgp")


def tools_missing() -> str | None:
    for tool in ("dpkg-buildpackage", "lintian", "debootstrap", "chroot"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} is not installed (scripts/setup.sh installs it)"
    if os.geteuid() != 0:
        return "debootstrap and chroot need root"
    return None


def sh(*argv: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if check and p.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        )
    return p


@functools.cache
def deb() -> Path:
    """`make deb` (Debian's own Python, no pyenv on PATH): the package file."""
    sh("make", "-s", "-C", str(ROOT), "deb")
    [path] = (ROOT / "build" / "deb").glob("ipvsmgr_*_all.deb")
    return path


def mirror() -> str:
    """The Debian mirror this machine's apt uses (the package registry CI can reach)."""
    for f in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        try:
            text = f.read_text()
        except OSError:
            continue
        m = re.search(r"(?:URIs:|deb)\s+(https?://\S+/debian)\b(?!-security)", text)
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


def chroot(root: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    return sh("chroot", str(root), *argv, check=check, env=env)


def make_root(suite: str) -> Path:
    """A minimal Debian `suite` with the package (and EXTRAS) installed from its own archive."""
    root = ROOTS / suite
    if not (root / "etc" / "os-release").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.parent.mkdir(parents=True, exist_ok=True)
        sh("debootstrap", "--variant=minbase", suite, str(root), mirror())
        chroot(root, "apt-get", "update", "-q")
    # services must not start inside a root: no init runs there anyway
    (root / "usr" / "sbin" / "policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
    (root / "usr" / "sbin" / "policy-rc.d").chmod(0o755)
    shutil.copy(deb(), root / "tmp" / "ipvsmgr.deb")
    chroot(root, "apt-get", "install", "-y", "-q", "--no-install-recommends", "--reinstall",
           "/tmp/ipvsmgr.deb", *EXTRAS)  # fmt: skip
    chroot(root, "mandb", "-q", check=False)
    return root
