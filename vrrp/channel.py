"""Framed messages between the daemon and its VRRP process: a 4-byte length, then a pickle.

Both ends are this program, over a socketpair nobody else holds, so pickle
carries the instance configurations as they are (frozen dataclasses).
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

_LEN = struct.Struct("!I")
MAX_FRAME = 64 << 20  # a frame this big is a bug, not a configuration


def frame(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(body)) + body


async def read(reader: asyncio.StreamReader) -> Any:
    """The next message; EOFError when the other end has gone."""
    try:
        head = await reader.readexactly(_LEN.size)
        (size,) = _LEN.unpack(head)
        if size > MAX_FRAME:
            raise EOFError(f"a {size}-byte frame on the VRRP channel")
        return pickle.loads(await reader.readexactly(size))  # our own process, our own socketpair
    except asyncio.IncompleteReadError:
        raise EOFError("the VRRP channel closed") from None
