"""ipvsmgr/fresh.py: a burst of callers shares one value; invalidate() forces a new one."""

from __future__ import annotations

import asyncio

from ipvsmgr.fresh import Fresh


def test_a_burst_shares_one_value_and_invalidate_makes_a_new_one() -> None:
    async def main() -> None:
        made = 0

        async def make() -> int:
            nonlocal made
            made += 1
            await asyncio.sleep(0.05)  # a kernel dump
            return made

        fresh: Fresh[int] = Fresh(60.0)
        values = await asyncio.gather(*(fresh.get(make) for _ in range(50)))
        assert values == [1] * 50 and made == 1 and fresh.made == 1
        assert await fresh.get(make) == 1  # still fresh
        fresh.invalidate()  # a drain, a reload
        assert await fresh.get(make) == 2
        stale: Fresh[int] = Fresh(0.0)
        assert [await stale.get(make) for _ in range(3)] == [3, 4, 5]  # never shared when not fresh

    asyncio.run(main())


def test_the_value_is_dropped_once_stale() -> None:
    """A 10 MB scrape is not kept until the next one comes (15 s later)."""

    async def main() -> None:
        fresh: Fresh[bytes] = Fresh(0.2)

        async def make() -> bytes:
            return b"x" * 1000

        await fresh.get(make)
        assert fresh._value is not None
        await asyncio.sleep(0.3)
        assert fresh._value is None
        await fresh.get(make)
        await asyncio.sleep(0.1)
        fresh.invalidate()
        await fresh.get(make)
        await asyncio.sleep(0.15)  # past the first value's expiry, not the second's
        assert fresh._value is not None

    asyncio.run(main())
