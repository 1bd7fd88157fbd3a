"""`ipvsmgr import ipvsadm` in the VM: rules loaded with ipvsadm come back, through the
import and `ipvsmgr apply`, as the same kernel table (ipvsadm -Sn is the reader)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.kernel.helpers import Lab, ipvsadm, rules
from tests.kernel.test_apply import EXPECTED

# every method, tunnel type, flag and persistence of all-methods.yaml, and a SIP engine
RULES = [
    *EXPECTED,
    "-A -u 198.18.0.14:5060 -s rr -p 360 --pe sip",
    "-a -u 198.18.0.14:5060 -r 198.18.1.61:5060 -m -w 1",
]


def test_ipvsadm_rules_come_back_through_the_import(ipvs: Lab, tmp_path: Path) -> None:
    subprocess.run(["ipvsadm", "-R"], input="\n".join(RULES) + "\n", text=True, check=True)
    before = rules()
    assert before == sorted(RULES)
    saved = ipvsadm("-Sn")
    for source in ("--live", "-"):
        out = tmp_path / f"imported{source}.yaml"
        args = ["import", "ipvsadm", source, "-o", str(out)]
        run = subprocess.run(
            ipvs.cli_argv(*args), input=saved, capture_output=True, text=True, env=ipvs.env(), check=False
        )
        assert run.returncode == 0, run.stderr
        ipvsadm("-C")
        applied = ipvs.cli("apply", config=str(out))
        assert applied.returncode == 0, applied.stderr
        assert rules() == before, out.read_text()
        plan = ipvs.cli("plan", config=str(out))
        assert "No changes" in plan.stdout, plan.stdout
        ipvsadm("-C")
        subprocess.run(["ipvsadm", "-R"], input="\n".join(RULES) + "\n", text=True, check=True)
