"""glibc's malloc_trim: free heap pages go back to the system.

glibc keeps freed memory in its arenas for reuse; after a one-off peak (a
big netlink dump in the daemon, the start of the VRRP process) that memory
would stay resident for good. A no-op where libc is not glibc.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _libc_trim() -> Callable[[], object]:
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return lambda: None
    return lambda: fn(0)


trim = _libc_trim()
