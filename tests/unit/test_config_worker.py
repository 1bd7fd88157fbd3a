"""Loading in a worker process: the same Config as in-process, problems with their
positions, and a file over the time or memory budget refused with a clear problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipvsmgr.config import ConfigError, load
from ipvsmgr.config.worker import load_isolated

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
