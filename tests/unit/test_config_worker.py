"""Loading in a worker process: the same Config as in-process, problems with their
positions, and a file over the time or memory budget refused with a clear problem."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ipvsmgr.config import ConfigError, load
from ipvsmgr.config.worker import MAX_PROBLEMS, load_isolated

GOOD = """\
virtual_servers:
  - name: web
    address: 198.18.0.10
    port: 80
    scheduler: mh
    scheduler_flags: [mh-port, mh-fallback]
    reals:
      - {address: 198.18.1.1, port: 8080, weight: 3}
      - {address: 198.18.1.2, forwarding: dr}
"""


def big(n: int) -> str:
    out = ["virtual_servers:"]
    for i in range(n):
        out += [f"  - {{name: vs{i}, address: 198.18.{i >> 8}.{i & 255}, port: 80, reals: ["]
        out += [f"      {{address: 198.19.{i >> 8}.{i & 255}, port: {8000 + j}}}," for j in range(10)]
        out += ["    ]}"]
    return "\n".join(out) + "\n"


def test_same_config_as_in_process(tmp_path: Path) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(GOOD)
    assert load_isolated(str(path)) == load(str(path))


def test_problems_come_back_with_positions(tmp_path: Path) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(GOOD.replace("scheduler: mh\n", "scheduler: mhh\n"))
    with pytest.raises(ConfigError) as e:
        load_isolated(str(path))
    assert [(p.line, p.col) for p in e.value.problems][:1] == [(5, 16)]
    assert "mhh" in str(e.value.problems[0])


def test_memory_budget(tmp_path: Path) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(big(2000))
    with pytest.raises(ConfigError) as e:
        load_isolated(str(path), memory=4 << 20)  # on top of the interpreter
    message = str(e.value.problems[0])
    assert "memory" in message and "refused" in message, message


def test_time_budget(tmp_path: Path) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(big(2000))
    with pytest.raises(ConfigError) as e:
        load_isolated(str(path), timeout=0.05)
    assert "longer than 0.05s" in str(e.value.problems[0])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_isolated(str(tmp_path / "nope.yaml"))
    assert "cannot read" in str(e.value.problems[0])


def test_a_killed_loader_is_named_not_blamed_on_memory(tmp_path: Path) -> None:
    """kill -9 of the worker mid-load (an operator, the OOM killer): refused, saying so."""
    path = tmp_path / "lb.yaml"
    path.write_text(big(4000))

    def kill_the_worker() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for pid in os.listdir("/proc"):
                if pid.isdigit() and int(pid) != os.getpid():
                    try:
                        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    except OSError:
                        continue
                    if b"ipvsmgr.config.worker" in cmdline and str(path).encode() in cmdline:
                        os.kill(int(pid), signal.SIGKILL)
                        return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    with pytest.raises(ConfigError) as e:
        load_isolated(str(path))
    killer.join()
    message = str(e.value.problems[0])
    assert "the loader was killed by signal 9" in message and "memory" not in message, message


def test_an_orphaned_loader_stops_at_its_cpu_budget(tmp_path: Path) -> None:
    """The daemon enforces the time budget; if it died mid-load, RLIMIT_CPU does."""
    path = tmp_path / "lb.yaml"
    path.write_text(big(20000))
    argv = [sys.executable, "-m", "ipvsmgr.config.worker", str(path), str(2 << 30), "1"]
    t = time.monotonic()
    done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert done.returncode == -signal.SIGXCPU, (done.returncode, done.stderr[-500:])
    assert time.monotonic() - t < 30


def test_a_file_of_many_mistakes_comes_back_as_a_few_and_the_count(tmp_path: Path) -> None:
    """20,000 mistakes: the daemon gets the first MAX_PROBLEMS and the total, not megabytes of messages."""
    path = tmp_path / "lb.yaml"
    lines = ["virtual_servers:"]
    lines += [
        f"  - {{name: vs{i}, address: 198.18.{i >> 8}.{i & 255}, port: 80, bogus: 1}}" for i in range(20000)
    ]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as e:
        load_isolated(str(path))
    assert e.value.total == 20000
    assert len(e.value.problems) == MAX_PROBLEMS
    assert "unknown key 'bogus'" in str(e.value.problems[0]) and ":2:" in str(e.value.problems[0])
