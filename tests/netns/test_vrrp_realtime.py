"""vrrp/realtime.py against the real scheduler (root): SCHED_RR for every thread,
forked children back to SCHED_OTHER, and the RLIMIT_RTTIME budget demoting a
process that runs without sleeping. Each case runs in a process of its own so
the test run itself never becomes real-time; `chrt` is the independent reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="real-time scheduling needs root")


def run(body: str) -> dict[str, object]:
    script = (
        textwrap.dedent("""\
        import json, os, subprocess, threading, time
        from vrrp import realtime
        from vrrp.realtime import Realtime

        def policy(tid=0):
            out = subprocess.run(["chrt", "-p", str(tid or os.getpid())], capture_output=True, text=True)
            return out.stdout.split("\\n")[0].rsplit(" ", 1)[-1].split("|")[0]  # SCHED_RR|SCHED_RESET_ON_FORK

        rt = Realtime()
        out = {}
    """)
        + textwrap.dedent(body)
        + "\nprint(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_every_thread_runs_sched_rr_and_forked_children_do_not() -> None:
    out = run("""
        stop = threading.Event()
        t = threading.Thread(target=stop.wait)
        t.start()
        rt.set(10)
        out["main"] = policy()
        out["thread"] = policy(t.native_id)
        out["child"] = subprocess.run(["sh", "-c", "chrt -p $$"], capture_output=True, text=True).stdout
        out["status"] = rt.status()
        rt.set(0)
        out["off"] = policy()
        out["thread_off"] = policy(t.native_id)
        stop.set()
    """)
    assert out["main"] == "SCHED_RR" and out["thread"] == "SCHED_RR", out
    assert "SCHED_OTHER" in str(out["child"]), out  # a notify script is no real-time work
    assert out["status"] == {"policy": "rr", "priority": 10, "wanted": 10, "demotions": 0, "error": ""}
    assert out["off"] == "SCHED_OTHER" and out["thread_off"] == "SCHED_OTHER", out


def test_running_past_the_budget_demotes_then_promotes_again() -> None:
    out = run("""
        rt.set(10)
        end = time.monotonic() + realtime.BUDGET * 3
        while time.monotonic() < end:  # never sleeps: SIGXCPU once BUDGET is spent
            pass
        out["after_spin"] = policy()
        out["status"] = rt.status()
        rt.tick(time.monotonic() + realtime.COOLDOWN)
        out["after_cooldown"] = policy()
        out["promoted"] = rt.status()
    """)
    assert out["after_spin"] == "SCHED_OTHER", out
    assert out["status"]["demotions"] == 1 and out["status"]["policy"] == "other", out  # type: ignore[index]
    assert out["after_cooldown"] == "SCHED_RR", out
    assert out["promoted"]["policy"] == "rr", out  # type: ignore[index]


def test_without_cap_sys_nice_it_says_why() -> None:
    out = run("""
        import ctypes
        # drop CAP_SYS_NICE from the bounding and effective sets, as the unit without it would
        libc = ctypes.CDLL(None, use_errno=True)
        PR_CAPBSET_DROP, CAP_SYS_NICE = 24, 23
        libc.prctl(PR_CAPBSET_DROP, CAP_SYS_NICE, 0, 0, 0)
        subprocess.run(["true"])
        os.setresuid(65534, 65534, 65534)  # nobody: no capability at all
        rt.set(10)
        out["status"] = rt.status()
        out["main"] = policy()
    """)
    assert out["main"] == "SCHED_OTHER", out
    status = out["status"]
    assert status["policy"] == "other" and status["wanted"] == 10, status  # type: ignore[index]
    assert "not permitted" in str(status["error"]), status  # type: ignore[index]
