"""The README's main command from a clean environment, and CI's check of its summary."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ipvsmgr.cli import _lab_vm_tools
from scripts.check_lab import problems

GOOD = """
summary
  balanced 1:2:3      {'rs1': 10, 'rs2': 20, 'rs3': 30}
  rs2 down            {'rs1': 7, 'rs3': 23}
  failover            VIP on lb2 after 0.28s
  open connection     kept, longest silence 0.23s
  after failover      {'rs1': 5, 'rs2': 10, 'rs3': 15}
"""


def test_vng_found_beside_the_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # scripts/lab.sh runs .venv/bin/python; virtme-ng lives in .venv/bin, which env -i leaves off PATH.
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    vng = venv_bin / "vng"
    vng.write_text("#!/bin/sh\n")
    vng.chmod(vng.stat().st_mode | stat.S_IXUSR)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    found, _, missing = _lab_vm_tools(str(venv_bin / "python"))
    assert found == str(vng)
    assert not any("virtme-ng" in m for m in missing)
    # qemu is looked up on PATH, which holds nothing here: it is named as missing.
    assert any("qemu" in m for m in missing)


def test_no_vng_anywhere_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    found, _, missing = _lab_vm_tools(os.path.join(str(tmp_path), "python"))
    assert found is None
    assert any("virtme-ng" in m for m in missing)


def test_lab_summary_as_printed_passes() -> None:
    assert problems(GOOD) == []


@pytest.mark.parametrize(
    ("old", "new", "what"),
    [
        ("'rs1': 10, 'rs2': 20", "'rs1': 11, 'rs2': 19", "wrr 1:2:3"),
        ("{'rs1': 7, 'rs3': 23}", "{'rs1': 7, 'rs2': 1, 'rs3': 22}", "rs2 still served"),
        ("after 0.28s", "after 3.10s", "failover took"),
        ("kept, longest", "lost: reset, longest", "not kept"),
        ("  failover            VIP on lb2 after 0.28s\n", "", "no failover line"),
        ("  after failover      {'rs1': 5, 'rs2': 10, 'rs3': 15}", "", "'after failover'"),
    ],
)
def test_lab_summary_that_does_not_hold_fails(old: str, new: str, what: str) -> None:
    assert old in GOOD
    found = problems(GOOD.replace(old, new))
    assert any(what in p for p in found), found
