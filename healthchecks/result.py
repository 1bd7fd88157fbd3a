"""What a single check reports, and what a checker is."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Target:
    """Where a check connects: the real server, or the check's own override."""

    address: str  # IPv4 or IPv6 literal
    port: int = 0
    source: str | None = None  # local address to bind, if any


@dataclass(frozen=True, slots=True)
class Result:
    """One check's outcome. `reason` is a short operator-facing phrase
    (`connect refused`, `status 503`, `timeout after 1.0s`) and is set on
    failures; `weight` is set by checkers that report a dynamic weight."""

    ok: bool
    reason: str = ""
    weight: int | None = None
    duration: float = 0.0
    ran: bool = True  # False: the check could not run (no file descriptor): neither up nor down

    @staticmethod
    def up(weight: int | None = None) -> Result:
        return Result(True, "", weight)

    @staticmethod
    def down(reason: str) -> Result:
        return Result(False, reason)

    @staticmethod
    def not_run(reason: str) -> Result:
        return Result(False, reason, ran=False)


class Checker(Protocol):
    """A check type's options with the check itself. It never raises for a
    failing server: every failure is a Result.down(reason)."""

    async def check(self, target: Target, timeout: float) -> Result: ...


# The process (EMFILE) or the system (ENFILE) is out of file descriptors: the
# check said nothing about the real.
NO_FD_ERRNOS = frozenset({24, 23})
NO_FD = "not run: too many open files"


def os_error_result(e: OSError) -> Result:
    """A failure for an OSError, or "not run" when it says the check had no socket."""
    if e.errno in NO_FD_ERRNOS:
        return Result.not_run(NO_FD)
    return Result.down(describe_os_error(e))


def describe_os_error(e: OSError) -> str:
    """`connect refused`, `host unreachable`, ...: the phrases operators grep for."""
    import errno

    names = {
        errno.ECONNREFUSED: "connect refused",
        errno.ECONNRESET: "connection reset",
        errno.EHOSTUNREACH: "host unreachable",
        errno.ENETUNREACH: "network unreachable",
        errno.ETIMEDOUT: "connect timed out",
        errno.EADDRNOTAVAIL: "source address not available",
        errno.EPIPE: "connection closed",
    }
    if e.errno in names:
        return names[e.errno]
    text = e.strerror or str(e)
    return text.lower() if text else type(e).__name__  # e.g. a bare ConnectionResetError()


async def bounded(check: Awaitable[Result], timeout: float) -> Result:
    """Run one check within `timeout` seconds; a check that overruns is a failure."""
    import asyncio
    import time

    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            result = await check
    except TimeoutError:
        return Result(False, f"timeout after {timeout:g}s", None, time.monotonic() - start)
    except OSError as e:
        failed = os_error_result(e)
        return Result(False, failed.reason, None, time.monotonic() - start, failed.ran)
    return Result(result.ok, result.reason, result.weight, time.monotonic() - start, result.ran)
