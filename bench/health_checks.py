"""Benchmark: ipvsmgr's health-check scheduler at 5,000 reals, against keepalived's checker.

    python -m bench.health_checks --where host [--reals 5000] [--duration 60] [--kinds tcp,http]
    python -m bench.health_checks --where vm [--reals 5000,500,100] [--warmup 10] [--no-keepalived]

Every run gets two fresh network namespaces joined by a veth pair: a server
namespace whose veth carries 198.18.1.1-50, where bench/health_server.py
listens on `reals` endpoints (50 addresses x 100 ports for 5,000), and a client
namespace (198.18.0.1, route to 198.18.1.0/24) where the checker runs. Nothing
is sent from the root namespace; processes and namespaces are removed at the
end, also on error.

ipvsmgr: a process entered into the client namespace (nsenter --net) builds one
ScheduledCheck per endpoint (interval 1 s, timeout 1 s, rise 2, fall 3, no
jitter) on one Scheduler, lets it run a warm-up, then measures a window of
--duration seconds: runs, failures and skipped runs (snapshot() deltas), CPU
(getrusage user + sys of the process, minus the benchmark's own sampling),
lag (snapshot() once a second: p50 / p99 are over its last 10,000 runs; the
figures printed are the median p50 and the worst p99 of those samples, plus
the maximum since start) and peak RSS (ru_maxrss, start-up included).

keepalived (VM only: its checker needs IPVS, which the host kernel lacks): the
same endpoints as TCP_CHECKs (one virtual_server per server address, lb_kind
NAT, delay_loop 1, connect_timeout 1), `keepalived -n -C` in the client
namespace; the checker child's CPU is read from /proc/<pid>/stat over the same
length of window after the same warm-up, its peak RSS is VmHWM. Its checks are
counted at the server (connections accepted in the window), next to the
nominal reals x seconds / delay_loop.

`--where host` runs ipvsmgr only (absolute figures); `--where vm` boots the
virtme-ng VM (tests/vm.py) and runs ipvsmgr and keepalived there, for the ratio
ipvsmgr CPU per check / keepalived CPU per check (Python runs about 25x slower
in that TCG VM: the printout says how many checks per second really ran).
The benchmark never installs anything: without keepalived it says how to get
it and skips the baseline.

keepalived's delay_loop counts from the end of a check, ipvsmgr's interval is
fixed-rate: at 1 s both aim at one check per real per second. Noise: each run
prints how busy the machine was in its window; in vm mode a host thread also
samples how many CPUs processes other than this VM used (another VM on a
2-core host doubles the CPU figures measured inside). Namespaces are named
hcb-[cs]-<pid>-<tag>; a run deletes those whose pid is gone (left by a SIGKILL).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.health_server import die_with_parent, endpoints, raise_nofile  # noqa: E402

PY = sys.executable
CLIENT, SERVER = "198.18.0.1", "198.18.0.2"  # the veth pair; servers listen on 198.18.1.0/24
NS_PREFIX = "hcb-"
VIP_NET = "198.19.0."  # keepalived's virtual servers (never sent to)
INTERVAL = 1.0
TIMEOUT = 1.0
IN_VM = os.environ.get("IPVSMGR_IN_VM") == "1"
START_ALLOWANCE = 600.0 if IN_VM else 120.0  # seconds for a process to start and get going

Figures = dict[str, Any]


# --------------------------------------------------------------- plumbing


def sh(*argv: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


class Lines:
    """Lines from a child's stdout pipe, each awaited with a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes], what: str) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.what = what
        self.buf = b""

    def next(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.what}: no output for {timeout:.0f} s")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    raise EOFError(f"{self.what} exited")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()


class Lab:
    """Client and server namespaces joined by a veth pair; see the module docstring."""

    def __init__(self, reals: int, work: Path) -> None:
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:4]}"  # the pid lets a later run reap leftovers
        self.client, self.server = f"{NS_PREFIX}c-{tag}", f"{NS_PREFIX}s-{tag}"
        self.reals = reals
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []
        self.stray_pids: list[int] = []  # processes that outlive a wrapper (keepalived under timeout)

    def __enter__(self) -> Lab:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self) -> None:
        c, s = self.client, self.server
        sh("ip", "netns", "add", c)
        sh("ip", "netns", "add", s)
        sh("ip", "-n", c, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", s)
        addresses = sorted({a for a, _ in endpoints(self.reals)})
        server_batch = [f"addr add {SERVER}/24 dev veth0"]
        server_batch += [f"addr add {a}/32 dev veth0" for a in addresses]
        server_batch += ["link set veth0 up", "link set lo up"]
        sh("ip", "-n", s, "-batch", "-", stdin="\n".join(server_batch) + "\n")
        client_batch = [f"addr add {CLIENT}/24 dev veth0", "link set veth0 up", "link set lo up"]
        sh("ip", "-n", c, "-batch", "-", stdin="\n".join(client_batch) + "\n")
        sh("ip", "-n", c, "route", "add", "198.18.1.0/24", "via", SERVER)
        # Static neighbours: no ARP on the path being measured.
        mac = {ns: _mac(ns) for ns in (c, s)}
        sh("ip", "-n", c, "neigh", "replace", SERVER, "lladdr", mac[s], "dev", "veth0", "nud", "permanent")
        sh("ip", "-n", s, "neigh", "replace", CLIENT, "lladdr", mac[c], "dev", "veth0", "nud", "permanent")

    def spawn(
        self, ns: str, argv: list[str], name: str, bound: float | None = None
    ) -> subprocess.Popen[bytes]:
        """Start argv in namespace ns (nsenter keeps /sys); stdout piped, stderr to work/name.err.

        With `bound`, argv runs under timeout(1), for programs that cannot bound themselves."""
        full = ["nsenter", f"--net=/run/netns/{ns}", *argv]
        if bound is not None:
            full = ["timeout", "-k", "10", str(int(bound)), *full]
        with open(self.work / f"{name}.err", "wb") as err:
            p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
        for pid in self.stray_pids:
            _kill_pid(pid)
        sh("ip", "-n", self.client, "link", "del", "veth0", check=False)
        sh("ip", "netns", "del", self.client, check=False)
        sh("ip", "netns", "del", self.server, check=False)


def reap_stale_namespaces() -> list[str]:
    """Delete namespaces a killed (SIGKILL) earlier run left behind: hcb-[cs]-<dead pid>-*."""
    reaped = []
    for line in sh("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        mine = name.startswith(NS_PREFIX) and len(parts) == 4 and parts[2].isdigit()
        if mine and not Path(f"/proc/{parts[2]}").exists():
            if parts[1] == "c":
                sh("ip", "-n", name, "link", "del", "veth0", check=False)
            sh("ip", "netns", "del", name, check=False)
            reaped.append(name)
    return reaped


def _mac(ns: str) -> str:
    return str(json.loads(sh("ip", "-j", "-n", ns, "link", "show", "veth0"))[0]["address"])


def _kill_pid(pid: int) -> None:
    """SIGTERM, then SIGKILL after 10 s, a process that is not our child."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists() or _proc_state(pid) == "Z":
                return
            time.sleep(0.1)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return ""


def _busy_s() -> float:
    """CPU seconds this machine has been busy (all CPUs: user, nice, system, irq, softirq)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (f[0] + f[1] + f[2] + f[5] + f[6]) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(root: int) -> float:
    """CPU seconds of the live processes descended from pid `root` (itself included)."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            f = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parent[int(d.name)] = int(f[1])
        cpu[int(d.name)] = (int(f[11]) + int(f[12])) / tick
    total = 0.0
    for pid in cpu:
        p = pid
        while p > 1 and p != root:
            p = parent.get(p, 0)
        if p == root:
            total += cpu[pid]
    return total


class Contention(threading.Thread):
    """Samples, every 5 s, how many CPUs the machine's other processes (not ours) keep busy."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []  # (unix time, CPUs busy with others)
        self.done = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        last = (time.monotonic(), _busy_s(), _tree_cpu_s(me))
        while not self.done.wait(5.0):
            now = (time.monotonic(), _busy_s(), _tree_cpu_s(me))
            others = ((now[1] - last[1]) - (now[2] - last[2])) / (now[0] - last[0])
            self.samples.append((time.time(), max(0.0, others)))
            last = now

    def summary(self) -> Figures:
        busy = [o for _, o in self.samples]
        return {
            "others_mean_cpus": sum(busy) / len(busy) if busy else None,
            "others_max_cpus": max(busy, default=None),
            "others_busy_share": sum(o > 0.5 for o in busy) / len(busy) if busy else None,
            "others_samples": self.samples,
        }


class Server:
    """bench/health_server.py in the lab's server namespace."""

    def __init__(self, lab: Lab, mode: str, lifetime: float) -> None:
        argv = [PY, "-m", "bench.health_server", "--reals", str(lab.reals), "--mode", mode]
        self.proc = lab.spawn(lab.server, [*argv, "--lifetime", str(lifetime)], f"server-{mode}")
        self.lines = Lines(self.proc, "health_server")
        line = self.lines.next(START_ALLOWANCE)
        if line != "ready":
            raise RuntimeError(f"health_server said {line!r}")

    def cpu(self) -> float:
        """CPU seconds the server has used (user + sys)."""
        u, k = _cpu_ticks(self.proc.pid)
        return (u + k) / os.sysconf("SC_CLK_TCK")

    def count(self) -> int:
        """Connections served so far."""
        os.kill(self.proc.pid, signal.SIGUSR1)
        line = self.lines.next(60)
        word, n, _ = line.split()
        assert word == "count", line
        return int(n)


# --------------------------------------------------------------- ipvsmgr


def runner(kind: str, reals: int, duration: float, warmup: float) -> None:
    """The checker process (in the client namespace): prints window-start, window-end, then JSON."""
    die_with_parent()
    raise_nofile()
    import asyncio

    print(json.dumps(asyncio.run(_measure(kind, reals, duration, warmup))), flush=True)


async def _measure(kind: str, reals: int, duration: float, warmup: float) -> Figures:
    import asyncio
    import resource

    from healthchecks.result import Target
    from healthchecks.scheduler import ScheduledCheck, Scheduler, SupportsCheck

    checker: SupportsCheck
    if kind == "tcp":
        from healthchecks.checkers.tcp import TcpCheck

        checker = TcpCheck()
    else:
        from healthchecks.checkers.http import HttpCheck

        checker = HttpCheck()
    checks = [
        ScheduledCheck(key=(a, p), checker=checker, target=Target(a, p), interval=INTERVAL, timeout=TIMEOUT)
        for a, p in endpoints(reals)
    ]

    def cpu() -> tuple[float, float]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime, ru.ru_stime

    def kernel_events() -> tuple[int, int, int]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_minflt, ru.ru_nvcsw, ru.ru_nivcsw

    coalesce = os.environ.get("HCBENCH_COALESCE")  # an experiment knob: the timer grid, seconds
    sched = Scheduler(coalesce=float(coalesce)) if coalesce else Scheduler()
    sched.update(checks)
    try:
        await asyncio.sleep(warmup)
        s0, (u0, k0), t0, ev0 = sched.snapshot(), cpu(), time.monotonic(), kernel_events()
        started = time.time()
        print("window-start", flush=True)
        p50s: list[float] = []
        p99s: list[float] = []
        sampling = 0.0
        end = t0 + duration
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(1.0, left))
            c = time.process_time()
            snap = sched.snapshot()
            sampling += time.process_time() - c
            p50s.append(snap.lag_p50)
            p99s.append(snap.lag_p99)
        (u1, k1), t1, ev1 = cpu(), time.monotonic(), kernel_events()
        s1 = sched.snapshot()
        print("window-end", flush=True)
        reasons: Counter[str] = Counter()
        keys = sched.keys()  # Scheduler.keys() makes a list
        for key in keys:
            st = sched.state(key)
            if st is not None and st.last is not None and not st.last.ok:
                reasons[st.last.reason] += 1
    finally:
        await sched.close()
    window = t1 - t0
    runs = s1.runs - s0.runs
    cpu_s = (u1 - u0) + (k1 - k0) - sampling
    p50s.sort()
    return {
        "tool": "ipvsmgr",
        "kind": kind,
        "reals": reals,
        "window_s": window,
        "runs": runs,
        "nominal_runs": reals * window / INTERVAL,
        "runs_per_s": runs / window,
        "failures": s1.failures - s0.failures,
        "skipped": s1.skipped - s0.skipped,
        "cpu_user_s": u1 - u0,
        "cpu_sys_s": k1 - k0,
        "cpu_s": cpu_s,
        "sampling_cpu_s": sampling,
        **_per_run(ev0, ev1, runs),
        "cpu_per_1000": 1000 * cpu_s / runs if runs else None,
        "cpu_share": cpu_s / window,
        "lag_p50_ms": 1000 * p50s[len(p50s) // 2] if p50s else None,
        "lag_p99_ms": 1000 * max(p99s) if p99s else None,
        "lag_p99_median_ms": 1000 * sorted(p99s)[len(p99s) // 2] if p99s else None,
        "lag_samples": len(p99s),
        "window_start_unix": started,
        "lag_max_ms": 1000 * s1.lag_max,
        "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "down_at_end": sum(reasons.values()),
        "reasons_at_end": dict(reasons.most_common(5)),
    }


def run_ipvsmgr(lab: Lab, kind: str, duration: float, warmup: float) -> Figures:
    server = Server(lab, kind, START_ALLOWANCE + warmup + duration + 120)
    argv = [PY, "-m", "bench.health_checks", "--role", "runner", "--kinds", kind]
    argv += ["--reals", str(lab.reals), "--duration", str(duration), "--warmup", str(warmup)]
    proc = lab.spawn(lab.client, argv, f"ipvsmgr-{kind}-{lab.reals}")
    lines = Lines(proc, "ipvsmgr checker process")
    try:
        line = lines.next(START_ALLOWANCE + warmup)
        assert line == "window-start", line
        c0, sc0, b0 = server.count(), server.cpu(), _busy_s()
        traced = _strace_bg(proc.pid)
        line = lines.next(duration + 120)
        assert line == "window-end", line
        c1, sc1, b1 = server.count(), server.cpu(), _busy_s()
        r: Figures = json.loads(lines.next(120))
    except (TimeoutError, EOFError, AssertionError) as e:
        err = (lab.work / f"ipvsmgr-{kind}-{lab.reals}.err").read_text()[-3000:]
        raise RuntimeError(f"ipvsmgr run failed: {e}\n{err}") from None
    proc.wait(timeout=120)
    if traced is not None:
        traced.join()
        r["strace"] = traced.name
    r["server_count"] = c1 - c0
    r["server_cpu_s"] = sc1 - sc0
    r["machine_busy_cpus"] = (b1 - b0) / r["window_s"]
    return r


# --------------------------------------------------------------- keepalived


def keepalived_conf(reals: int) -> str:
    by_address: dict[str, list[int]] = {}
    for a, p in endpoints(reals):
        by_address.setdefault(a, []).append(p)
    out = ["global_defs {", "    router_id hcbench", "}"]
    for i, (address, ports) in enumerate(by_address.items()):
        out += [
            f"virtual_server {VIP_NET}{i + 1} 80 {{",
            f"    delay_loop {INTERVAL:g}",
            "    lb_algo rr",
            "    lb_kind NAT",
            "    protocol TCP",
        ]
        for port in ports:
            out += [
                f"    real_server {address} {port} {{",
                "        weight 1",
                f"        TCP_CHECK {{\n            connect_timeout {TIMEOUT:g}\n        }}",
                "    }",
            ]
        out.append("}")
    return "\n".join(out) + "\n"


def _per_run(ev0: tuple[int, int, int], ev1: tuple[int, int, int], runs: int) -> Figures:
    """Minor page faults and context switches per check: kernel work that
    strace does not see (each is emulated, hence dear, under TCG)."""
    names = ("minflt_per_run", "vcsw_per_run", "ivcsw_per_run")
    return {n: (b - a) / runs if runs else None for n, a, b in zip(names, ev0, ev1, strict=True)}


def _kernel_events(pid: int) -> tuple[int, int, int]:
    minflt = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])
    vcsw, ivcsw = _status(pid, "voluntary_ctxt_switches"), _status(pid, "nonvoluntary_ctxt_switches")
    return minflt, int(vcsw), int(ivcsw)


def _cpu_ticks(pid: int) -> tuple[int, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime (fields 14 and 15)


def _status(pid: int, key: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(key)


def _wait_pidfile(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"keepalived exited ({proc.returncode}) before writing {path.name}")
        try:
            pid = int(path.read_text().strip())
            if Path(f"/proc/{pid}").exists():
                return pid
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"keepalived wrote no {path}")


def run_keepalived(lab: Lab, exe: str, duration: float, warmup: float) -> Figures:
    server = Server(lab, "tcp", START_ALLOWANCE + 2 * warmup + duration + 120)
    conf = lab.work / f"keepalived-{lab.reals}.conf"
    conf.write_text(keepalived_conf(lab.reals))
    pidf, cpidf = lab.work / "keepalived.pid", lab.work / "checkers.pid"
    pidf.unlink(missing_ok=True)
    cpidf.unlink(missing_ok=True)
    # -n foreground, -C checker only, -l log to the console, -D detailed, -G no syslog,
    # -R no respawn (a dead checker fails the run), -I leave IPVS as is on exit (the namespace goes).
    argv = [exe, "-n", "-C", "-l", "-D", "-G", "-R", "-I", "-f", str(conf), "-p", str(pidf), "-c", str(cpidf)]
    bound = START_ALLOWANCE + 2 * warmup + duration + 60
    log = lab.work / f"keepalived-{lab.reals}.err"
    proc = lab.spawn(lab.client, argv, f"keepalived-{lab.reals}", bound=bound)
    parent = _wait_pidfile(pidf, proc, START_ALLOWANCE)
    lab.stray_pids.append(parent)
    checker = _wait_pidfile(cpidf, proc, START_ALLOWANCE)
    lab.stray_pids.append(checker)
    if int(_status(checker, "PPid")) != parent:
        raise RuntimeError(f"checker {checker} is not a child of keepalived {parent}")
    # The checker is going once connections arrive at the server; then the same warm-up.
    deadline = time.monotonic() + START_ALLOWANCE
    started = time.monotonic()
    while server.count() == 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"keepalived's checker never connected:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    first_check_s = time.monotonic() - started
    time.sleep(warmup)
    tick = os.sysconf("SC_CLK_TCK")
    started = time.time()
    (u0, k0), c0, sc0, b0, t0 = _cpu_ticks(checker), server.count(), server.cpu(), _busy_s(), time.monotonic()
    ev0 = _kernel_events(checker)
    traced = _strace_bg(checker)
    time.sleep(duration)
    if traced is not None:
        traced.join()
    (u1, k1), c1, sc1, b1, t1 = _cpu_ticks(checker), server.count(), server.cpu(), _busy_s(), time.monotonic()
    ev1 = _kernel_events(checker)
    if proc.poll() is not None:
        raise RuntimeError(f"keepalived exited during the window:\n{log.read_text()[-3000:]}")
    hwm_kib = int(_status(checker, "VmHWM").split()[0])
    parent_hwm_kib = int(_status(parent, "VmHWM").split()[0])
    window = t1 - t0
    checks = c1 - c0
    cpu_s = ((u1 - u0) + (k1 - k0)) / tick
    text = log.read_text(errors="replace")
    return {
        "tool": "keepalived",
        "kind": "tcp",
        "reals": lab.reals,
        "version": _keepalived_version(exe),
        "window_s": window,
        "runs": checks,
        "nominal_runs": lab.reals * window / INTERVAL,
        "runs_per_s": checks / window,
        "cpu_user_s": (u1 - u0) / tick,
        "cpu_sys_s": (k1 - k0) / tick,
        "cpu_s": cpu_s,
        "cpu_per_1000": 1000 * cpu_s / checks if checks else None,
        "cpu_per_1000_nominal": 1000 * cpu_s / (lab.reals * window / INTERVAL),
        **_per_run(ev0, ev1, checks),
        "cpu_share": cpu_s / window,
        "rss_peak_mib": hwm_kib / 1024,
        "parent_rss_peak_mib": parent_hwm_kib / 1024,
        "first_check_after_s": first_check_s,
        "server_count": checks,
        "server_cpu_s": sc1 - sc0,
        "machine_busy_cpus": (b1 - b0) / window,
        "window_start_unix": started,
        "log_removing_service": text.count("Removing service"),
        "log_failed": text.count("failed"),
        **({"strace": traced.name} if traced is not None else {}),
    }


def _strace_bg(pid: int) -> threading.Thread | None:
    """Diagnostics (HCBENCH_STRACE=seconds): `strace -c` of pid for that long,
    in a thread whose name holds the summary once joined. Tracing slows the
    process down: figures of a traced run are not comparable."""
    secs = os.environ.get("HCBENCH_STRACE")
    if not secs or not shutil.which("strace"):
        return None

    def body(secs: str) -> None:
        p = subprocess.run(
            ["timeout", "-s", "INT", secs, "strace", "-c", "-f", "-p", str(pid)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        t.name = p.stderr[-3000:]

    t = threading.Thread(target=body, args=(secs,), daemon=True)
    t.start()
    return t


def _keepalived_version(exe: str) -> str:
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    return (proc.stdout + proc.stderr).strip().splitlines()[0]


# --------------------------------------------------------------- orchestration


def measure(
    reals_list: list[int], kinds: list[str], duration: float, warmup: float, keepalived: bool
) -> Figures:
    """All runs on this kernel (host, or inside the VM); returns the raw figures."""
    raise_nofile()
    for name in reap_stale_namespaces():
        print(f"deleted {name}, left by a killed earlier run", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="hcbench-"))
    out: Figures = {"where": "vm" if IN_VM else "host", "duration": duration, "warmup": warmup}
    out["cpus"] = os.cpu_count()
    out["loadavg_start"] = os.getloadavg()
    out["runs"] = runs = []
    exe = shutil.which("keepalived") if keepalived else None
    if keepalived and exe is None:
        out["keepalived_missing"] = True
        print("keepalived is not installed (apt-get install keepalived): no baseline", file=sys.stderr)
    try:
        for reals in reals_list:
            for kind in kinds:
                with Lab(reals, work) as lab:
                    runs.append(run_ipvsmgr(lab, kind, duration, warmup))
                print(_line(runs[-1]), file=sys.stderr, flush=True)
                if exe is not None and kind == "tcp":
                    with Lab(reals, work) as lab:
                        runs.append(run_keepalived(lab, exe, duration, warmup))
                    print(_line(runs[-1]), file=sys.stderr, flush=True)
    except BaseException:
        print(f"(logs kept in {work})", file=sys.stderr)
        raise
    shutil.rmtree(work, ignore_errors=True)
    out["loadavg_end"] = os.getloadavg()
    return out


def in_vm(args: argparse.Namespace) -> Figures:
    from tests.vm import run_in_vm, why_no_vm

    why = why_no_vm()
    if why:
        raise SystemExit(f"cannot boot the VM: {why}")
    out = tempfile.mkdtemp(prefix="hcbench-vm-")
    res = os.path.join(out, "result.json")
    inner = [
        PY, "-m", "bench.health_checks", "--where", "inside", "--reals", args.reals,
        "--kinds", args.kinds or "tcp", "--duration", str(args.duration), "--warmup", str(args.warmup),
    ]  # fmt: skip
    if args.no_keepalived:
        inner.append("--no-keepalived")
    cmd = (
        f"cd {shlex.quote(str(ROOT))} && IPVSMGR_IN_VM=1 PYTHONPATH={shlex.quote(str(ROOT))} "
        f"HCBENCH_COALESCE={shlex.quote(os.environ.get('HCBENCH_COALESCE', ''))} "
        f"HCBENCH_STRACE={shlex.quote(os.environ.get('HCBENCH_STRACE', ''))} "
        f"{shlex.join(inner)} > {shlex.quote(res)} 2> {shlex.quote(res)}.err"
    )
    sets = len(args.reals.split(",")) * 2
    timeout = 600 + sets * (2 * START_ALLOWANCE + 2 * args.warmup + args.duration + 300)
    start = time.monotonic()
    contention = Contention()
    contention.start()
    try:
        proc = run_in_vm(cmd, out, timeout=timeout, memory="4G")
    finally:
        contention.done.set()
        contention.join()
    try:
        r: Figures = json.loads(Path(res).read_text().strip().splitlines()[-1])
    except (FileNotFoundError, IndexError, ValueError):
        err = Path(res + ".err").read_text() if os.path.exists(res + ".err") else proc.stderr
        raise SystemExit(f"the benchmark failed inside the VM:\n{err[-4000:]}") from None
    r["vm_total_s"] = time.monotonic() - start
    r["host"] = contention.summary()
    shutil.rmtree(out, ignore_errors=True)
    return r


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def _line(r: Figures) -> str:
    per = r["cpu_per_1000"]
    return (
        f"{r['tool']} {r['kind']} x {r['reals']}: {r['runs']:,} checks in {r['window_s']:.1f} s "
        f"({r['runs_per_s']:,.0f}/s of {r['reals'] / INTERVAL:,.0f}/s), "
        f"CPU {r['cpu_s']:.2f} s (user {r['cpu_user_s']:.2f}), "
        f"{'-' if per is None else f'{per:.4f}'} s per 1,000"
        + (
            f"; per check {r['minflt_per_run']:.3f} faults, "
            f"{r['vcsw_per_run']:.3f}+{r['ivcsw_per_run']:.3f} cs"
            if r.get("minflt_per_run") is not None
            else ""
        )
    )


def _host_others(res: Figures, r: Figures) -> float | None:
    """Mean CPUs that host processes other than our VM kept busy during run r's window."""
    samples = res.get("host", {}).get("others_samples") or []
    start = r["window_start_unix"]
    inside = [o for t, o in samples if start + 5 <= t <= start + r["window_s"] + 5]
    return sum(inside) / len(inside) if inside else None


def report(res: Figures) -> str:
    lines = [
        f"{res['where']}: {res['cpus']} CPUs, window {res['duration']:g} s after a"
        f" {res['warmup']:g} s warm-up, interval {INTERVAL:g} s, timeout {TIMEOUT:g} s",
        "load average at start / end: {:.2f} / {:.2f} (1 min)".format(
            res["loadavg_start"][0], res["loadavg_end"][0]
        ),
    ]
    by: dict[tuple[str, str, int], Figures] = {}
    for r in res["runs"]:
        by[(r["tool"], r["kind"], r["reals"])] = r
        lines.append("")
        lines.append(f"{r['tool']} {r['kind'].upper()} checks, {r['reals']:,} reals")
        lines.append(
            f"  checks run         {r['runs']:,} in {r['window_s']:.1f} s = {r['runs_per_s']:,.0f}/s"
            f" (nominal {r['reals'] / INTERVAL:,.0f}/s)"
        )
        if r["tool"] == "ipvsmgr":
            lines.append(
                f"  failed / skipped   {r['failures']:,} / {r['skipped']:,}"
                f"   (server served {r['server_count']:,}; down at end {r['down_at_end']:,}"
                f"{' ' + json.dumps(r['reasons_at_end']) if r['reasons_at_end'] else ''})"
            )
        else:
            lines.append(
                f"  counted at server  (keepalived log: {r['log_removing_service']} 'Removing service',"
                f" {r['log_failed']} 'failed'; first check {r['first_check_after_s']:.1f} s after start)"
            )
        lines.append(
            f"  CPU                {r['cpu_s']:.2f} s (user {r['cpu_user_s']:.2f} + sys {r['cpu_sys_s']:.2f})"
            f" = {100 * r['cpu_share']:.0f}% of a CPU"
        )
        per = r["cpu_per_1000"]
        lines.append(f"  CPU per 1,000      {'-' if per is None else f'{per:.4f} s'}")
        lines.append(
            f"  (server process    {r['server_cpu_s']:.2f} s CPU ="
            f" {100 * r['server_cpu_s'] / r['window_s']:.0f}% of a CPU, not counted)"
        )
        if r["tool"] == "ipvsmgr":
            lines.append(
                f"  schedule lag       p50 {_ms(r['lag_p50_ms'])}, p99 {_ms(r['lag_p99_ms'])}"
                f" (worst of {r['lag_samples']} 1-s samples; median {_ms(r['lag_p99_median_ms'])}),"
                f" max {_ms(r['lag_max_ms'])}"
            )
        lines.append(f"  peak RSS           {r['rss_peak_mib']:.1f} MiB")
        own = (r["cpu_s"] + r.get("sampling_cpu_s", 0.0) + r["server_cpu_s"]) / r["window_s"]
        busy = f"  machine busy       {r['machine_busy_cpus']:.2f} CPUs in the window"
        busy += f" ({r['machine_busy_cpus'] - own:.2f} besides checker and server)"
        host = _host_others(res, r)
        if host is not None:
            busy += f"; on the host, other processes than this VM: {host:.2f} CPUs"
        lines.append(busy)
        if r["tool"] == "ipvsmgr" and res["where"] == "host":
            p99 = r["lag_p99_ms"]
            ok = p99 is not None and p99 <= 50
            lines.append(f"  target p99 lag <= 50 ms on the host: {'met' if ok else 'NOT met'}")
    ratios = []
    for (tool, kind, reals), k in by.items():
        i = by.get(("ipvsmgr", kind, reals))
        if tool == "keepalived" and i is not None and i["cpu_per_1000"] and k["cpu_per_1000"]:
            ratio = i["cpu_per_1000"] / k["cpu_per_1000"]
            ratios.append(
                f"  {reals:,} reals: ipvsmgr {i['cpu_per_1000']:.4f} / keepalived {k['cpu_per_1000']:.4f}"
                f" s per 1,000 = {ratio:.2f}x   target <= 1.5x ({'met' if ratio <= 1.5 else 'NOT met'})"
            )
    if ratios:
        lines += ["", "CPU per check, ipvsmgr / keepalived (same VM, same server):", *ratios]
    host = res.get("host")
    if host and host["others_mean_cpus"] is not None:
        lines += [
            "",
            f"host during the VM run ({res['vm_total_s']:.0f} s): other processes kept"
            f" {host['others_mean_cpus']:.2f} CPUs busy on average (max {host['others_max_cpus']:.2f};"
            f" {100 * host['others_busy_share']:.0f}% of 5-s samples above 0.5 CPU)",
        ]
    if res.get("keepalived_missing"):
        lines += ["", "keepalived is not installed (apt-get install keepalived): no baseline"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--where", choices=("host", "vm", "inside"), default="host")
    ap.add_argument("--reals", default="5000", help="reals per run; a comma list runs each (e.g. 5000,500)")
    ap.add_argument("--kinds", default=None, help="tcp,http (host default) or tcp (vm default)")
    ap.add_argument("--duration", type=float, default=60.0, help="measured window, seconds")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds before the window")
    ap.add_argument("--no-keepalived", action="store_true", help="vm: skip the keepalived baseline")
    ap.add_argument("--json", help="also write the raw figures here")
    ap.add_argument("--role", choices=("runner",), help=argparse.SUPPRESS)
    args = ap.parse_args()
    reals = [int(n) for n in args.reals.split(",")]
    if args.role == "runner":
        runner(args.kinds, reals[0], args.duration, args.warmup)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    if args.where == "inside":
        kinds = (args.kinds or "tcp").split(",")
        print(json.dumps(measure(reals, kinds, args.duration, args.warmup, not args.no_keepalived)))
        return
    if args.where == "vm":
        res = in_vm(args)
    else:
        if os.geteuid() != 0:
            raise SystemExit("needs root (network namespaces)")
        res = measure(reals, (args.kinds or "tcp,http").split(","), args.duration, args.warmup, False)
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
