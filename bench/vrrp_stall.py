"""Benchmark: does control-plane work stall the VRRP master's adverts?

    python -m bench.vrrp_stall [--services 1000] [--peers keepalived,ipvsmgr] [--scenarios a,b,c,d,e,f]

On the host this boots the virtme-ng VM (tests/vm.py, Debian's kernel: IPVS)
and re-runs itself inside; tests/kernel/test_vrrp_stall.py runs the same lab
(`run_all`) and asserts on it. Inside the VM, once per peer kind:

- namespaces lb1 and lb2 joined by one veth (198.18.250.1 / .2 on eth0);
- lb1 runs `ipvsmgr run` as VRRP master (VRID 51, priority 150, VRRPv3,
  advert_interval 100ms, VIP 198.18.250.100/24) with N virtual servers x 10
  NAT reals (bench/gen.py: VIPs 198.18.x.y:80, reals 198.19.x.y:8000), a
  TCP check on every real (interval --check-interval, `start: up`, rise 1):
  198.19.0.0/16 is a local route in lb1 and one small listener process
  there accepts every check, so every real is up (a healthy site's steady
  state: no check transitions during the measurements). Metrics on
  127.0.0.1:19474 in lb1, control socket in the work directory;
- lb2 runs the peer as BACKUP (priority 100, same VRID): keepalived 2.2.7,
  or a second `ipvsmgr run` with only the VRRP instance;
- an AF_PACKET socket on lb2's eth0 (a raw socket in lb2's namespace, kernel
  receive timestamps via SO_TIMESTAMPNS, so the harness's own load cannot
  skew them) records every VRRP packet: lb1's adverts as they arrive at lb2,
  and any advert lb2 sends. lb2's state changes come from its log
  (keepalived "Entering X STATE", ipvsmgr "VRRP instance vi_1 X -> Y").

Scenarios, each measured from its trigger until the daemon has finished the
work (the kernel shows the change, or the refusal is logged, or every
request is answered) and its log has been quiet for 1 s, plus --tail s:

  a  SIGHUP reload of a valid file changing 10% of the weights (one real per
     virtual server: N edits)
  b  SIGHUP reload of the same-size file with one mistake (a port of 80000)
  c  SIGHUP reload of a YAML alias bomb (--bomb-levels nested levels of ten,
     10^levels leaves, referenced twice from one virtual server's
     scheduler_flags); the daemon is killed if its process tree's RSS passes
     --rss-limit MiB or no outcome is logged within --bomb-timeout s (both
     recorded; the window ends at the kill). Where the anchors are defined
     does not matter; what matters is that something walks the expansion: an
     unknown key or a wrong type holding it is refused at once, a list that
     must have unique items gets compared (jsonschema, once the fast
     validator has said "invalid"). The default timeout leaves room for a
     daemon that answers late: at 2 N in the VM a reload waits for the
     running resync round and a loader process starts in seconds
  d  --requests GET /metrics scrapes and --requests control-socket `status`
     requests (what `ipvsmgr status` sends; 400 CLI processes would cost 2.6 s
     of CPU each in the VM), spread evenly over --request-window s, each
     waiting up to --request-timeout s for its answer
  e  SIGHUP reload adding N new virtual servers x 10 reals (N + 10 N = ~11,000
     netlink operations reconciled by the daemon)
  f  every check at --flap-check-interval (a reload), then 20% of the reals
     (198.19.0.0/21, a `prohibit` route in lb1's local table: connects fail
     at once) down and up every --flap-period s for --flap-window s; the
     checks the daemon ran per second (ipvsmgr_health_checks_total) are
     noted: the largest rate it sustains. Then back to --check-interval

Run order is a, b, d, f, e, c. After d, lb1 is restarted (kill -9, started on
the same file; lb2 takes over and lb1 preempts it again, all outside any
window) when a request was left unanswered: the daemon would still be working
through the queue during the next scenario. c comes last because it may end
with lb1 killed (then nothing follows it; a restart at N = 1,000 costs 30-100
s in the VM), so it runs on the doubled table e left: a reload of the bomb is
refused or not whatever the table, and while lb1 sends nothing lb2 can change
state only once. A baseline window of --baseline s with nothing triggered
comes first.

Per scenario: advert gaps of lb1 seen at lb2 (p50 / p99 / max, an advert
still missing at the window's end counts as an open gap), lb2's state
changes, lb2's adverts (priority > 0: lb2 acted as master while lb1, stalled,
had not given mastership up: both master), lb1's peak RSS. The acceptance
(tests/kernel) is max gap <= 2 x the advert interval and no lb2 state change.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gen import config as gen_config  # noqa: E402
from bench.gen import real, real_port, vip  # noqa: E402
from ipvsmgr.lab import enter, in_netns, sh  # noqa: E402

PY = sys.executable
LB1, LB2 = "198.18.250.1", "198.18.250.2"
VIP = "198.18.250.100"
VRID = 51
INTERVAL = 0.1  # advert_interval: 100ms
REALS = 10
METRICS_PORT = 19474
REAL_ROUTE = "198.19.0.0/16"  # bench/gen.py's reals

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35  # also SCM_TIMESTAMPNS (asm-generic/socket.h)

SCENARIOS: dict[str, str] = {
    "baseline": "nothing triggered",
    "a": "reload: 10% of weights changed",
    "b": "reload: same-size file, one mistake",
    "c": "reload: YAML alias bomb",
    "d": "metrics scrapes + status requests",
    "e": "reload: N x 10 added (~11k ops)",
    "f": "checks at --flap-check-interval, 20% of reals flapping",
}
RUN_ORDER = ("a", "b", "d", "f", "e", "c")
FLAP_ROUTE = "198.19.0.0/21"  # reals 0..2047 of bench/gen.py: 20% of 10,000


@dataclass(frozen=True)
class Options:
    services: int = 1000
    peers: tuple[str, ...] = ("keepalived", "ipvsmgr")
    scenarios: tuple[str, ...] = ("a", "b", "c", "d", "e", "f")
    check_interval: float = 30.0
    # f: every real checked this often: 10 s is 1,000 checks/s at 1,000 x 10, about what the
    # TCG VM sustains (bench/RESULTS.md: 1,080/s saturated); 1 s (10,000/s) saturates the daemon
    flap_check_interval: float = 10.0
    flap_window: float = 20.0  # f: seconds of flapping
    flap_period: float = 2.0  # f: the flapping reals are down, then up, this long each
    requests: int = 200
    request_window: float = 10.0
    request_timeout: float = 30.0
    bomb_levels: int = 9
    bomb_timeout: float = 90.0
    rss_limit_mib: float = 1536.0
    baseline: float = 10.0
    tail: float = 2.0
    work_timeout: float = 240.0  # one scenario's work, a, b, e
    start_timeout: float = 600.0  # lb1 up with its table and master


# ------------------------------------------------------------------ configurations


def vrrp_section(priority: int) -> str:
    return f"""\
vrrp:
  instances:
    - name: vi_1
      interface: eth0
      vrid: {VRID}
      priority: {priority}
      version: 3
      advert_interval: {round(INTERVAL * 1000)}ms
      virtual_addresses: [{VIP}/24]
"""


def lb1_config(
    services: int, check_interval: float, weight_of: dict[tuple[int, int], int] | None = None
) -> str:
    check = (
        f"    health_check: {{type: tcp, interval: {check_interval:g}s, timeout: 2s, rise: 1, start: up}}\n"
    )
    text = gen_config(services, REALS, weight_of)
    text = text.replace("    scheduler: wrr\n", "    scheduler: wrr\n" + check)
    return text + vrrp_section(150)


def ten_percent(services: int) -> dict[tuple[int, int], int]:
    """Real 0 of every virtual server gets weight 2: 10% of the reals."""
    return {(i, 0): 2 for i in range(services)}


def with_mistake(text: str, services: int) -> str:
    """One real's port out of range (80000), in the middle of the file."""
    i = services // 2
    n = i * REALS + REALS // 2
    line = f"{{address: {real(n)}, port: {real_port(n)},"
    assert text.count(line) == 1
    return text.replace(line, f"{{address: {real(n)}, port: 80000,")


def alias_bomb(levels: int) -> str:
    """`levels` nested lists of ten (10^levels strings once expanded), referenced twice
    from one virtual server's scheduler_flags (a list that must have unique items:
    the validator compares the two). The anchors sit in top-level keys, which are
    themselves errors; the file is invalid whatever the loader does with it."""
    out = ["x-l0: &l0 [" + ", ".join(["lol"] * 10) + "]"]
    for k in range(1, levels):
        out.append(f"x-l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 10) + "]")
    top = f"*l{levels - 1}"
    out.append(
        "virtual_servers:\n  - name: bomb\n    address: 198.18.249.1\n    port: 80\n"
        f"    scheduler_flags: [{top}, {top}]\n    reals: [{{address: 198.19.255.1, port: 8000}}]"
    )
    return "\n".join(out) + "\n" + vrrp_section(150)


def keepalived_conf(priority: int) -> str:
    return f"""\
global_defs {{
    router_id lb2
    vrrp_version 3
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id {VRID}
    priority {priority}
    advert_int {INTERVAL:g}
    virtual_ipaddress {{
        {VIP}/24
    }}
}}
"""


LISTENER = """\
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in map(int, sys.argv[1:]):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(4096)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        while True:
            try:
                conn, _ = key.fileobj.accept()
            except BlockingIOError:
                break
            conn.close()
"""


# ------------------------------------------------------------------ observation


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Advert:
    at: float  # kernel receive time, time.time() scale
    src: str
    priority: int
    outgoing: bool  # sent by lb2


class Capture(threading.Thread):
    """Every VRRP packet (our VRID) through lb2's eth0, both directions, kernel-timestamped."""

    def __init__(self, ns: str) -> None:
        super().__init__(daemon=True, name="capture")
        self.ns = ns
        self.adverts: list[Advert] = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            enter(self.ns)
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as s:
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                s.bind(("eth0", 0))
                s.settimeout(0.2)
                self.ready.set()
                space = socket.CMSG_SPACE(16)
                while not self.stop.is_set():
                    try:
                        frame, anc, _, addr = s.recvmsg(2048, space)
                    except TimeoutError:
                        continue
                    at = time.time()
                    for level, kind, data in anc:
                        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                            sec, nsec = struct.unpack("qq", data[:16])
                            at = sec + nsec / 1e9
                    a = _parse(frame, at, addr[2] == PACKET_OUTGOING)
                    if a is not None:
                        self.adverts.append(a)
        except BaseException as e:  # reported by the lab; the thread must not die silently
            self.error = e
            self.ready.set()


def _parse(frame: bytes, at: float, outgoing: bool) -> Advert | None:
    if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    if ip[9] != 112:
        return None
    body = ip[(ip[0] & 0x0F) * 4 :]
    if body[1] != VRID:
        return None
    return Advert(at, socket.inet_ntoa(ip[12:16]), body[2], outgoing)


class Tail(threading.Thread):
    """A log file's lines, each stamped when read (polled every 50 ms)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True, name=f"tail {path.name}")
        self.path = path
        self.lines: list[tuple[float, str]] = []
        self.changed = time.time()  # last time the file grew
        self.stop = threading.Event()

    def run(self) -> None:
        pos, rest = 0, b""
        while not self.stop.is_set():
            try:
                with self.path.open("rb") as f:
                    f.seek(pos)
                    data = f.read()
            except FileNotFoundError:
                data = b""
            if data:
                now = time.time()
                pos += len(data)
                self.changed = now
                *full, rest = (rest + data).split(b"\n")
                self.lines.extend((now, line.decode(errors="replace")) for line in full)
            time.sleep(0.05)

    def mark(self) -> int:
        return len(self.lines)

    def find(self, pattern: str, since: int = 0) -> list[tuple[float, str]]:
        rx = re.compile(pattern)
        return [x for x in self.lines[since:] if rx.search(x[1])]

    def quiet_for(self) -> float:
        return time.time() - self.changed


def tree(pid: int) -> list[int]:
    out = [pid]
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
                    out += tree(int(child))
    return out


def rss_mib(pid: int) -> float:
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for p in tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page
    return total / (1 << 20)


class RssGuard(threading.Thread):
    """Samples the daemon's process tree RSS every 50 ms; SIGKILLs its process group above the limit."""

    def __init__(self, proc: subprocess.Popen[bytes], limit_mib: float) -> None:
        super().__init__(daemon=True, name="rss guard")
        self.proc = proc
        self.limit = limit_mib
        self.samples: list[tuple[float, float]] = []
        self.killed: tuple[float, float] | None = None  # (at, RSS MiB)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.proc.poll() is None:
            rss = rss_mib(self.proc.pid)
            now = time.time()
            self.samples.append((now, rss))
            if rss > self.limit:
                self.killed = (now, rss)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    def peak(self, t0: float, t1: float) -> float:
        return max((r for t, r in self.samples if t0 <= t <= t1), default=0.0)


def percentile(xs: list[float], q: float) -> float:
    """Nearest rank."""
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))]


# ------------------------------------------------------------------ one scenario's outcome


@dataclass
class Row:
    peer: str
    scenario: str
    what: str
    window_s: float = 0.0  # measured window: trigger .. end
    work_s: float | None = None  # trigger .. the daemon finished (None: did not)
    adverts: int = 0  # lb1 adverts (priority > 0) received in the window
    gap_p50_ms: float = float("nan")
    gap_p99_ms: float = float("nan")
    gap_max_ms: float = float("nan")
    bunched: int = 0  # adverts < 20 ms after the previous one (a stalled timer catching up)
    # gaps > 2 x interval: (when the gap began, s after the trigger; its length, ms)
    stalls: list[tuple[float, float]] = field(default_factory=list)
    lb2_changes: int = 0
    lb2_states: list[str] = field(default_factory=list)
    lb2_adverts: int = 0
    dual_master_s: float = 0.0  # time lb2 advertised as master while lb1 had not stepped down
    lb1_peak_rss_mib: float = 0.0
    killed: str | None = None
    notes: list[str] = field(default_factory=list)
    restart_after: bool = False  # lb1 must be restarted before the next scenario

    @property
    def both_master(self) -> bool:
        return self.lb2_adverts > 0


def measure(
    row: Row, capture: Capture, peer_log: Tail, peer_rx: str, t0: float, t1: float, mark: int
) -> None:
    lb1 = sorted(a.at for a in capture.adverts if a.src == LB1 and a.priority > 0)
    before = [t for t in lb1 if t <= t0]
    inside = [t for t in lb1 if t0 < t <= t1]
    times = before[-1:] + inside
    gaps = [b - a for a, b in itertools.pairwise(times)]
    if times:
        gaps.append(t1 - times[-1])  # open gap until the window's end (short when adverts flow)
    # The open gap is only a gap if it is longer than the last closed one would have been:
    # with adverts flowing it is < one interval and cannot raise the max above one.
    row.adverts = len(inside)
    row.bunched = sum(1 for g in gaps if g < INTERVAL / 5)
    ends = times[1:] + [t1]
    row.stalls = [
        (round(start - t0, 2), round(1000 * (end - start), 0))
        for start, end in zip(times, ends, strict=True)
        if end - start > 2 * INTERVAL
    ][:20]
    if gaps:
        row.gap_p50_ms = 1000 * percentile(gaps, 0.5)
        row.gap_p99_ms = 1000 * percentile(gaps, 0.99)
        row.gap_max_ms = 1000 * max(gaps)
    else:
        row.gap_max_ms = 1000 * (t1 - t0)
    lb2 = sorted(a.at for a in capture.adverts if a.src == LB2 and a.priority > 0 and t0 < a.at <= t1)
    row.lb2_adverts = len(lb2)
    spans: list[tuple[float, float]] = []
    for t in lb2:  # each advert holds mastership for one interval
        if spans and t <= spans[-1][1]:
            spans[-1] = (spans[-1][0], t + INTERVAL)
        else:
            spans.append((t, t + INTERVAL))
    row.dual_master_s = round(sum(min(b, t1) - a for a, b in spans), 3)
    changes = [line for at, line in peer_log.find(peer_rx, mark) if at <= t1 + 0.1]
    row.lb2_changes = len(changes)
    row.lb2_states = [_state_of(line, peer_rx) for line in changes]
    row.window_s = round(t1 - t0, 2)


def _state_of(line: str, rx: str) -> str:
    m = re.search(rx, line)
    return m.group(m.lastindex or 0) if m else line


# ------------------------------------------------------------------ the lab


PEER_RX = {
    "keepalived": r"\(VI_1\) Entering (\w+) STATE",
    "ipvsmgr": r"VRRP instance vi_1 \w+ -> (\w+)",
}
RELOADED = r"\breloaded /"  # "reloaded PATH" (not "VRRP reloaded: ...")
REFUSED = r"reload refused"


class StallLab:
    """One pass: lb1 (ipvsmgr, master) and lb2 (the peer) in fresh namespaces."""

    def __init__(self, peer: str, opts: Options, work: Path) -> None:
        self.peer, self.opts, self.work = peer, opts, work
        tag = uuid.uuid4().hex[:6]
        self.ns1, self.ns2 = f"stall1-{tag}", f"stall2-{tag}"
        self.built: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.threads: list[Tail | Capture | RssGuard] = []
        self.capture = Capture(self.ns2)
        self.lb1: subprocess.Popen[bytes] | None = None
        self.lb1_log: Tail | None = None
        self.lb2_log: Tail | None = None
        self.guard: RssGuard | None = None
        self.cfg = work / "lb1.yaml"
        self.socket = work / "lb1.sock"
        self.n_services = opts.services  # services lb1's file has now
        self.lb1_starts = 0
        self.settle_limit = 60.0  # for the next settle()
        self.rss_limit = opts.rss_limit_mib

    # ------------------------------------------------------------ set-up

    def setup(self) -> dict[str, float]:
        t = time.monotonic()
        for ns in (self.ns1, self.ns2):
            sh("ip", "netns", "add", ns)
            self.built.append(ns)
        veth = ["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", self.ns2]
        sh("ip", "-n", self.ns1, *veth)
        for ns, addr in ((self.ns1, LB1), (self.ns2, LB2)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.ns1, "route", "add", "local", REAL_ROUTE, "dev", "lo")
        self.capture.start()
        self.threads.append(self.capture)
        self.capture.ready.wait(10)
        if self.capture.error is not None:
            raise RuntimeError(f"capture on {self.ns2}: {self.capture.error}")
        ports = sorted({real_port(n) for n in range(2 * self.opts.services * REALS)})
        listener = self.spawn(self.ns1, [PY, "-I", "-S", "-c", LISTENER, *map(str, ports)], "listener")
        ready = self.work / "listener.log"
        self.wait(lambda: "ready" in ready.read_text(), 60, "the check listener", listener)
        avail = _mem_available_mib()
        if avail and avail - 384 < self.rss_limit:
            self.rss_limit = avail - 384
        self.cfg.write_text(lb1_config(self.opts.services, self.opts.check_interval))
        lb1_up = self.start_lb1()
        self.start_peer()
        self.settle_limit = 120.0  # lb1's first check round is still logging: the first settle waits longer
        return {"setup_s": round(time.monotonic() - t, 1), "lb1_up_s": round(lb1_up, 1)}

    def spawn(self, ns: str, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        with (self.work / f"{name}.log").open("ab") as log:
            p = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{ns}", *argv],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
        self.procs.append(p)
        return p

    def wait(
        self, cond: Callable[[], bool], limit: float, what: str, proc: subprocess.Popen[bytes] | None = None
    ) -> float:
        start = time.monotonic()
        while not cond():
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{what}: the process exited ({proc.returncode})")
            if time.monotonic() - start > limit:
                raise RuntimeError(f"timed out after {limit:g}s waiting for {what}")
            time.sleep(0.1)
        return time.monotonic() - start

    def start_lb1(self) -> float:
        """`ipvsmgr run` in lb1; returns seconds until its adverts flow and its table is in the kernel."""
        self.lb1_starts += 1
        name = f"lb1-{self.lb1_starts}"
        argv = [
            PY, "-m", "ipvsmgr", "run", "-c", str(self.cfg), "--state-dir", str(self.work / "lb1-state"),
            "--socket", str(self.socket), "--metrics", f"127.0.0.1:{METRICS_PORT}",
        ]  # fmt: skip
        t = time.monotonic()
        since = time.time()
        self.lb1 = self.spawn(self.ns1, argv, name)
        self.lb1_log = Tail(self.work / f"{name}.log")
        self.lb1_log.start()
        self.guard = RssGuard(self.lb1, self.rss_limit)
        self.guard.start()
        self.threads += [self.lb1_log, self.guard]
        last = self.n_services - 1

        def up() -> bool:
            flowing = sum(1 for a in self.capture.adverts[-20:] if a.src == LB1 and a.at > since) >= 5
            return flowing and self.reals_of(last) == REALS

        self.wait(up, self.opts.start_timeout, "lb1 master with its table", self.lb1)
        say(f"{self.peer}: lb1 up ({self.n_services} x {REALS}) after {time.monotonic() - t:.1f}s")
        return time.monotonic() - t

    def start_peer(self) -> None:
        name = f"lb2-{self.peer}"
        if self.peer == "keepalived":
            exe = shutil.which("keepalived") or "/usr/sbin/keepalived"
            conf = self.work / "lb2.conf"
            conf.write_text(keepalived_conf(100))
            pids = [str(self.work / f"lb2.{k}.pid") for k in ("main", "vrrp", "check")]
            argv = [exe, "-n", "-l", "-D", "-P", "-f", str(conf), "-p", pids[0], "-r", pids[1], "-c", pids[2]]
        else:
            conf = self.work / "lb2.yaml"
            conf.write_text(vrrp_section(100))
            argv = [
                PY, "-m", "ipvsmgr", "run", "-c", str(conf), "--state-dir", str(self.work / "lb2-state"),
                "--socket", str(self.work / "lb2.sock"), "--metrics", "off",
            ]  # fmt: skip
        p = self.spawn(self.ns2, argv, name)
        self.lb2_log = Tail(self.work / f"{name}.log")
        self.lb2_log.start()
        self.threads.append(self.lb2_log)
        self.wait(lambda: self.lb2_state() == "BACKUP", 300, f"{self.peer} in BACKUP on lb2", p)

    def lb2_state(self) -> str | None:
        assert self.lb2_log is not None
        found = self.lb2_log.find(PEER_RX[self.peer])
        return _state_of(found[-1][1], PEER_RX[self.peer]).upper() if found else None

    def reals_of(self, i: int) -> int:
        """Reals the kernel (ipvsadm, in lb1) has for virtual server i; -1 if the service is absent."""
        p = subprocess.run(
            ["ip", "netns", "exec", self.ns1, "ipvsadm", "-Ln", "-t", f"{vip(i)}:80"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if p.returncode != 0:
            return -1
        return sum(1 for line in p.stdout.splitlines() if line.split()[:1] == ["->"] and "Remote" not in line)

    def weight_of(self, i: int, j: int) -> int | None:
        n = i * REALS + j
        out = sh("ip", "netns", "exec", self.ns1, "ipvsadm", "-Ln", "-t", f"{vip(i)}:80", check=False)
        for line in out.splitlines():
            words = line.split()
            if len(words) >= 4 and words[0] == "->" and words[1] == f"{real(n)}:{real_port(n)}":
                return int(words[3])
        return None

    def lb1_alive(self) -> bool:
        return self.lb1 is not None and self.lb1.poll() is None

    def settle(self) -> bool:
        """lb1's adverts flow (>= 7 in the last second), lb2 sends none and is BACKUP, lb1's log is
        quiet; False if that is not so within self.settle_limit s (the scenario then runs anyway,
        with a note: today's daemon may never settle under load)."""
        assert self.lb1_log is not None
        start = time.monotonic()
        limit, self.settle_limit = self.settle_limit, 60.0
        while time.monotonic() - start < limit:
            now = time.time()
            recent = [a for a in self.capture.adverts[-60:] if a.at > now - 1.5]
            ours = sum(1 for a in recent if a.src == LB1 and a.priority > 0 and a.at > now - 1.0)
            theirs = sum(1 for a in recent if a.src == LB2 and a.priority > 0)
            if ours >= 7 and theirs == 0 and self.lb2_state() == "BACKUP" and self.lb1_log.quiet_for() > 1.0:
                return True
            time.sleep(0.1)
        return False

    # ------------------------------------------------------------ scenarios

    def run_scenario(self, key: str) -> Row:
        row = Row(self.peer, key, SCENARIOS[key])
        if not self.lb1_alive():
            row.notes.append("not run: lb1 is not running")
            return row
        if not self.settle():
            row.notes.append("not settled before the trigger (lb1 master, lb2 backup, lb1 log quiet)")
        assert self.lb1_log is not None and self.lb2_log is not None and self.guard is not None
        mark1, mark2 = self.lb1_log.mark(), self.lb2_log.mark()
        t0 = time.time()
        done_at = getattr(self, f"_do_{key}")(row, mark1, t0)
        if done_at is not None:
            row.work_s = round(done_at - t0, 2)
            quiet = time.monotonic()
            while self.lb1_alive() and self.lb1_log.quiet_for() < 1.0 and time.monotonic() - quiet < 60:
                time.sleep(0.05)
        end = time.time() + (self.opts.tail if self.lb1_alive() else 0.0)
        while time.time() < end and self.lb1_alive():
            time.sleep(0.05)
        t1 = time.time()
        if self._end_at is not None:  # the harness killed lb1: the window ends there
            t1, self._end_at = min(t1, self._end_at), None
        if self.guard.killed is not None and self.guard.killed[0] >= t0:
            t1 = min(t1, self.guard.killed[0])
            row.killed = f"RSS {self.guard.killed[1]:.0f} MiB > {self.rss_limit:.0f} MiB: SIGKILL"
        elif self.lb1 is not None and self.lb1.returncode is not None and row.killed is None:
            row.notes.append(f"lb1 exited ({self.lb1.returncode})")
        measure(row, self.capture, self.lb2_log, PEER_RX[self.peer], t0, t1, mark2)
        row.lb1_peak_rss_mib = round(self.guard.peak(t0, t1), 1)
        say(f"{self.peer}: {key} {format_row(row)}")
        return row

    def baseline(self) -> Row:
        row = Row(self.peer, "baseline", f"{SCENARIOS['baseline']} ({self.opts.baseline:g} s)")
        assert self.lb2_log is not None and self.guard is not None
        if not self.settle():
            row.notes.append("not settled before the window (lb1 master, lb2 backup, lb1 log quiet)")
        mark2 = self.lb2_log.mark()
        t0 = time.time()
        time.sleep(self.opts.baseline)
        t1 = time.time()
        measure(row, self.capture, self.lb2_log, PEER_RX[self.peer], t0, t1, mark2)
        row.lb1_peak_rss_mib = round(self.guard.peak(t0, t1), 1)
        say(f"{self.peer}: baseline {format_row(row)}")
        return row

    def reload(self, text: str) -> None:
        tmp = self.cfg.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.cfg)
        assert self.lb1 is not None
        os.kill(self.lb1.pid, signal.SIGHUP)

    def _until(self, cond: Callable[[], bool], limit: float, row: Row, what: str) -> float | None:
        start = time.monotonic()
        while self.lb1_alive():
            if cond():
                return time.time()
            if time.monotonic() - start > limit:
                row.notes.append(f"{what} not seen within {limit:g}s")
                return None
            time.sleep(0.1)
        return None

    def _do_a(self, row: Row, mark: int, t0: float) -> float | None:
        n = self.n_services
        self.reload(lb1_config(n, self.opts.check_interval, ten_percent(n)))
        assert self.lb1_log is not None
        log = self.lb1_log

        def done() -> bool:
            return bool(log.find(RELOADED, mark)) and self.weight_of(n - 1, 0) == 2

        return self._until(done, self.opts.work_timeout, row, "the new weights in the kernel")

    def _do_b(self, row: Row, mark: int, t0: float) -> float | None:
        n = self.n_services
        good = lb1_config(n, self.opts.check_interval, ten_percent(n))
        self.reload(with_mistake(good, n))
        assert self.lb1_log is not None
        log = self.lb1_log
        outcome = REFUSED + "|" + RELOADED
        at = self._until(lambda: bool(log.find(outcome, mark)), self.opts.work_timeout, row, "the refusal")
        if log.find(RELOADED, mark):
            row.notes.append("the file with a mistake was ACCEPTED")
        self.cfg.write_text(good)  # the file on disk is valid again (no reload)
        return at

    def _do_e(self, row: Row, mark: int, t0: float) -> float | None:
        n = self.n_services
        weights = ten_percent(n)
        self.reload(lb1_config(2 * n, self.opts.check_interval, weights))
        assert self.lb1_log is not None
        log = self.lb1_log

        def done() -> bool:
            return bool(log.find(RELOADED, mark)) and self.reals_of(2 * n - 1) == REALS

        at = self._until(done, self.opts.work_timeout, row, "the added services in the kernel")
        if at is not None:
            self.n_services = 2 * n
        return at

    def _do_c(self, row: Row, mark: int, t0: float) -> float | None:
        good = self.cfg.read_text()
        self.reload(alias_bomb(self.opts.bomb_levels))
        assert self.lb1_log is not None and self.lb1 is not None
        log = self.lb1_log
        at = self._until(
            lambda: bool(log.find(REFUSED + "|" + RELOADED, mark)), self.opts.bomb_timeout, row, "an outcome"
        )
        if log.find(RELOADED, mark):
            row.notes.append("the alias bomb was ACCEPTED")
        if at is None and self.lb1_alive():
            t = time.time()
            rss = rss_mib(self.lb1.pid)
            os.killpg(self.lb1.pid, signal.SIGKILL)
            self.lb1.wait()
            row.killed = f"no outcome after {self.opts.bomb_timeout:g}s (RSS {rss:.0f} MiB): SIGKILL"
            row.notes.append(f"killed at +{t - t0:.1f}s")
            row.restart_after = True
            # The window ends at the kill: what lb2 does after it is a failover, not a stall.
            self._end_at = t
        self.cfg.write_text(good)
        return at

    _end_at: float | None = None

    def _checks_run(self) -> float | None:
        """ipvsmgr_health_checks_total from lb1's metrics (None if it does not answer in 10 s)."""

        try:
            data = in_netns(self.ns1, lambda: _scrape(10.0))
        except (OSError, RuntimeError):
            return None
        m = re.search(rb"^ipvsmgr_health_checks_total (\S+)$", data, re.M)
        return float(m.group(1)) if m else None

    def _active_opens(self) -> int | None:
        """Tcp ActiveOpens in lb1's namespace (/proc/net/snmp): the connects its checks made."""
        out = sh("ip", "netns", "exec", self.ns1, "cat", "/proc/net/snmp", check=False)
        rows = [line.split() for line in out.splitlines() if line.startswith("Tcp:")]
        if len(rows) < 2 or "ActiveOpens" not in rows[0]:
            return None
        return int(rows[1][rows[0].index("ActiveOpens")])

    def _do_f(self, row: Row, mark: int, t0: float) -> float | None:
        """Every check at --flap-check-interval (a reload), then 20% of the reals down and up
        (a `prohibit` route over them in lb1's local table: connects fail at once) every
        --flap-period s for --flap-window s; the checks run per second are reported."""
        n, opts = self.n_services, self.opts
        assert self.lb1_log is not None
        log = self.lb1_log
        self.reload(lb1_config(n, opts.flap_check_interval))
        # flapping starts once the reload is applied, or anyway after work_timeout (noted)
        self._until(lambda: bool(log.find(RELOADED, mark)), opts.work_timeout, row, "the reload")
        if not self.lb1_alive():
            return None
        before, t_before = self._checks_run(), time.monotonic()
        opens_before = self._active_opens()
        route = ["ip", "-n", self.ns1, "route", "{}", "table", "local", "prohibit", FLAP_ROUTE]
        down = False
        end = time.monotonic() + opts.flap_window
        flaps = 0
        try:
            while time.monotonic() < end and self.lb1_alive():
                sh(*[a.format("del" if down else "add") for a in route], check=False)
                down, flaps = not down, flaps + 1
                time.sleep(opts.flap_period)
        finally:
            if down:
                sh(*[a.format("del") for a in route], check=False)
        opens_after, t_opens = self._active_opens(), time.monotonic()
        after, t_after = self._checks_run(), time.monotonic()
        asked = n * REALS / opts.flap_check_interval
        if before is not None and after is not None:
            rate = (after - before) / (t_after - t_before)
            row.notes.append(f"checks run: {rate:.0f}/s of {asked:.0f}/s asked; {flaps} flaps")
        else:
            row.notes.append(f"lb1's metrics did not answer within 10 s; {flaps} flaps")
        # The kernel's count too (the metrics may not answer on a loaded daemon): TCP
        # connects lb1 started (checks of the reals not behind the prohibit route).
        if opens_before is not None and opens_after is not None:
            sent = (opens_after - opens_before) / (t_opens - t_before)
            row.notes.append(f"TCP check connects (kernel): {sent:.0f}/s of {asked:.0f}/s asked")
        done = time.time()
        # back to the usual interval, outside what this scenario measures
        mark2 = log.mark()
        self.reload(lb1_config(n, opts.check_interval))
        self._until(lambda: bool(log.find(RELOADED, mark2)), opts.work_timeout, row, "the reload back")
        return done

    def _do_d(self, row: Row, mark: int, t0: float) -> float | None:
        results: list[tuple[str, float, float, str | None]] = []  # (kind, start, end, error)
        lock = threading.Lock()
        count = self.opts.requests
        step = self.opts.request_window / (2 * count)
        timeout = self.opts.request_timeout
        ns1, sock = self.ns1, str(self.socket)

        def one(kind: str) -> None:
            start = time.time()
            err: str | None = None
            try:
                if kind == "scrape":
                    enter(ns1)
                    _scrape(timeout)
                else:
                    _status(sock, timeout)
            except Exception as e:
                err = f"{type(e).__name__}: {e}"
            with lock:
                results.append((kind, start, time.time(), err))

        threads = []
        for i in range(2 * count):
            due = t0 + i * step
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            t = threading.Thread(target=one, args=("scrape" if i % 2 == 0 else "status",), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join(max(0.0, t0 + self.opts.request_window + timeout + 5 - time.time()))
        with lock:
            done = list(results)
        for kind in ("scrape", "status"):
            mine = [r for r in done if r[0] == kind]
            ok = [r[2] - r[1] for r in mine if r[3] is None]
            errs = sorted({r[3] for r in mine if r[3] is not None})
            text = f"{kind}: {len(ok)}/{count} answered"
            if ok:
                text += f" (latency p50 {percentile(ok, 0.5):.1f}s, max {max(ok):.1f}s)"
            if errs:
                text += f"; errors: {errs[0][:80]}" + (f" (+{len(errs) - 1} kinds)" if len(errs) > 1 else "")
            row.notes.append(text)
        if len(done) < 2 * count or any(r[3] is not None for r in done):
            row.restart_after = True  # what is still queued in lb1 would run into the next scenario
            return None
        return max(r[2] for r in done)

    def restart_lb1(self) -> float:
        """kill -9 and start again on the same file; seconds until its adverts flow and its table is there."""
        assert self.lb1 is not None
        t = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.lb1.pid, signal.SIGKILL)
        self.lb1.wait()
        for th in (self.lb1_log, self.guard):
            if th is not None:
                th.stop.set()
        # kill -9 leaves the VIP on lb1's eth0: the new daemon removes it until it is master again
        self.start_lb1()
        self.settle_limit = 120.0
        return time.monotonic() - t

    # ------------------------------------------------------------ tear-down

    def close(self) -> None:
        for t in self.threads:
            t.stop.set()
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=30)
        for t in self.threads:
            t.join(timeout=5)
        # a namespace's veth is freed asynchronously after the namespace goes: delete it first
        sh("ip", "-n", self.ns1, "link", "del", "eth0", check=False)
        for ns in self.built:
            sh("ip", "netns", "del", ns, check=False)
        self.built.clear()


def _mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _scrape(timeout: float) -> bytes:
    with socket.create_connection(("127.0.0.1", METRICS_PORT), timeout=timeout) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: lb1\r\n\r\n")
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"answer: {data[:60]!r}")
    return data


def _status(path: str, timeout: float) -> None:
    """The request `ipvsmgr status` sends on the control socket; the reply must say ok."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(b'{"command": "status", "args": {}}\n')
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
    if not json.loads(buf).get("ok"):
        raise RuntimeError(f"reply: {buf[:80]!r}")


def run_pass(peer: str, opts: Options) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"vrrpstall-{peer}-"))
    lab = StallLab(peer, opts, work)
    rows: list[Row] = []
    info: dict[str, Any] = {"peer": peer}
    start = time.monotonic()
    try:
        info.update(lab.setup())
        rows.append(lab.baseline())
        for key in [k for k in RUN_ORDER if k in opts.scenarios]:
            if rows[-1].restart_after or not lab.lb1_alive():
                say(f"{peer}: restarting lb1 before {key}")
                info.setdefault("restarts_s", []).append(round(lab.restart_lb1(), 1))
            rows.append(lab.run_scenario(key))
    except Exception as e:
        info["error"] = f"{type(e).__name__}: {e}"
        say(f"{peer}: {info['error']}")
        for name in (f"lb1-{lab.lb1_starts}", "lb2-keepalived", "lb2-ipvsmgr"):
            with contextlib.suppress(OSError):
                info[f"{name}.log"] = (work / f"{name}.log").read_text(errors="replace")[-3000:]
    finally:
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
    info["pass_s"] = round(time.monotonic() - start, 1)
    info["rss_limit_mib"] = round(lab.rss_limit)
    info["rows"] = [{**asdict(r), "both_master": r.both_master} for r in rows]
    return info


def run_all(opts: Options) -> dict[str, Any]:
    start = time.monotonic()
    passes = [run_pass(peer, opts) for peer in opts.peers]
    return {
        "options": asdict(opts),
        "passes": passes,
        "inside_s": round(time.monotonic() - start, 1),
    }


# ------------------------------------------------------------------ report


def _ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.0f}"


def format_row(r: Row) -> str:
    return (
        f"gap p50/p99/max {_ms(r.gap_p50_ms)}/{_ms(r.gap_p99_ms)}/{_ms(r.gap_max_ms)} ms, "
        f"{r.adverts} adverts in {r.window_s:.1f}s, lb2 changes {r.lb2_changes}, lb2 adverts {r.lb2_adverts}"
        + (f", killed: {r.killed}" if r.killed else "")
    )


def rows_of(result: dict[str, Any]) -> list[Row]:
    """Every pass's rows, each pass in the order baseline, a, b, c, d, e, f."""
    out = []
    order = list(SCENARIOS)
    for p in result["passes"]:
        rows = [Row(**{k: v for k, v in d.items() if k != "both_master"}) for d in p["rows"]]
        out += sorted(rows, key=lambda r: order.index(r.scenario))
    return out


def report(result: dict[str, Any], logs: bool = False) -> str:
    """The table, a line per pass; with `logs`, the end of the daemons' logs of a pass that failed."""
    o = result["options"]
    lines = [
        f"{o['services']} virtual servers x {REALS} reals (TCP check every {o['check_interval']:g}s), "
        f"VRRPv3 advert {INTERVAL * 1000:.0f} ms; target: max gap <= {2 * INTERVAL * 1000:.0f} ms, "
        "0 lb2 state changes",
        "",
        "| peer | scenario | work s | adverts (bunched) | gap p50 / p99 / max ms | lb2 changes | lb2 adverts "
        "| both master | lb1 peak RSS MiB | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows_of(result):
        longest = sorted(r.stalls, key=lambda s: -s[1])[:3]
        text = ", ".join(f"{ms / 1000:.1f}s at {at:+.1f}s" for at, ms in sorted(longest))
        stalls = [f"{len(r.stalls)} gaps > {2 * INTERVAL * 1000:.0f} ms, longest {text}"] if r.stalls else []
        notes = "; ".join(([f"killed: {r.killed}"] if r.killed else []) + stalls + r.notes)
        work = "-" if r.work_s is None else f"{r.work_s:.1f}"
        shown = r.lb2_states[:4] + (["..."] if len(r.lb2_states) > 4 else [])
        states = f" ({', '.join(shown)})" if shown else ""
        both = f"yes ({r.dual_master_s:.1f} s)" if r.both_master else "no"
        lines.append(
            f"| {r.peer} | {r.scenario}: {r.what} | {work} | {r.adverts} ({r.bunched}) | "
            f"{_ms(r.gap_p50_ms)} / {_ms(r.gap_p99_ms)} / {_ms(r.gap_max_ms)} | {r.lb2_changes}{states} | "
            f"{r.lb2_adverts} | {both} | {r.lb1_peak_rss_mib:.0f} | {notes} |"
        )
    lines.append("")
    for p in result["passes"]:
        extra = f", lb1 restarted after {p['restarts_s']} s" if p.get("restarts_s") else ""
        extra += f", error: {p['error']}" if "error" in p else ""
        for k, v in p.items():
            if logs and k.endswith(".log"):
                extra += f"\n--- {k} (end) ---\n{v}"
        lines.append(
            f"{p['peer']}: pass {p['pass_s']:.0f}s (set-up {p.get('setup_s', '-')}s, lb1 up after "
            f"{p.get('lb1_up_s', '-')}s), RSS limit {p['rss_limit_mib']} MiB{extra}"
        )
    vm = f"; VM run (boot included) {result['vm_s']:.0f}s" if "vm_s" in result else ""
    lines.append(f"inside the VM: {result['inside_s']:.0f}s{vm}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Options()
    ap.add_argument("--services", type=int, default=d.services)
    ap.add_argument("--peers", default=",".join(d.peers))
    ap.add_argument("--scenarios", default=",".join(d.scenarios))
    ap.add_argument("--check-interval", type=float, default=d.check_interval)
    ap.add_argument("--requests", type=int, default=d.requests)
    ap.add_argument("--request-window", type=float, default=d.request_window)
    ap.add_argument("--request-timeout", type=float, default=d.request_timeout)
    ap.add_argument("--bomb-levels", type=int, default=d.bomb_levels)
    ap.add_argument("--bomb-timeout", type=float, default=d.bomb_timeout)
    ap.add_argument("--rss-limit", type=float, default=d.rss_limit_mib, help="MiB")
    ap.add_argument("--flap-check-interval", type=float, default=d.flap_check_interval)
    ap.add_argument("--flap-window", type=float, default=d.flap_window)
    ap.add_argument("--flap-period", type=float, default=d.flap_period)
    ap.add_argument("--baseline", type=float, default=d.baseline)
    ap.add_argument("--tail", type=float, default=d.tail)
    ap.add_argument("--json", help="also write the raw figures here")
    args = ap.parse_args()
    opts = Options(
        services=args.services, peers=tuple(args.peers.split(",")),
        scenarios=tuple(args.scenarios.split(",")),
        check_interval=args.check_interval, requests=args.requests, request_window=args.request_window,
        request_timeout=args.request_timeout, bomb_levels=args.bomb_levels,
        bomb_timeout=args.bomb_timeout, rss_limit_mib=args.rss_limit, baseline=args.baseline, tail=args.tail,
        flap_check_interval=args.flap_check_interval, flap_window=args.flap_window,
        flap_period=args.flap_period,
    )  # fmt: skip
    if os.environ.get("IPVSMGR_IN_VM") == "1":
        print(json.dumps(run_all(opts)))
        return
    from bench.vmrun import run_module_in_vm

    argv = [
        "--services", str(opts.services), "--peers", ",".join(opts.peers),
        "--scenarios", ",".join(opts.scenarios), "--check-interval", str(opts.check_interval),
        "--requests", str(opts.requests), "--request-window", str(opts.request_window),
        "--request-timeout", str(opts.request_timeout),
        "--bomb-levels", str(opts.bomb_levels), "--bomb-timeout", str(opts.bomb_timeout),
        "--rss-limit", str(opts.rss_limit_mib), "--baseline", str(opts.baseline), "--tail", str(opts.tail),
        "--flap-check-interval", str(opts.flap_check_interval), "--flap-window", str(opts.flap_window),
        "--flap-period", str(opts.flap_period),
    ]  # fmt: skip
    start = time.monotonic()
    result = run_module_in_vm("bench.vrrp_stall", argv, timeout=3600)
    result["vm_s"] = time.monotonic() - start
    print(report(result, logs=True))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
