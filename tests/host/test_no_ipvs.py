"""On a kernel without IPVS (this host's), the CLI says so and exits 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def ipvs_family_exists() -> bool:
    from ipvsmgr.ipvs.client import IPVSClient, IPVSUnavailable

    try:
        IPVSClient(load_module=False).close()
    except IPVSUnavailable:
        return False
    return True


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (it may try modprobe)")
@pytest.mark.parametrize("verb", ["plan", "apply"])
def test_clear_error_without_ipvs(verb: str, tmp_path: Path) -> None:
    if ipvs_family_exists():
        pytest.skip("this kernel has IPVS")
    proc = subprocess.run(
        [sys.executable, "-m", "ipvsmgr", verb, "-c", str(ROOT / "etc/examples/all-methods.yaml")],
        capture_output=True, text=True, check=False,
        env=dict(os.environ, PYTHONPATH=str(ROOT), IPVSMGR_STATE_DIR=str(tmp_path)),
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith("ipvsmgr: IPVS is not available in this kernel: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "state.json").exists()  # nothing recorded either
