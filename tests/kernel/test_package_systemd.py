"""The packaged unit under a real systemd: the Debian 12 root with the package
installed boots as a container (systemd-nspawn, systemd 252 as its PID 1) in
the VM, on a network namespace of the test's own:

    sd-lb:   lb0 198.18.9.1/24  (the container: ipvsmgr.service, IPVS, XDP)
    sd-peer: peer0 198.18.9.2/24  (real server on :80, BIRD as BGP peer, tcpdump)

The container boundary itself grants everything (all capabilities, bpf()
allowed by its seccomp filter), so what limits the daemon is the unit's own
sandbox: its capability bounding set, NoNewPrivileges, ProtectSystem and the
rest. Checked with readers outside it: ipvsadm and sysctl in sd-lb, `ip link`
for the XDP program, tcpdump for VRRP adverts, BIRD's kernel route for BGP;
systemd's own properties for notify, reload and the watchdog.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ipvsmgr.lab import RealServer, wait
from tests import vm
from tests.kernel.conftest import IN_VM
from tests.kernel.helpers import sh
from tests.package.debroot import ROOTS

ROOTFS = ROOTS / "bookworm"  # made on the host before the VM boots (conftest._prepare_host)
LB, PEER = "sd-lb", "sd-peer"
CONFIG = "/etc/ipvsmgr/ipvsmgr.yaml"
BOOT_TIMEOUT = 120.0  # TCG: about 30 s here, slower on a busy machine
# The unit's CapabilityBoundingSet: NET_BIND_SERVICE 10, NET_ADMIN 12, NET_RAW 13,
# CHOWN 0, SYS_ADMIN 21, SYS_NICE 23 (SCHED_RR for VRRP), SYS_RESOURCE 24, PERFMON 38, BPF 39.
BOUNDING = sum(1 << c for c in (0, 10, 12, 13, 21, 23, 24, 38, 39))


def config(weight: int = 1) -> str:
    return f"""\
ipvs:
  sysctl: {{conn_reuse_mode: 3, sloppy_tcp: true}}
virtual_servers:
  - name: web
    address: 198.18.9.100
    port: 80
    health_check: {{type: tcp, interval: 1s, timeout: 1s, rise: 1, fall: 2}}
    reals:
      - {{address: 198.18.9.2, port: 80, weight: {weight}}}
  - name: edge
    address: 198.18.9.200
    port: 80
    forwarding: dr
    health_check: {{type: tcp, interval: 1s, timeout: 1s, rise: 1, fall: 2}}
    reals:
      - {{address: 198.18.9.2}}
vrrp:
  instances:
    - name: v
      interface: lb0
      vrid: 61
      priority: 150
      advert_interval: 100ms
      virtual_addresses: [198.18.9.100/24]
bgp:
  local_as: 65001
  router_id: 198.18.9.1
  hold_time: 9s
  exabgp: [/usr/sbin/exabgp]
  peers:
    - {{address: 198.18.9.2, as: 65000, local_address: 198.18.9.1}}
  announce:
    - prefix: 198.18.9.200
xdp:
  interfaces: [lb0]
  mode: generic
"""


RULES = [
    "-A -t 198.18.9.100:80 -s wlc",
    "-A -t 198.18.9.200:80 -s wlc",
    "-a -t 198.18.9.100:80 -r 198.18.9.2:80 -m -w {w}",
    "-a -t 198.18.9.200:80 -r 198.18.9.2:80 -g -w 1",
]


def rules() -> list[str]:
    out = sh("ip", "netns", "exec", LB, "ipvsadm", "-Sn")
    return sorted(line for line in out.splitlines() if line.strip())


def expected(weight: int = 1) -> list[str]:
    return sorted(r.format(w=weight) for r in RULES)


def xdp_prog(ns: str = LB, ifname: str = "lb0") -> dict[str, object] | None:
    link = json.loads(sh("ip", "-j", "-n", ns, "link", "show", ifname))[0]
    xdp = link.get("xdp")
    return xdp["prog"] if xdp else None  # type: ignore[no-any-return]


class Container:
    """The root booted with systemd as PID 1; commands run inside through nsenter."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.config = work / "ipvsmgr.yaml"
        self.bpffs = work / "bpffs"
        self.console = work / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0

    def boot(self) -> None:
        # A real host has the BPF filesystem mounted by systemd at boot, so pins
        # outlive the daemon; this container gets one the same way, from outside.
        self.bpffs.mkdir()
        sh("mount", "-t", "bpf", "bpf", str(self.bpffs))
        argv = [
            "systemd-nspawn", "-D", str(ROOTFS), "--volatile=overlay",  # the root stays untouched
            f"--network-namespace-path=/run/netns/{LB}", "--register=no", "--keep-unit",
            "--capability=all", "--system-call-filter=bpf perf_event_open",
            f"--bind-ro={self.config}:{CONFIG}", f"--bind={self.bpffs}:/sys/fs/bpf",
            "-b", "systemd.mask=exabgp.service",  # Debian's own ExaBGP unit: ipvsmgr runs its own
        ]  # fmt: skip
        with self.console.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + BOOT_TIMEOUT
        state = ""
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.console.read_text(errors="replace")[-3000:]
            # nspawn forks helpers before the container's PID 1: wait for that one
            kids = sh("pgrep", "-P", str(self.proc.pid), "-x", "systemd", check=False).split()
            self.leader = int(kids[0]) if kids else 0
            if self.leader:
                state = self.run("systemctl", "is-system-running", check=False).strip()
                if state in ("running", "degraded"):
                    took = BOOT_TIMEOUT - (deadline - time.monotonic())
                    print(f"container booted to {state!r} in {took:.0f} s")
                    return
            time.sleep(1)
        probe = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "systemctl", "is-system-running"],
                               capture_output=True, text=True, check=False)  # fmt: skip
        raise AssertionError(
            f"the container did not boot in {BOOT_TIMEOUT:.0f} s (leader {self.leader}, state {state!r}, "
            f"{probe.stderr.strip()!r}):\n{self.console.read_text(errors='replace')[-3000:]}"
        )

    def run(self, *argv: str, check: bool = True) -> str:
        return sh("nsenter", "-t", str(self.leader), "-a", *argv, check=check)

    def show(self, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", "ipvsmgr.service", "-p", ",".join(props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self) -> str:
        return self.run("journalctl", "-u", "ipvsmgr.service", "--no-pager", "-o", "cat", check=False)

    def until(self, what: Callable[[], bool], timeout: float, why: str) -> float:
        try:
            return wait(what, timeout, step=0.5)
        except Exception:
            raise AssertionError(f"{why}; journal:\n{self.journal()[-4000:]}") from None

    def halt(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.leader:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.leader, signal.SIGRTMIN + 4)  # systemd's "poweroff" signal
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        with contextlib.suppress(AssertionError):
            sh("umount", str(self.bpffs))


class Sampler:
    """Reads the IPVS table over and over while something happens (hitless or not)."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.append(rules())
            time.sleep(0.05)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def box() -> Iterator[Container]:
    if not IN_VM:  # the body runs inside the VM (tests/kernel/conftest.py)
        yield None  # type: ignore[misc]
        return
    if not (ROOTFS / "usr" / "bin" / "ipvsmgr").exists():
        pytest.skip("no Debian 12 root with the package (made on the host by tests/package/debroot.py)")
    if not Path("/usr/bin/systemd-nspawn").exists():
        pytest.skip("systemd-nspawn is not installed (systemd-container; scripts/setup.sh installs it)")
    made: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    real = RealServer(PEER, "rs")
    work = Path(tempfile.mkdtemp(prefix="ipvsmgr-sd-"))
    box = Container(work)
    try:
        for ns in (LB, PEER):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", LB, "link", "add", "lb0", "type", "veth", "peer", "name", "peer0", "netns", PEER)
        for ns, ifname, address in ((LB, "lb0", "198.18.9.1/24"), (PEER, "peer0", "198.18.9.2/24")):
            sh("ip", "-n", ns, "addr", "add", address, "dev", ifname)
            sh("ip", "-n", ns, "link", "set", ifname, "up")
        real.start()
        bird = work / "bird.conf"
        bird.write_text(
            "router id 198.18.9.2;\nprotocol device {}\nprotocol kernel { ipv4 { export all; }; }\n"
            "protocol bgp lb { local 198.18.9.2 as 65000; neighbor 198.18.9.1 as 65001; "
            "hold time 9; connect retry time 1; ipv4 { import all; export none; }; }\n"
        )
        procs.append(subprocess.Popen(["ip", "netns", "exec", PEER, "bird", "-f", "-c", str(bird),
                                       "-s", str(work / "bird.ctl")], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))  # fmt: skip
        box.config.write_text(config())
        box.boot()
        yield box
    finally:
        box.halt()
        for p in procs:
            p.terminate()
            p.wait(10)
        real.stop()
        for ns in reversed(made):
            sh("ip", "netns", "del", ns, check=False)


def test_the_unit_runs_the_daemon_in_its_sandbox(box: Container) -> None:
    props = box.show("Type", "ActiveState", "SubState", "NRestarts", "WatchdogUSec", "MainPID")
    assert (props["Type"], props["ActiveState"], props["SubState"]) == ("notify", "active", "running"), props
    assert (props["NRestarts"], props["WatchdogUSec"]) == ("0", "30s"), props
    # READY=1 came with a status line, kept current (VRRP's move to master included)
    box.until(lambda: box.show("StatusText")["StatusText"] == (
        "2 virtual servers; 2/2 reals up; XDP active; VRRP v master"), 60, "status line")  # fmt: skip
    # The sandbox is the unit's: bounding set, no new privileges, a seccomp filter.
    status = box.run("cat", f"/proc/{props['MainPID']}/status")
    fields = dict(re.findall(r"^(\w+):\s+(\S+)", status, re.M))
    assert int(fields["CapBnd"], 16) == BOUNDING, fields["CapBnd"]
    assert (fields["NoNewPrivs"], fields["Seccomp"]) == ("1", "2"), fields
    # room for thousands of health checks (issue 18): the unit's open-files limit, and the process's
    limit = box.run("systemctl", "show", "-p", "LimitNOFILE", "ipvsmgr").strip()
    assert limit == "LimitNOFILE=524288", limit
    limits = box.run("cat", f"/proc/{props['MainPID']}/limits")
    assert re.search(r"^Max open files\s+\d+\s+524288", limits, re.M), limits
    # The unit lets the VRRP process run real-time (SYS_NICE, RestrictRealtime=no): chrt says so.
    vrrp = json.loads(box.run("ipvsmgr", "status", "--json"))["daemon"]["vrrp_process"]
    policy = box.run("chrt", "-p", str(vrrp["pid"]))
    assert "SCHED_RR" in policy and "priority: 10" in policy, (policy, vrrp)
    # ExecStartPre checked the file before anything ran
    assert f"{CONFIG}: OK (2 virtual servers" in box.journal()

    # What it did, read outside the container.
    box.until(lambda: rules() == expected(), 30, f"IPVS rules: {rules()}")
    assert sh("ip", "netns", "exec", LB, "sysctl", "-n", "net.ipv4.vs.conn_reuse_mode",
              "net.ipv4.vs.sloppy_tcp").split() == ["3", "1"]  # fmt: skip
    assert "198.18.9.100/24" in sh("ip", "-n", LB, "addr", "show", "lb0")
    adverts = sh("ip", "netns", "exec", PEER, "timeout", "10", "tcpdump", "-ni", "peer0", "-c", "3", "-l",
                 "ip proto 112")  # fmt: skip
    assert adverts.count("198.18.9.1 > 224.0.0.18: VRRPv3, Advertisement, vrid 61, prio 150") == 3, adverts
    prog = xdp_prog()
    assert prog is not None and prog["name"] == "xdp_guard", prog
    # ExaBGP, the daemon's child, announced the VIP: BIRD put it in sd-peer's table
    route = re.compile(r"^198\.18\.9\.200 via 198\.18\.9\.1 dev peer0 proto bird", re.M)
    box.until(lambda: bool(route.search(sh("ip", "-n", PEER, "route", "show", "198.18.9.200"))),
              90, "BGP route at the peer")  # fmt: skip
    # The control socket in the unit's RuntimeDirectory answers the CLI.
    out = box.run("ipvsmgr", "status")
    assert "198.18.9.100:80" in out and "198.18.9.200:80" in out, out
    # and none of it cost an error on the way (ExaBGP's FIFOs once did, in this sandbox)
    errors = [line for line in box.journal().splitlines() if " ERROR " in line or "Traceback" in line]
    assert errors == [], errors


def test_reload_applies_a_good_file_and_refuses_a_bad_one(box: Container) -> None:
    pid = box.show("MainPID")["MainPID"]
    box.config.write_text(config(weight=5))  # in place: the bind mount shows the same inode
    box.run("systemctl", "reload", "ipvsmgr")
    box.until(lambda: rules() == expected(5), 30, f"reloaded rules: {rules()}")
    box.config.write_text(config(weight=5).replace("weight: 5", "weight: -5"))
    box.run("systemctl", "reload", "ipvsmgr")
    box.until(lambda: "reload refused" in box.journal(), 30, "refused reload")
    assert f"{CONFIG}:9:49: -5 is below the minimum of 0" in box.journal(), box.journal()[-2000:]
    time.sleep(2)
    assert rules() == expected(5)
    props = box.show("MainPID", "ActiveState")
    assert (props["MainPID"], props["ActiveState"]) == (pid, "active"), props
    box.config.write_text(config())
    box.run("systemctl", "reload", "ipvsmgr")
    box.until(lambda: rules() == expected(), 30, "rules back")


def test_restart_and_watchdog_keep_the_data_path(box: Container) -> None:
    prog = xdp_prog()
    assert prog is not None
    # A short watchdog for the test; a restart hands the new interval over.
    dropin = Path(f"/proc/{box.leader}/root/run/systemd/system/ipvsmgr.service.d")
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "watchdog.conf").write_text("[Service]\nWatchdogSec=3s\n")
    box.run("systemctl", "daemon-reload")
    with Sampler() as restart:
        box.run("systemctl", "restart", "ipvsmgr")
        box.until(lambda: box.show("ActiveState")["ActiveState"] == "active", 60, "restart")
    assert restart.seen and all(seen == expected() for seen in restart.seen), restart.seen
    props = box.show("MainPID", "WatchdogUSec", "NRestarts")
    assert (props["WatchdogUSec"], props["NRestarts"]) == ("3s", "0"), props
    again = xdp_prog()
    assert again is not None and again["id"] == prog["id"], (prog, again)  # adopted, not reloaded

    # A hung daemon: its event loop stops pinging; systemd aborts it and starts another.
    with Sampler() as hang:
        box.run("kill", "-STOP", props["MainPID"])
        aborted = box.until(lambda: box.show("NRestarts")["NRestarts"] == "1", 90, "watchdog restart")
        ready = box.until(lambda: box.show("ActiveState")["ActiveState"] == "active", 60, "active again")
    print(
        f"hung daemon: restarted {aborted:.1f} s after SIGSTOP (watchdog 3 s), ready {ready:.1f} s later; "
        f"{len(hang.seen)} IPVS reads meanwhile, all complete"
    )
    assert box.show("MainPID")["MainPID"] != props["MainPID"]
    assert "Watchdog timeout" in box.run("journalctl", "-u", "ipvsmgr", "--no-pager", "-o", "cat")
    assert hang.seen and all(seen == expected() for seen in hang.seen), hang.seen[-1]
    still = xdp_prog()
    assert still is not None and still["id"] == prog["id"], (prog, still)
    (dropin / "watchdog.conf").unlink()
    box.run("systemctl", "daemon-reload")


def test_stop_leaves_the_kernel_state_and_a_commented_file_skips_the_start(box: Container) -> None:
    box.run("systemctl", "stop", "ipvsmgr")
    props = box.show("ActiveState", "Result", "ExecMainStatus")
    assert (props["ActiveState"], props["Result"]) == ("inactive", "success"), props
    assert rules() == expected()  # a restart is hitless: the services stay in the kernel
    assert xdp_prog() is not None  # and so does the guard
    # The conffile as shipped (all comments): the unit is skipped, not failed.
    shipped = (ROOTFS / CONFIG.lstrip("/")).read_text()
    box.config.write_text(shipped)
    box.run("systemctl", "start", "ipvsmgr")
    props = box.show("ActiveState", "Result", "MainPID")
    skipped = (props["ActiveState"], props["Result"], props["MainPID"])
    assert skipped == ("inactive", "exec-condition", "0"), props
    assert rules() == expected()  # and nothing touched the kernel


SILENT, HEALTHY = 3000, 40


def many_reals() -> str:
    """The usual file with two more services: 40 healthy reals, and 3,000 silent ones."""
    healthy = "".join(f"      - {{address: 198.18.9.{10 + i}}}\n" for i in range(HEALTHY))
    silent = "".join(f"      - {{address: 198.18.{64 + i // 250}.{i % 250 + 1}}}\n" for i in range(SILENT))
    check = "    health_check: {type: tcp}\n"  # the defaults: 2 s interval, 1 s timeout, rise 2, fall 3
    more = (
        "  - name: ok\n    address: 198.18.9.150\n    port: 80\n" + check + "    reals:\n" + healthy
        + "  - name: racks\n    address: 198.18.9.151\n    port: 80\n" + check + "    reals:\n" + silent
    )  # fmt: skip
    return config().replace("virtual_servers:\n", "virtual_servers:\n" + more, 1)


@vm.slow(
    "the cascade under 1,024 files: tests/netns/test_health_fds.py; the unit's LimitNOFILE: "
    "test_the_unit_runs_the_daemon_in_its_sandbox"
)
def test_a_rack_of_silent_reals_leaves_the_healthy_ones_alone(box: Container) -> None:
    """3,000 reals whose SYNs vanish and 40 healthy ones, under the unit's own
    limits: no healthy real changes state, and the descriptors are reported."""
    box.run("systemctl", "stop", "ipvsmgr")  # stopped already when the whole module runs
    limit = box.run("systemctl", "show", "-p", "LimitNOFILE", "ipvsmgr").strip()
    assert limit == "LimitNOFILE=524288", limit
    for i in range(HEALTHY):
        sh("ip", "-n", PEER, "addr", "add", f"198.18.9.{10 + i}/24", "dev", "peer0")
    # 198.18.64.0/20 goes to the peer, which does not forward: the SYNs vanish, no ICMP
    sh("ip", "-n", LB, "route", "add", "198.18.64.0/20", "via", "198.18.9.2")
    try:
        box.config.write_text(many_reals())
        box.run("systemctl", "start", "ipvsmgr")
        box.until(lambda: box.show("ActiveState")["ActiveState"] == "active", 120, "start")

        def healthy() -> list[str]:
            st = json.loads(box.run("ipvsmgr", "status", "--json"))
            [ok] = [vs for vs in st["virtual_servers"] if vs["name"] == "ok"]
            return [r["health"] for r in ok["reals"]]

        box.until(lambda: healthy() == ["up"] * HEALTHY, 120, "the healthy reals up")
        seen: list[list[str]] = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 40:  # 20 intervals, 6 of them a fall's worth
            seen.append(healthy())
            time.sleep(2)
        st = json.loads(box.run("ipvsmgr", "status", "--json"))
        hc = st["health_checks"]
        [racks] = [vs for vs in st["virtual_servers"] if vs["name"] == "racks"]
        print(
            f"{SILENT} silent + {HEALTHY} healthy reals under the unit: descriptors {hc['open_fds']} now, "
            f"{hc['open_fds_max']} at most, limit {hc['fd_limit']}; checks in flight at most "
            f"{hc['in_flight_max']}; not run {hc['not_run']}"
        )
        assert all(s == ["up"] * HEALTHY for s in seen), [s for s in seen if s != ["up"] * HEALTHY][:2]
        assert not [r for r in racks["reals"] if r["health"] == "up"]  # never up: still pending or down
        assert hc["fd_limit"] == 524288 and hc["not_run"] == 0, hc
        assert hc["open_fds_max"] > 1024, hc  # beyond systemd's default soft limit: it was needed
        assert "Too many open files" not in box.journal()
    finally:
        box.run("systemctl", "stop", "ipvsmgr", check=False)
        sh("ip", "-n", LB, "route", "del", "198.18.64.0/20", check=False)
        for i in range(HEALTHY):
            sh("ip", "-n", PEER, "addr", "del", f"198.18.9.{10 + i}/24", "dev", "peer0", check=False)
