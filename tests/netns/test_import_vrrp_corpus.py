"""The VRRP half of `ipvsmgr import keepalived` for every corpus file with VRRP in it.

keepalived 2.2.7 (VRRP process only) runs the file in a namespace holding every
interface the file names, then ipvsmgr runs its import in the same namespace.
A sniffer on the far end of each interface (an independent reader, AF_PACKET in
a switch namespace) records what each one sends. They must send the same
adverts, byte for byte with the same IP header fields, for every (interface,
VRID, family) once settled; the same priority-0 adverts when they stop; and
leave the same addresses and VMAC links on the node.

The samples use private addresses (192.168/16, 10/8); both runs get the file
with them mapped into 198.18.0.0/15, the only range tests may use.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from ipvsmgr.migrate import command
from tests import vm
from tests.kacorpus import DATA, SAMPLES, copy_rewritten
from tests.netns.lab import in_netns, sh
from tests.netns.test_import_corpus import CONFIG_ID, interfaces
from tests.netns.vrrplab import ETH_P_ALL, PACKET_OUTGOING, ROOT, Captured, keepalived, parse_vrrp_frame

pytestmark = pytest.mark.skipif(keepalived() is None, reason="keepalived is not installed (scripts/setup.sh)")


def _has_vrrp(path: Path) -> bool:
    return "vrrp_instance" in path.read_text(errors="replace") and not path.name.startswith("bad-")


CORPUS = [p for p in sorted(DATA.glob("*.conf")) + sorted(SAMPLES.glob("keepalived.conf.*")) if _has_vrrp(p)]
# In every run: sync groups, VMAC and two interfaces; tracking scripts, weights and notify; unicast.
IN_CI = {"10-sync-vmac.conf", "09-vrrp-tracking.conf", "08-vrrp-unicast.conf"}
SLOW = pytest.mark.skipif(os.environ.get(vm.SLOW_ENV) != "1", reason="the whole VRRP corpus: IPVSMGR_SLOW=1")
PEER_MAC = "02:00:5e:10:00:01"  # what unicast peers resolve to: their adverts reach the switch side


@dataclass
class Node:
    """One namespace (the load balancer) whose interfaces each end in a switch namespace."""

    work: Path
    names: list[str]
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    owned: set[str] = field(default_factory=set)  # unicast sources the lab put on the node
    sent: list[tuple[str, Captured]] = field(default_factory=list)  # (interface, advert)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return f"kc-n-{self.tag}"

    @property
    def sw(self) -> str:
        return f"kc-s-{self.tag}"

    def setup(self) -> None:
        sh("ip", "netns", "add", self.ns)
        sh("ip", "netns", "add", self.sw)
        for key in ("all", "default"):
            sh("ip", "netns", "exec", self.ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0")
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        for i, name in enumerate(self.names):
            sh(
                "ip",
                "-n",
                self.ns,
                "link",
                "add",
                name,
                "type",
                "veth",
                "peer",
                "name",
                f"s{i}",
                "netns",
                self.sw,
            )
            sh("ip", "-n", self.ns, "addr", "add", f"198.18.{240 + i}.1/24", "dev", name)
            sh("ip", "-n", self.ns, "addr", "add", f"2001:db8:f{i}::1/64", "dev", name, "nodad")
            sh("ip", "-n", self.ns, "link", "set", name, "up")
            sh("ip", "-n", self.sw, "link", "set", f"s{i}", "up")

    def peer(self, address: str, dev: str) -> None:
        """A unicast peer reachable on dev: a host route and a permanent neighbour entry."""
        sh("ip", "-n", self.ns, "route", "replace", address, "dev", dev)
        sh(
            "ip",
            "-n",
            self.ns,
            "neigh",
            "replace",
            address,
            "lladdr",
            PEER_MAC,
            "dev",
            dev,
            "nud",
            "permanent",
        )

    def own(self, address: str, dev: str) -> None:
        self.owned.add(address)
        plen = "128" if ":" in address else "32"
        sh("ip", "-n", self.ns, "addr", "replace", f"{address}/{plen}", "dev", dev, "nodad")

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        for ns in (self.ns, self.sw):
            sh("ip", "netns", "del", ns, check=False)

    def sniff(self) -> None:
        ready = threading.Event()
        ports = {f"s{i}": name for i, name in enumerate(self.names)}

        def body() -> None:
            def make() -> socket.socket:
                return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))

            with in_netns(self.sw, make) as s:
                s.settimeout(0.1)
                ready.set()
                while not self._stop.is_set():
                    try:
                        frame, addr = s.recvfrom(2048)
                    except TimeoutError:
                        continue
                    if addr[2] == PACKET_OUTGOING or addr[0] not in ports:
                        continue
                    c = parse_vrrp_frame(frame)
                    if c is not None:
                        self.sent.append((ports[addr[0]], c))

        t = threading.Thread(target=body, daemon=True)
        self._threads.append(t)
        t.start()
        assert ready.wait(5)

    def spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.ns}", *argv],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip

    def addresses(self) -> list[str]:
        """Every address on the node but those the lab gave it and link-local ones, as
        `ip -o addr` prints them (device, address/prefix, scope, flags, label)."""
        out = sh("ip", "-n", self.ns, "-o", "addr", "show")
        keep = []
        for line in out.splitlines():
            words = line.split()[1:]
            words = [
                w.rstrip("\\") for w in words if w not in ("\\", "valid_lft", "preferred_lft", "forever")
            ]
            addr = words[2]
            if words[1] == "inet6" and addr.startswith("fe80:"):
                continue
            if (addr.startswith("198.18.24") and addr.endswith(".1/24")) or re.match(
                r"2001:db8:f\d::1/64", addr
            ):
                continue
            if addr.split("/")[0] in self.owned:
                continue
            if words[0] == "lo" and addr in ("127.0.0.1/8", "::1/128"):
                continue
            # not compared: which of two instances' VIPs in one subnet is primary, the one whose
            # instance became master first (timer order, in keepalived too)
            keep.append(" ".join(w for w in words if w != "secondary"))
        return sorted(keep)

    def links(self) -> list[str]:
        """Links other than the lab's: VMACs (name, kind, MAC, parent)."""
        out = sh("ip", "-n", self.ns, "-o", "-d", "link", "show")
        keep = []
        for line in out.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name in self.names or name == "lo":
                continue
            mac = re.search(r"link/ether (\S+)", line)
            kind = re.search(r"\b(macvlan|ipvlan)\b", line)
            keep.append(f"{name} {kind[1] if kind else '?'} {mac[1] if mac else '?'}")
        return sorted(keep)


Key = tuple[str, str, int]  # interface, destination, VRID


@dataclass(frozen=True)
class Run:
    settled: dict[Key, Captured]  # the last advert of each (interface, destination, VRID)
    stopped: dict[Key, Captured]  # the priority-0 adverts sent on stop
    addresses: list[str]
    links: list[str]


def key(iface: str, c: Captured) -> Key:
    return iface, c.dst, c.vrrp[1]


def observe(
    node: Node, proc: subprocess.Popen[bytes], what: str, expect: set[Key], limit: float = 25.0
) -> Run:
    """Wait until the adverts settle: at least 4 s in, every expected (interface, destination,
    VRID) heard (or the limit passed: the comparison then shows what is missing), the set sending
    and each one's advert unchanged for 3 s. Then stop the daemon and collect its goodbyes."""
    start = len(node.sent)
    began = time.monotonic()
    last: dict[Key, Captured] = {}
    changed = began
    while True:
        time.sleep(0.1)
        assert proc.poll() is None, f"{what} exited ({proc.returncode})"
        for iface, c in node.sent[start:]:
            k = key(iface, c)
            prev = last.get(k)
            if prev is None or (prev.vrrp, prev.src, prev.ttl, prev.tos) != (c.vrrp, c.src, c.ttl, c.tos):
                changed = time.monotonic()
            last[k] = c
        start = len(node.sent)
        now = time.monotonic()
        if now - began >= limit:
            break
        if now - began >= 4 and now - changed >= 3 and expect <= last.keys() and last:
            break
    addresses, links = node.addresses(), node.links()
    mark = len(node.sent)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=15)
    time.sleep(0.5)
    stopped = {key(i, c): c for i, c in node.sent[mark:] if c.vrrp[2] == 0}
    return Run(last, stopped, addresses, links)


def _show(run: dict[Key, Captured]) -> str:
    return "\n".join(
        f"{k}: {c.src} ttl {c.ttl} tos {c.tos} {c.vrrp.hex(' ')}" for k, c in sorted(run.items())
    )


@pytest.fixture
def work() -> Iterator[Path]:
    d = Path(f"/tmp/ipvsmgr-kc-{uuid.uuid4().hex[:8]}")
    d.mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def recorder() -> Iterator[Path]:
    """A notify command that appends its arguments to `notified` beside it. In /run: keepalived's
    script security refuses a script under a directory others may write to (/tmp)."""
    d = Path(f"/run/ipvsmgr-kc-{uuid.uuid4().hex[:8]}")
    d.mkdir(mode=0o755)
    script = d / "record"
    script.write_text('#!/bin/sh\necho "$*" >> "$(dirname "$0")/notified"\n')
    script.chmod(0o755)
    try:
        yield script
    finally:
        shutil.rmtree(d, ignore_errors=True)


# keepalived runs notify commands only with script security on (as root here)
SECURITY = "global_defs {\n    enable_script_security\n    script_user root\n}\n"
_NOTIFY = re.compile(r"(?m)^(\s*)(notify(?:_master|_backup|_fault|_stop)?)[ \t]+(\S.*?)\s*$")


def record_notify(conf: Path, recorder: Path) -> int:
    """Every VRRP notify command of the file (and its includes) made the recorder, its own words
    then its kind and the original command: both daemons' commands land in one log."""
    count = 0
    for f in [conf, *sorted(conf.parent.glob("conf.d/*.conf"))]:

        def one(m: re.Match[str]) -> str:
            return f'{m[1]}{m[2]} "{recorder} {m[2]} {m[3].strip().strip(chr(34))}"'

        text, n = _NOTIFY.subn(one, f.read_text())
        count += n
        f.write_text((SECURITY if f == conf else "") + text)
    return count


def notified(recorder: Path, keep: str) -> collections.Counter[str]:
    """The commands the daemon ran (stop's included), moved aside as `keep`."""
    log = recorder.parent / "notified"
    time.sleep(1.0)  # commands run as the daemon stops: let them finish
    if not log.exists():
        return collections.Counter()
    lines = log.read_text().splitlines()
    log.rename(recorder.parent / keep)
    return collections.Counter(lines)


@pytest.mark.parametrize(
    "path", [p if p.name in IN_CI else pytest.param(p, marks=SLOW) for p in CORPUS], ids=lambda p: p.name
)
def test_keepalived_and_its_import_send_the_same_adverts(path: Path, work: Path, recorder: Path) -> None:
    # This kernel has no IPVS and keepalived's VRRP process dies setting up connection sync
    # without it; connection sync has its own VM tests (test_daemon_control).
    conf = copy_rewritten(path, work, drop=r"lvs_sync_daemon\b")
    commands = record_notify(conf, recorder)
    outcome = command.import_keepalived(str(conf), CONFIG_ID)
    if outcome.status == 2:  # test_import_corpus proves keepalived -t refuses these at the same lines
        errors = [str(f) for f in outcome.findings if f.kind == "error"]
        pytest.skip(f"keepalived -t refuses it, and so does the import: {errors[0]}")
    assert outcome.text and not outcome.problems, [str(f) for f in outcome.findings] + outcome.problems
    doc = yaml.safe_load(outcome.text)
    for part in ("virtual_servers", "ipvs", "health", "bgp"):
        doc.pop(part, None)  # the VRRP half: this kernel has no IPVS (the VM tests compare the tables)
    imported = work / "ipvsmgr.yaml"
    imported.write_text(yaml.safe_dump(doc))
    names = sorted(interfaces(conf))
    node = Node(work, names)
    try:
        node.setup()
        for inst in doc["vrrp"]["instances"]:
            if "source_address" in inst:  # keepalived is in FAULT while its unicast source is not there
                node.own(str(inst["source_address"]), inst["interface"])
            for peer in inst.get("unicast_peers", []):
                node.peer(str(peer).split("/")[0], inst["interface"])
        node.sniff()
        exe = keepalived()
        assert exe is not None
        pids = [str(work / f"k.{n}.pid") for n in ("main", "vrrp", "check")]
        ka = node.spawn([exe, "-n", "-l", "-D", "-P", "-i", CONFIG_ID, "-f", str(conf),
                         "-p", pids[0], "-r", pids[1], "-c", pids[2]], work / "keepalived.log")  # fmt: skip
        theirs = observe(node, ka, "keepalived", set())
        ka_ran = notified(recorder, "keepalived")
        assert theirs.settled, "keepalived sent no advert:\n" + (work / "keepalived.log").read_text()
        im = node.spawn([sys.executable, "-m", "ipvsmgr", "run", "-c", str(imported),
                         "--state-dir", str(work / "state"), "--socket", str(work / "ipvsmgr.sock")],
                        work / "ipvsmgr.log")  # fmt: skip
        ours = observe(node, im, "ipvsmgr", set(theirs.settled))
        im_ran = notified(recorder, "ipvsmgr")
    finally:
        node.close()
    logs = "\n".join(
        (work / f"{n}.log").read_text(errors="replace")[-3000:] for n in ("keepalived", "ipvsmgr")
    )
    said = "\n".join(
        [
            "",
            "keepalived:",
            _show(theirs.settled),
            "ipvsmgr:",
            _show(ours.settled),
            imported.read_text(),
            logs,
        ]
    )
    assert ours.settled.keys() == theirs.settled.keys(), said
    for k, c in theirs.settled.items():
        o = ours.settled[k]
        assert (o.src, o.ttl, o.tos, o.vrrp) == (c.src, c.ttl, c.tos, c.vrrp), f"{k}" + said
    assert ours.addresses == theirs.addresses, "\n".join(
        ["ipvsmgr:", *ours.addresses, "keepalived:", *theirs.addresses]
    )
    assert ours.links == theirs.links, "\n".join(["ipvsmgr:", *ours.links, "keepalived:", *theirs.links])
    bye = f"\nkeepalived:\n{_show(theirs.stopped)}\nipvsmgr:\n{_show(ours.stopped)}"
    assert {k: c.vrrp for k, c in ours.stopped.items()} == {k: c.vrrp for k, c in theirs.stopped.items()}, bye
    # the notify commands: the same ones, each as often (the order across instances is timer order)
    assert bool(ka_ran) == bool(commands), (commands, ka_ran)
    ran = "\n".join(["ipvsmgr:", *sorted(im_ran.elements()), "keepalived:", *sorted(ka_ran.elements())])
    assert im_ran == ka_ran, ran
