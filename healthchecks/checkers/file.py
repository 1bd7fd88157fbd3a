"""File check: a number in a file says whether the real is up (keepalived's FILE_CHECK with
weight 0). 0 is up; any other number is down, so an operator or a deploy tool takes a real
out with `echo 1 > /run/lb/web1` and back with `echo 0` (or by removing the file). As in
keepalived, a missing or empty file reads as 0. An unreadable, oversized or non-numeric file
is down with the reason (keepalived would read 0 from text). The target is not contacted.

The read runs in a thread under the check's timeout: a file on a hung network mount
costs a thread, never the event loop. It opens non-blocking, so a FIFO at the path
does not wait for a writer.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from healthchecks.result import Result, Target

MAX_BYTES = 64  # a number and a newline; more is not a value file


@dataclass(frozen=True, slots=True)
class FileCheck:
    path: str
    reverse: bool = False  # up while the value is non-zero instead

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError("FileCheck.path must be absolute")

    async def check(self, target: Target, timeout: float) -> Result:
        try:
            value = await asyncio.wait_for(asyncio.to_thread(read_value, self.path), timeout)
        except TimeoutError:
            return Result.down(f"reading {self.path} took over {timeout:g}s")
        except ValueError as e:
            return Result.down(f"{self.path}: {e}")
        except OSError as e:
            return Result.down(f"{self.path}: {e.strerror or e}")
        if (value == 0) != self.reverse:
            return Result.up()
        return Result.down(f"{self.path} holds {value}")


def read_value(path: str) -> int:
    """The integer the file holds (ValueError if it holds anything else)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return 0
    try:
        data = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise ValueError(f"over {MAX_BYTES} bytes: not a value file")
    text = data.decode("ascii", "replace").strip()
    if not text:
        return 0
    for base in (0, 10):  # 0x1f as keepalived's strtol reads it; 010 as ten (Python has no 0-octal)
        try:
            return int(text, base)
        except ValueError:
            continue
    raise ValueError(f"not a number ({text[:20]!r})")
