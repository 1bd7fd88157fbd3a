"""prometheus_client is optional (the "metrics" extra): without it the daemon starts
with --metrics off, and asking for metrics is a one-line error naming the package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = "raise ImportError('No module named prometheus_client (blocked by the test)')\n"


def python(tmp_path: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    blocker = tmp_path / "blocked" / "prometheus_client"
    blocker.mkdir(parents=True, exist_ok=True)
    (blocker / "__init__.py").write_text(BLOCK)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(tmp_path / "blocked"), str(ROOT))))
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )


def test_daemon_without_prometheus_client(tmp_path: Path) -> None:
    code = (
        "from ipvsmgr.runtime import Daemon\n"
        "import sys\n"
        "d = Daemon(sys.argv[1], sys.argv[2], metrics=None)\n"
        "assert d.metrics is None\n"
        "print('ok')\n"
    )
    r = python(tmp_path, code, str(ROOT / "etc/examples/vrrp.yaml"), str(tmp_path / "state"))
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr


def test_asking_for_metrics_without_it_is_one_line(tmp_path: Path) -> None:
    code = "import sys; from ipvsmgr.cli import main; sys.argv[0] = 'ipvsmgr'; main()"
    r = python(
        tmp_path, code, "run", "-c", str(ROOT / "etc/examples/vrrp.yaml"), "--metrics", "127.0.0.1:0",
        "--state-dir", str(tmp_path / "state"), "--socket", str(tmp_path / "ctl.sock"),
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "python3-prometheus-client" in r.stderr and "--metrics off" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
