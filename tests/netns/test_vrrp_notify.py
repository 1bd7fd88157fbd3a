"""Notify commands that misbehave (issue 19, part 2), against the VRRP
service in-process on a LAN of namespaces: a command that floods its stderr
costs a bounded read and one short log line, and the adverts keep their
pace; a slow command on a flapping instance runs one at a time, in the order
of the transitions, never piling up processes."""

from __future__ import annotations

import itertools
import logging
import resource
import sys
import time

import pytest

from tests.netns.test_vrrp_service import Running, advert, forge, instance, wait
from tests.netns.vrrplab import ADDR4, VrrpLab
from vrrp.machine import State
from vrrp.service import NOTIFY_LINE


def test_a_notify_flooding_its_stderr_is_cut_short(
    vrrp_lab: VrrpLab, caplog: pytest.LogCaptureFixture
) -> None:
    lab = vrrp_lab
    script = lab.work / "loud.py"
    # 100 MB on stderr, then a failure exit (if it gets that far)
    script.write_text(
        "import sys\nfor _ in range(100):\n    sys.stderr.write('x' * 1_000_000)\nsys.exit(3)\n"
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    lab.sniff()
    caplog.set_level(logging.WARNING, logger="vrrp")
    start = time.monotonic()
    r = Running(lab.ns("a"), [instance(priority=120, notify=(sys.executable, str(script)))])
    try:
        wait(lambda: r.state() is State.MASTER, 5, "master")
        wait(lambda: any("VRRP notify" in x.getMessage() for x in caplog.records), 10, "the notify's end")
        time.sleep(1.0)
        end = time.monotonic()
    finally:
        r.stop()
    records = [x.getMessage() for x in caplog.records if "VRRP notify" in x.getMessage()]
    assert records and all(len(m) < NOTIFY_LINE + 200 for m in records), [len(m) for m in records]
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown < 50, f"peak RSS grew {grown:.0f} MiB"  # before: the whole 100 MB, twice
    sent = sorted(c.at for c in lab.captured if c.src == ADDR4["a"] and start <= c.at <= end)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert gaps and max(gaps) <= 0.2, max(gaps)  # 2 x the 0.1 s interval


def test_a_slow_notify_on_a_flapping_instance_stays_ordered_and_bounded(vrrp_lab: VrrpLab) -> None:
    lab = vrrp_lab
    out, running = lab.work / "states", lab.work / "running"
    running.mkdir()
    script = lab.work / "slow.py"
    script.write_text(
        "import os, sys, time\n"
        f"mark = os.path.join({str(running)!r}, str(os.getpid()))\n"
        "open(mark, 'w').close()\n"
        f"open({str(out)!r}, 'a').write(sys.argv[2] + '\\n')\n"
        "time.sleep(0.5)\n"
        "os.unlink(mark)\n"
    )
    r = Running(lab.ns("a"), [instance(priority=120, notify=(sys.executable, str(script)))])
    most = 0
    try:
        wait(lambda: r.state() is State.MASTER, 5, "master")
        for _ in range(12):  # a peer that comes and goes: backup, then master again, and again
            forge(lab, [(255, advert(priority=200))] * 3)
            wait(lambda: r.state() is State.BACKUP, 3, "backup")
            most = max(most, len(list(running.iterdir())))
            wait(lambda: r.state() is State.MASTER, 3, "master again")
            most = max(most, len(list(running.iterdir())))
        skipped = r.call(lambda s: s.notify_skipped["vi"])
    finally:
        r.stop()
    transitions = [t[2] for t in r.transitions if t[0] == "vi"]  # the stop's included
    wait(lambda: not list(running.iterdir()), 15, "the last notify done")
    seen = out.read_text().split()
    assert most <= 1, most  # one at a time for an instance (keepalived ran one per transition)
    # in order: what the command saw is the instance's transitions, with some left out
    it = iter(transitions)
    assert all(state in it for state in seen), (seen, transitions)
    assert skipped > 0 and len(seen) + skipped >= len(transitions) - 1, (len(seen), skipped, len(transitions))


def test_keepalived_style_notify_commands_run_in_keepalived_order(vrrp_lab: VrrpLab) -> None:
    # notify_master runs as written on becoming MASTER, then notify_keepalived with
    # INSTANCE NAME STATE PRIORITY, states in capitals; notify_stop and STOP on the way out.
    lab = vrrp_lab
    log = lab.work / "calls"
    script = lab.work / "record.py"
    script.write_text(f"import sys\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n")
    cmd = (sys.executable, str(script))
    inst = instance(
        priority=120,
        notify_keepalived=(*cmd, "all"),
        notify_on=(("master", (*cmd, "to-master")), ("stop", (*cmd, "stopped"))),
    )
    r = Running(lab.ns("a"), [inst])
    try:
        wait(lambda: r.state() is State.MASTER, 5, "master")
        wait(
            lambda: log.exists() and len(log.read_text().splitlines()) >= 3, 5, "backup, then two for master"
        )
    finally:
        r.stop()
    wait(lambda: len(log.read_text().splitlines()) >= 5, 5, "the two stop commands")
    assert log.read_text().splitlines() == [
        "all INSTANCE vi BACKUP 120", "to-master", "all INSTANCE vi MASTER 120",
        "stopped", "all INSTANCE vi STOP 120",
    ]  # fmt: skip
