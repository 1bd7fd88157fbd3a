"""Run one benchmark module inside the VM and bring back its JSON result.

Each VM-side benchmark prints one JSON line as its last output when started
with IPVSMGR_IN_VM=1; this boots the VM (tests/vm.py), runs the module with
the given arguments there, and returns that line parsed.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_module_in_vm(module: str, args: list[str], timeout: float, memory: str = "4G") -> Any:
    from tests.vm import run_in_vm, why_no_vm

    why = why_no_vm()
    if why:
        raise SystemExit(f"cannot boot the VM: {why}")
    out = tempfile.mkdtemp(prefix="ipvsmgr-bench-")
    res = os.path.join(out, "result.json")
    cmd = (
        f"cd {shlex.quote(str(ROOT))} && IPVSMGR_IN_VM=1 PYTHONPATH={shlex.quote(str(ROOT))} "
        f"{shlex.join([sys.executable, '-m', module, *args])} > {shlex.quote(res)} 2> {shlex.quote(res)}.err"
    )
    proc = run_in_vm(cmd, out, timeout=timeout, memory=memory)
    try:
        return json.loads(Path(res).read_text().strip().splitlines()[-1])
    except (FileNotFoundError, IndexError, ValueError):
        err = Path(res + ".err").read_text() if os.path.exists(res + ".err") else proc.stderr
        raise SystemExit(f"the benchmark failed inside the VM:\n{err[-4000:]}") from None
