"""Guard-only mode on this host's kernel, which has no IPVS: a file with only
an `xdp:` section (its services in xdp.protect) runs the XDP guard and
nothing else; a file with virtual servers is refused before anything is
attached (before, the guard was attached, then the start failed on IPVS and
left it attached with nothing managing it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpf_offload import guard
from ipvsmgr.control import call
from tests.host.test_no_ipvs import ipvs_family_exists
from tests.netns.lab import SERVER4, Lab, have_root, sh
from tests.netns.xdpkit import build_object

pytestmark = pytest.mark.skipif(not have_root(), reason="XDP needs root")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pin(tmp_path: Path) -> Iterator[str]:
    path = f"/sys/fs/bpf/ipvsmgr-test-{tmp_path.name[-20:]}"
    yield path
    guard.unpin(path)


def attached(lab: Lab) -> bool:
    return "xdp" in json.loads(sh("ip", "-j", "-n", lab.server, "link", "show", "veth0"))[0]


def daemon(lab: Lab, tmp_path: Path, text: str) -> subprocess.Popen[bytes]:
    cfg = tmp_path / "lb.yaml"
    cfg.write_text(text)
    argv = [sys.executable, "-m", "ipvsmgr", "run", "-c", str(cfg), "--state-dir", str(tmp_path / "state"),
            "--socket", str(tmp_path / "ctl.sock"), "--metrics", "off"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return lab.spawn(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_guard_only_runs_without_ipvs_and_a_virtual_server_file_attaches_nothing(
    lab: Lab, tmp_path: Path, pin: str
) -> None:
    if ipvs_family_exists():
        pytest.skip("this kernel has IPVS")
    build_object()
    xdp = f"xdp:\n  interfaces: [veth0]\n  mode: generic\n  pin_path: {pin}\n"

    # A file with a virtual server on a kernel without IPVS: refused, nothing attached or pinned.
    vs = f"virtual_servers:\n  - {{address: {SERVER4}, port: 80, reals: [{{address: 198.18.7.1}}]}}\n"
    p = daemon(lab, tmp_path, vs + xdp)
    out = p.communicate(timeout=60)[0].decode()
    assert p.returncode == 1 and "IPVS is not available in this kernel" in out, out
    assert "Traceback" not in out
    assert not attached(lab) and not os.path.exists(pin)

    # Guard-only: runs, attaches, guards the protected service, answers `xdp status`.
    p = daemon(lab, tmp_path, xdp + f"  protect:\n    - {{address: {SERVER4}, port: 443}}\n")
    sock = str(tmp_path / "ctl.sock")
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            assert p.poll() is None, p.communicate()[0].decode()
            assert time.monotonic() < deadline, "no control socket"
            time.sleep(0.1)
        st = call(sock, "xdp_status")
        assert st["state"] == "active", st
        assert [v["address"] for v in st["vips"]] == [SERVER4]
        assert attached(lab)
        status = call(sock, "status")
        assert status["virtual_servers"] == [] and status["xdp"]["state"] == "active"
    finally:
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=60)[0].decode()
    assert p.returncode == 0, out
    assert attached(lab)  # a stop lets go; the program stays for the next start to adopt
    sh("ip", "-n", lab.server, "link", "set", "veth0", "xdpgeneric", "off")
