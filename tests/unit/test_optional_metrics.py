"""Metrics need no client library: the daemon writes Prometheus's text format
itself (ipvsmgr/exposition.py), so `ipvsmgr run --metrics` works where
prometheus_client is not installed (it is blocked here), and the metrics
module does not import it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = "raise ImportError('No module named prometheus_client (blocked by the test)')\n"


def env(tmp_path: Path) -> dict[str, str]:
    blocker = tmp_path / "blocked" / "prometheus_client"
    blocker.mkdir(parents=True, exist_ok=True)
    (blocker / "__init__.py").write_text(BLOCK)
    return dict(os.environ, PYTHONPATH=os.pathsep.join((str(tmp_path / "blocked"), str(ROOT))))


def test_metrics_module_imports_no_client_library(tmp_path: Path) -> None:
    code = "import sys, ipvsmgr.metrics; assert 'prometheus_client' not in sys.modules; print('ok')"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env(tmp_path), check=False
    )
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr


def test_daemon_serves_metrics_without_prometheus_client(tmp_path: Path) -> None:
    cfg = tmp_path / "lb.yaml"
    cfg.write_text("ipvs:\n  max_removed_reals: 0.5\n")  # nothing of IPVS or VRRP: runs unprivileged
    proc = subprocess.Popen(
        [sys.executable, "-m", "ipvsmgr", "run", "-c", str(cfg), "--metrics", "127.0.0.1:19481",
         "--state-dir", str(tmp_path / "state"), "--socket", str(tmp_path / "ctl.sock")],
        env=env(tmp_path), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        body = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen("http://127.0.0.1:19481/metrics", timeout=5) as resp:
                    body = resp.read()
                break
            except OSError:
                time.sleep(0.1)
        assert b'ipvsmgr_build_info{version="' in body, body[:300]
        assert b"# TYPE ipvsmgr_reloads_total counter" in body
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert "Traceback" not in out
