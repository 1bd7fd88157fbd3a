"""`ipvsmgr import ipvsadm` in the VM: rules loaded with ipvsadm come back, through the
import and `ipvsmgr apply`, as the same kernel table (ipvsadm -Sn is the reader)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
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


KEEPALIVED_CONF = """\
! one service removes a failed real (keepalived's default), one sets it to weight 0
virtual_server 198.18.0.10 80 {
    delay_loop 1
    lb_algo wrr
    lb_kind NAT
    protocol TCP
    real_server 198.18.2.3 8080 {
        weight 2
        TCP_CHECK { connect_timeout 1 }
    }
    real_server 198.18.2.4 8080 {
        weight 1
        TCP_CHECK { connect_timeout 1 }
    }
}
virtual_server 198.18.0.10 443 {
    delay_loop 1
    lb_algo wlc
    lb_kind NAT
    protocol TCP
    persistence_timeout 120
    inhibit_on_failure
    real_server 198.18.2.3 8443 {
        weight 5
        TCP_CHECK { connect_timeout 1 }
    }
    real_server 198.18.2.4 8443 {
        weight 5
        TCP_CHECK { connect_timeout 1 }
    }
}
"""


def _settle(want: Callable[[list[str]], bool], limit: float) -> list[str]:
    start = time.monotonic()
    while True:
        now = rules()
        if want(now):
            time.sleep(2.5)  # a few more check rounds: it must stay so
            return rules()
        assert time.monotonic() - start < limit, now
        time.sleep(0.2)


def test_keepalived_and_its_import_program_the_same_table(ipvs: Lab, nat_lab: None, tmp_path: Path) -> None:
    """keepalived 2.2.7, then ipvsmgr on the import of its file, on the same reals: the same
    `ipvsadm -Sn` with every real up, and again after one real fails (removed from one
    service, weight 0 in the inhibit_on_failure one)."""
    from tests.kernel.test_health import Server

    conf = tmp_path / "keepalived.conf"
    conf.write_text(KEEPALIVED_CONF)
    servers = [Server(a, p) for a in ("198.18.2.3", "198.18.2.4") for p in (8080, 8443)]
    for s in servers:
        s.start()
    failing = [s for s in servers if s.addr == "198.18.2.4"]

    def all_up(r: list[str]) -> bool:
        return len(r) == 6 and not any("-w 0" in line for line in r)

    def one_failed(r: list[str]) -> bool:
        return len(r) == 5 and any("198.18.2.4:8443 -m -w 0" in line for line in r)

    Proc = subprocess.Popen[bytes]

    def run(start: Callable[[], Proc], stop: Callable[[Proc], None]) -> tuple[list[str], list[str]]:
        proc = start()
        try:
            up = _settle(all_up, 30)
            for s in failing:
                s.stop()
            down = _settle(one_failed, 30)
            for s in failing:
                s.start()
            _settle(all_up, 30)
        finally:
            stop(proc)
        return up, down

    log = tmp_path / "keepalived.log"

    def start_keepalived() -> subprocess.Popen[bytes]:
        argv = ["keepalived", "--check", "--dont-fork", "--log-console", "-f", str(conf),
                "-p", str(tmp_path / "k.pid"), "-c", str(tmp_path / "c.pid")]  # fmt: skip
        with log.open("w") as out:
            return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def stop_keepalived(p: subprocess.Popen[bytes]) -> None:
        p.terminate()
        p.wait(15)

    ka_up, ka_down = run(start_keepalived, stop_keepalived)
    assert rules() == [], "keepalived removes its services as it stops"

    out = tmp_path / "ipvsmgr.yaml"
    imported = ipvs.cli("import", "keepalived", str(conf), "-o", str(out))
    assert imported.returncode == 0, imported.stderr

    def start_ipvsmgr() -> subprocess.Popen[bytes]:
        return ipvs.daemon(str(out), tmp_path / "ipvsmgr.log")

    def stop_ipvsmgr(p: subprocess.Popen[bytes]) -> None:
        p.send_signal(signal.SIGTERM)
        p.wait(15)

    im_up, im_down = run(start_ipvsmgr, stop_ipvsmgr)
    assert im_up == ka_up, (im_up, ka_up, out.read_text())
    assert im_down == ka_down, (im_down, ka_down, out.read_text())
    for s in servers:
        s.stop()
