"""A reload or apply never wipes the site by accident (in the VM, real IPVS and a VRRP VIP).

An emptied or all-comment file is refused whatever is asked; a file that
removes every virtual server, every VIP or more than ipvs.max_removed_reals
of the reals is refused until forced. A refusal leaves `ipvsadm -Sn` and
`ip addr` exactly as they were, and says so in the exit status, the log and
`status`."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from ipvsmgr import control
from tests.kernel.helpers import Lab, rules, sh
from tests.kernel.test_health import wait_for

REALS = [f"198.18.6.{i}" for i in range(1, 5)]
VRRP = """\
vrrp:
  instances:
    - name: guard
      interface: guard0
      vrid: 61
      priority: 100
      advert_interval: 100ms
      virtual_addresses: [198.18.7.100/24]
"""


def config(reals: list[str], services: int = 2, extra: str = "", vrrp: bool = True) -> str:
    text = extra + "virtual_servers:\n"
    for n in range(services):
        text += f"  - name: web{n}\n    address: 198.18.7.{10 + n}\n    port: 80\n    reals:\n"
        text += "".join(f"      - {{address: {a}, port: 8080, weight: 2}}\n" for a in reals)
    if services == 0:
        text += "  []\n"
    return text + (VRRP if vrrp else "")


def addresses() -> str:
    return sh("ip", "-o", "addr", "show", "dev", "guard0")


def last_reload(lab: Lab) -> dict:  # type: ignore[type-arg]
    return control.call(lab.socket, "status")["daemon"]["last_reload"]  # type: ignore[no-any-return]


def test_reload_guard(ipvs: Lab) -> None:
    sh("ip", "link", "add", "guard0", "type", "dummy")
    sh("ip", "addr", "add", "198.18.7.1/24", "dev", "guard0")
    sh("ip", "link", "set", "guard0", "up")
    path = Path(ipvs.write("lb.yaml", config(REALS)))
    log = ipvs.work / "daemon.log"
    daemon = ipvs.daemon(str(path), log)
    try:
        wait_for(lambda: "198.18.7.100/24" in addresses() and len(rules()) == 10, 90)
        wait_for(lambda: Path(ipvs.socket).exists(), 30)
        table, addrs = rules(), addresses()

        def unchanged() -> None:
            time.sleep(1.5)  # more than the 1 s resync: a refused file must not creep in later
            assert rules() == table
            assert addresses() == addrs

        # An emptied file, and one that is only comments (how the package ships it).
        for text in ("", "# ipvsmgr.yaml\n#virtual_servers:\n#  - name: web\n"):
            path.write_text(text)
            r = ipvs.ctl("reload")
            assert r.returncode == 1 and "holds no settings" in r.stderr, r.stderr
            unchanged()
            r = ipvs.ctl("reload", "--force")  # never forced through
            assert r.returncode == 1 and "holds no settings" in r.stderr, r.stderr
            unchanged()
        daemon.send_signal(signal.SIGHUP)  # the same by signal
        wait_for(lambda: "holds no settings" in log.read_text(), 30)
        unchanged()
        lr = last_reload(ipvs)
        assert lr["ok"] is False and lr["guarded"] is True

        # Every virtual server gone (VRRP kept): refused with the counts.
        path.write_text(config(REALS, services=0))
        r = ipvs.ctl("reload")
        assert r.returncode == 1, r.stderr
        assert "every virtual server" in r.stderr and "2 of 2 virtual servers, 8 of 8 reals" in r.stderr
        unchanged()
        # Every VIP gone (services kept).
        path.write_text(config(REALS, vrrp=False))
        r = ipvs.ctl("reload")
        assert r.returncode == 1 and "every VRRP VIP" in r.stderr, r.stderr
        unchanged()
        # Three reals of four gone: 75% > the default 50%.
        path.write_text(config(REALS[:1]))
        r = ipvs.ctl("reload")
        assert r.returncode == 1 and "75% of the owned reals" in r.stderr, r.stderr
        unchanged()
        assert "reload refused" in log.read_text()

        # A share the file allows goes through; so does a forced one.
        path.write_text(config(REALS[:1], extra="ipvs: {max_removed_reals: 0.8}\n"))
        r = ipvs.ctl("reload")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: sum("-a " in line and " -w 0" not in line for line in rules()) == 2, 30)
        path.write_text(config(REALS))
        assert ipvs.ctl("reload").returncode == 0
        wait_for(lambda: sum(" -w 2" in line for line in rules()) == 8, 30)
        path.write_text(config(REALS, services=0))
        r = ipvs.ctl("reload", "--force")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: not any(line.startswith("-A") for line in rules()), 30)
        assert last_reload(ipvs)["ok"] is True
        assert "198.18.7.100/24" in addresses()  # VRRP untouched by the services' removal
    finally:
        daemon.terminate()
        daemon.wait(30)
        sh("ip", "link", "del", "guard0", check=False)


def test_apply_and_start_guard(ipvs: Lab) -> None:
    path = Path(ipvs.write("lb.yaml", config(REALS, vrrp=False)))
    assert ipvs.cli("apply", config=str(path)).returncode == 0
    table = rules()
    assert len(table) == 10
    path.write_text("# all comments\n")
    r = ipvs.cli("apply", "--force", config=str(path))
    assert r.returncode == 1 and "holds no settings" in r.stderr, r.stderr
    assert rules() == table
    path.write_text(config(REALS[:2], vrrp=False))  # half the reals: at the limit, allowed
    r = ipvs.cli("plan", config=str(path))
    assert "would refuse" not in r.stderr, r.stderr
    path.write_text(config(REALS[:1], vrrp=False))
    r = ipvs.cli("plan", config=str(path))
    assert r.returncode == 2 and "apply would refuse this" in r.stderr, r.stderr
    r = ipvs.cli("apply", config=str(path))
    assert r.returncode == 1 and "nothing applied" in r.stderr and "75%" in r.stderr, r.stderr
    assert rules() == table

    # A daemon started on that file refuses to start and leaves the table alone.
    log = ipvs.work / "start.log"
    daemon = ipvs.daemon(str(path), log)
    assert daemon.wait(120) == 1
    assert "not started" in log.read_text() and "75%" in log.read_text()
    assert rules() == table
    daemon = ipvs.daemon(str(path), log, "--force")
    try:
        wait_for(lambda: sum(" -w 2" in line for line in rules()) == 2, 90)
    finally:
        daemon.terminate()
        daemon.wait(30)
    r = ipvs.cli("apply", "--force", config=str(path))
    assert r.returncode == 0, r.stderr


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def hostile_files() -> dict[str, tuple[bytes, str]]:
    """name -> (file contents, what the refusal must say)."""
    laughs = "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else 'lol'] * 10)}]\n" for i in range(9)
    )  # 10**9 nodes if expanded
    bomb = laughs + config(REALS).replace(
        "    port: 80\n", "    port: 80\n    scheduler_flags: [*l8, *l8]\n", 1
    )
    mistakes = "virtual_servers:\n" + "".join(
        f"  - {{name: vs{i}, address: 198.18.{8 + (i >> 8)}.{i & 255}, port: 80, bogus: 1}}\n"
        for i in range(5000)
    )
    return {
        "alias bomb": (bomb.encode(), "YAML aliases expand to more than 5,000,000 nodes"),
        "5,000 mistakes": (mistakes.encode(), "and 4980 more"),
        "a 4 MB name": (config(REALS).replace("name: web0", "name: " + "x" * (4 << 20)).encode(), "..."),
        "deep nesting": (b"virtual_servers: " + b"[" * 20_000 + b"]" * 20_000 + b"\n", "refused"),
        "not UTF-8": (b"virtual_servers:\n  - name: \xff\xfe\n" * 1000, "not UTF-8"),
    }


def test_hostile_reloads_are_refused_and_the_daemon_does_not_grow(ipvs: Lab) -> None:
    sh("ip", "link", "add", "guard0", "type", "dummy")
    sh("ip", "addr", "add", "198.18.7.1/24", "dev", "guard0")
    sh("ip", "link", "set", "guard0", "up")
    path = Path(ipvs.write("lb.yaml", config(REALS)))
    daemon = ipvs.daemon(str(path), ipvs.work / "daemon.log")
    try:
        wait_for(lambda: "198.18.7.100/24" in addresses() and len(rules()) == 10, 90)
        wait_for(lambda: Path(ipvs.socket).exists(), 30)
        # Settled: one ordinary reload and one ordinary refusal have run (their code is loaded).
        assert ipvs.ctl("reload").returncode == 0
        path.write_text(config(REALS).replace("port: 80", "port: 80000", 1))
        assert ipvs.ctl("reload").returncode == 1
        table, addrs = rules(), addresses()
        before = rss_kib(daemon.pid)
        figures = {}
        for name, (text, said) in hostile_files().items():
            path.write_bytes(text)
            t = time.monotonic()
            r = ipvs.ctl("reload")
            took = time.monotonic() - t
            assert r.returncode == 1 and said in r.stderr, (name, r.stderr[-2000:])
            assert max(len(line) for line in r.stderr.splitlines()) <= 400, name  # no value echoed whole
            st = last_reload(ipvs)
            assert st["ok"] is False and len(st["problems"]) <= 21, (name, len(st["problems"]))
            figures[name] = {"refused_in_s": round(took, 1), "rss_kib": rss_kib(daemon.pid)}
        assert rules() == table and addresses() == addrs
        grown = rss_kib(daemon.pid) - before
        print("HOSTILE " + json.dumps({"rss_before_kib": before, "grown_kib": grown, **figures}))
        assert grown <= 10 * 1024, f"the daemon grew by {grown} KiB"
    finally:
        daemon.terminate()
        daemon.wait(30)
        sh("ip", "link", "del", "guard0", check=False)
