"""Boot one virtme-ng VM with a Debian kernel (IPVS, tunnels) and run pytest inside it.

The host's test run calls this once per session (tests/kernel/conftest.py);
results come back through a --rwdir as JSON keyed by test node id.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_VM_ENV = "IPVSMGR_IN_VM"
RESULTS_ENV = "IPVSMGR_VM_RESULTS"
SLOW_ENV = "IPVSMGR_SLOW"  # =1: also the tests too long for every CI run (passed on into the VM)
SCREENSHOTS_ENV = "IPVSMGR_SCREENSHOTS"  # a directory: the screenshots VM tests took are copied there


def slow(why: str) -> pytest.MarkDecorator:
    """Skipped unless IPVSMGR_SLOW=1: CI's run (scripts/test.sh) must fit 50 minutes on a slow
    machine, so tests whose behaviour another CI test already shows run only in the full run
    (IPVSMGR_SLOW=1 scripts/test.sh). `why` names what CI still runs of it."""
    return pytest.mark.skipif(os.environ.get(SLOW_ENV) != "1", reason=f"IPVSMGR_SLOW=1 only: {why}")


def debian_kernel() -> str | None:
    """The newest /boot/vmlinuz-*: a Debian kernel with ip_vs, ipip and gre modules."""
    override = os.environ.get("IPVSMGR_VM_KERNEL")
    if override:
        return override
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    return kernels[-1] if kernels else None


def why_no_vm() -> str | None:
    if not shutil.which("vng"):
        return "virtme-ng (vng) is not installed"
    if not shutil.which("qemu-system-x86_64"):
        return "qemu-system-x86 is not installed"
    if debian_kernel() is None:
        return "no /boot/vmlinuz-* (apt-get install linux-image-amd64)"
    return None


def run_in_vm(
    command: str, rwdir: str, timeout: float, memory: str = "2G"
) -> subprocess.CompletedProcess[str]:
    kernel = debian_kernel()
    assert kernel
    argv = [
        "vng", "--run", kernel, "--user", "root", "--disable-kvm",  # nested KVM hangs here
        "--memory", memory, "--cpus", "2", "--rwdir", rwdir, "--exec", command,
    ]  # fmt: skip
    # A session of its own: on a timeout the whole VM goes (vng and its qemu), not
    # just vng, which would leave qemu running and eating the CPU of what follows.
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\n(the VM was killed after {timeout:g}s)"
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def run_pytest_in_vm(args: list[str], timeout: float = 2400) -> tuple[dict[str, dict[str, str]], str, float]:
    """Run pytest on `args` inside the VM; return ({nodeid: report}, console text, seconds)."""
    out = tempfile.mkdtemp(prefix="ipvsmgr-vm-")
    results = os.path.join(out, "results.json")
    inner = " ".join(
        [
            f"cd {shlex.quote(str(ROOT))} &&",
            f"{IN_VM_ENV}=1 {RESULTS_ENV}={shlex.quote(results)} PYTHONDONTWRITEBYTECODE=1",
            f"{SLOW_ENV}={shlex.quote(os.environ.get(SLOW_ENV, ''))}",
            f"PYTHONPATH={shlex.quote(str(ROOT))}",
            shlex.quote(sys.executable), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
            "--durations=30",
            *map(shlex.quote, args),
            f"> {shlex.quote(os.path.join(out, 'console.txt'))} 2>&1",
        ]
    )  # fmt: skip
    # virtme-ng passes --exec on the kernel command line (2,048 bytes on x86,
    # base64-encoded): a long list of test ids overflows it and the VM hangs
    # at boot. The command goes in a script in the shared directory instead.
    script = os.path.join(out, "run.sh")
    Path(script).write_text(inner + "\n")
    start = time.monotonic()
    proc = run_in_vm(f"sh {shlex.quote(script)}", out, timeout)
    took = time.monotonic() - start
    console = ""
    try:
        console = Path(out, "console.txt").read_text()
    except FileNotFoundError:
        console = (
            f"(no output from inside the VM)\nvng stdout:\n{proc.stdout[-4000:]}\n"
            f"vng stderr:\n{proc.stderr[-4000:]}"
        )
    try:
        data: dict[str, dict[str, str]] = json.loads(Path(results).read_text())
    except (FileNotFoundError, ValueError):
        data = {}
    keep = os.environ.get(SCREENSHOTS_ENV)
    if keep and os.path.isdir(os.path.join(out, "screenshots")):
        shutil.copytree(os.path.join(out, "screenshots"), keep, dirs_exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    return data, console, took
