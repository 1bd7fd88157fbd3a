"""`ipvsmgr import ipvsadm` in the VM: rules loaded with ipvsadm come back, through the
import and `ipvsmgr apply`, as the same kernel table (ipvsadm -Sn is the reader)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests import vm
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


SLOW = pytest.mark.skipif(os.environ.get(vm.SLOW_ENV) != "1", reason="the whole corpus: IPVSMGR_SLOW=1")
DATA = Path(__file__).resolve().parents[1] / "data" / "keepalived"
SAMPLES = Path("/usr/share/doc/keepalived/samples")
# Every corpus file with virtual servers that imports; a few in every run, all with IPVSMGR_SLOW=1
START_CORPUS = [DATA / "01-web-nat.conf", DATA / "04-groups.conf"]  # groups; inhibit: the test above
SLOW_CORPUS = [
    SAMPLES / "keepalived.conf.virtual_server_group", SAMPLES / "keepalived.conf.inhibit",
    DATA / "07-quorum-sorry.conf", DATA / "11-include.conf", SAMPLES / "keepalived.conf.quorum",
    SAMPLES / "keepalived.conf.IPv6", DATA / "02-dr-persistence.conf", DATA / "03-tunnel-maglev.conf",
    DATA / "05-udp-dns.conf",
    DATA / "06-misc-smtp.conf", DATA / "13-ipv6.conf", DATA / "14-fwmark.conf", DATA / "16-file-check.conf",
    *(SAMPLES / f"keepalived.conf.{n}" for n in ("HTTP_GET.port", "PING_CHECK", "SMTP_CHECK",
                                                  "UDP_CHECK", "sample", "status_code", "virtualhost")),
]  # fmt: skip


def _first_table(services: int, limit: float = 20) -> list[str]:
    """The table as soon as it holds every service and stays the same for 0.1 s: before any
    check can have failed (a real is removed one retry, 1 s or more, after a failure)."""
    start, last = time.monotonic(), None
    while time.monotonic() - start < limit:
        now = rules()
        if sum(line.startswith("-A") for line in now) == services and now == last:
            return now
        last = now
        time.sleep(0.1)
    raise AssertionError(f"not {services} services within {limit}s: {rules()}")


@pytest.mark.parametrize(
    "conf",
    [*START_CORPUS, *(pytest.param(p, marks=SLOW) for p in SLOW_CORPUS)],
    ids=lambda p: p.name,
)
def test_keepalived_and_its_import_start_with_the_same_table(ipvs: Lab, tmp_path: Path, conf: Path) -> None:
    imported = tmp_path / "ipvsmgr.yaml"
    run = ipvs.cli("import", "keepalived", str(conf), "-o", str(imported), "--config-id", "lb1")
    assert run.returncode in (0, 1), run.stderr
    doc = yaml.safe_load(imported.read_text())
    doc.pop("vrrp", None)  # the IPVS half: no interfaces to run VRRP on here
    doc.get("ipvs", {}).pop("connection_sync", None)
    services = len(doc["virtual_servers"])
    imported.write_text(yaml.safe_dump(doc))
    argv = ["keepalived", "--check", "--dont-fork", "--log-console", "-i", "lb1", "-f", str(conf),
            "-p", str(tmp_path / "k.pid"), "-c", str(tmp_path / "c.pid")]  # fmt: skip
    with (tmp_path / "keepalived.log").open("w") as out:
        ka = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        theirs = _first_table(services)
    finally:
        ka.terminate()
        ka.wait(15)
    ipvsadm("-C")
    daemon = ipvs.daemon(str(imported), tmp_path / "ipvsmgr.log")
    try:
        ours = _first_table(services)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(15)
    ipvsadm("-C")
    assert ours == theirs, (ours, theirs, imported.read_text())
    if conf.name == "04-groups.conf":  # four group entries, one real: checked once, as keepalived does
        assert ": 1 check" in (tmp_path / "ipvsmgr.log").read_text()
