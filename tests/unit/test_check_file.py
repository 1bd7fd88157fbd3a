"""The file check: a number in a file is the verdict (keepalived's FILE_CHECK, weight 0)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from healthchecks.checkers.file import FileCheck
from healthchecks.result import Result, Target

T = Target("198.18.0.1", 80)


def run(check: FileCheck, timeout: float = 1.0) -> Result:
    return asyncio.run(check.check(T, timeout))


@pytest.mark.parametrize(
    ("content", "up", "reason"),
    [
        (b"0\n", True, ""),
        (b"", True, ""),  # empty reads as 0, as in keepalived
        (b" 0x0 ", True, ""),
        (b"1\n", False, "holds 1"),
        (b"-3", False, "holds -3"),
        (b"010", False, "holds 10"),
        (b"0x1f", False, "holds 31"),
        (b"maintenance", False, "not a number ('maintenance')"),
        (b"1" * 65, False, "over 64 bytes"),
    ],
)
def test_the_number_in_the_file_is_the_verdict(tmp_path: Path, content: bytes, up: bool, reason: str) -> None:
    f = tmp_path / "web1"
    f.write_bytes(content)
    got = run(FileCheck(str(f)))
    assert got.ok is up and reason in got.reason, got
    numeric = up or "holds" in reason
    assert run(FileCheck(str(f), reverse=True)).ok is (numeric and not up)  # a bad file is down both ways


def test_a_missing_file_is_0_and_an_unreadable_one_is_down(tmp_path: Path) -> None:
    assert run(FileCheck(str(tmp_path / "absent"))).ok  # keepalived: no file, value 0
    assert not run(FileCheck(str(tmp_path / "absent"), reverse=True)).ok
    d = tmp_path / "dir"
    d.mkdir()
    got = run(FileCheck(str(d)))
    assert not got.ok and "Is a directory" in got.reason, got


def test_a_fifo_without_a_writer_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = run(FileCheck(str(fifo)), timeout=2.0)  # O_NONBLOCK: opens at once, reads nothing
    assert got.ok, got


def test_the_path_must_be_absolute() -> None:
    with pytest.raises(ValueError):
        FileCheck("run/lb/web1")
