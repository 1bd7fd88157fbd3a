"""One expensive read shared by a burst of callers (status, metrics).

At 10,000 reals a `status` or a scrape is a kernel dump and a second of
Python on a small machine; handled one after the other, 200 of them queue
for minutes. Callers that arrive while the value is being made wait for
that one, and for `fresh` seconds after it is made it is handed out again.
Then it is dropped: a scrape of 10,000 reals is 10 MB of text, which the
daemon must not carry between Prometheus's scrapes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Fresh(Generic[T]):
    def __init__(self, fresh: float) -> None:
        self.fresh = fresh
        self.made = 0  # values made (the rest were shared)
        self._lock = asyncio.Lock()
        self._value: tuple[float, T] | None = None

    async def get(self, make: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:
            if self._value is not None and time.monotonic() - self._value[0] < self.fresh:
                return self._value[1]
            value = await make()
            self.made += 1
            made = (time.monotonic(), value)
            self._value = made
            asyncio.get_running_loop().call_later(self.fresh, self._expire, made)
            return value

    def _expire(self, made: tuple[float, T]) -> None:
        if self._value is made:
            self._value = None

    def invalidate(self) -> None:
        """Something changed (a drain, a reload): the next caller gets a new value."""
        self._value = None
