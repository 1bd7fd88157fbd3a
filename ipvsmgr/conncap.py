"""A cap on a listener's open connections, and one log line (not one per
connection) when it is hit.

Each connection holds a file descriptor. Without a cap, an unprivileged user
holding a thousand connections to the metrics port used up the process's
descriptors: checks, notify commands and the control socket failed with
EMFILE, and asyncio logged a traceback per refused accept. A listener over
its cap accepts and closes at once (the client sees the connection close),
counts it, and says so at most once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

log = logging.getLogger("ipvsmgr.listen")

QUIET = 60.0  # seconds between two log lines about the same listener or loop error


class ConnectionCap:
    def __init__(self, name: str, limit: int, refused: Counter[str]) -> None:
        self.name, self.limit = name, limit
        self.open = 0
        self.most = 0
        self._refused = refused
        self._said = -QUIET

    def admit(self, writer: asyncio.StreamWriter) -> bool:
        """Take a slot for this connection, or close it (counted) when the cap is reached."""
        if self.open >= self.limit:
            self._refused["too_many_connections"] += 1
            now = time.monotonic()
            if now - self._said >= QUIET:
                self._said = now
                log.warning(
                    "%s: %d connections open, its cap; refusing more (counted as too_many_connections)",
                    self.name, self.limit,
                )  # fmt: skip
            writer.transport.abort()
            return False
        self.open += 1
        self.most = max(self.most, self.open)
        return True

    def release(self) -> None:
        self.open -= 1


def quiet_loop_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log asyncio's repeated errors (an accept out of descriptors, above all)
    as one line per kind per minute, without the traceback of each."""
    said: dict[str, float] = {}
    counts: Counter[str] = Counter()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        message = str(context.get("message", ""))
        exc = context.get("exception")
        if isinstance(exc, OSError) and "out of system resource" in message:
            key = f"{message}: {exc.strerror}"
            counts[key] += 1
            now = time.monotonic()
            if now - said.get(key, -QUIET) >= QUIET:
                said[key] = now
                log.error("%s (%d times so far)", key, counts[key])
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
