"""Upload slot accounting (service/upload_slots.py): per-client limits, the reserve for fast
bodies, arrival order, timeouts and cancellation never leak a slot."""

from __future__ import annotations

import asyncio

from service.upload_slots import UploadSlots


def run(coro):
    return asyncio.run(coro)


async def settle():
    """Let woken tasks run (a grant reaches its waiter through a shielded future)."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_slow_bodies_leave_the_reserve_to_fast_ones():
    async def main():
        slots = UploadSlots(total=3, reserve=1, per_client=9)
        assert await slots.acquire("a", fast=False, timeout_s=0)
        assert await slots.acquire("b", fast=False, timeout_s=0)
        assert not await slots.acquire("c", fast=False, timeout_s=0.01)  # only the reserve
        assert await slots.acquire("d", fast=True, timeout_s=0)  # takes the reserve
        assert not await slots.acquire("e", fast=True, timeout_s=0.01)  # all taken
        assert slots.held == 3

    run(main())


def test_one_client_holds_at_most_its_share():
    async def main():
        slots = UploadSlots(total=8, reserve=0, per_client=2)
        assert await slots.acquire("a", True, 0) and await slots.acquire("a", True, 0)
        assert not await slots.acquire("a", True, 0.01)
        assert await slots.acquire("b", True, 0)  # another client is not held up
        waiting = asyncio.create_task(slots.acquire("a", True, 5))
        await asyncio.sleep(0)
        assert not waiting.done()
        slots.release("a", True)  # a's own slot frees: its waiter gets it
        assert await waiting
        assert slots.by_client["a"] == 2 and slots.held == 3

    run(main())


def test_freed_slots_go_to_waiters_in_arrival_order_skipping_those_that_may_not_take_them():
    async def main():
        slots = UploadSlots(total=2, reserve=1, per_client=9)
        assert await slots.acquire("x", False, 0)
        assert await slots.acquire("y", True, 0)  # the reserve
        order = []

        async def wait(name, fast):
            if await slots.acquire(name, fast, 5):
                order.append(name)

        tasks = [asyncio.create_task(wait(n, f)) for n, f in (("s1", False), ("f1", True))]
        await asyncio.sleep(0)
        slots.release("y", True)  # the reserve frees: s1 (slow) may not take it, f1 may
        await settle()
        assert order == ["f1"]
        slots.release("x", False)  # a shared slot: s1, first in line
        await asyncio.gather(*tasks)
        assert order == ["f1", "s1"] and slots.held == 2 and slots.held_slow == 1

    run(main())


def test_timeouts_and_cancellation_leave_no_slot_behind():
    async def main():
        slots = UploadSlots(total=1, reserve=0, per_client=9)
        assert await slots.acquire("a", True, 0)
        assert not await slots.acquire("b", True, 0.01)
        cancelled = asyncio.create_task(slots.acquire("c", True, 5))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        slots.release("a", True)
        assert slots.held == 0 and not slots.by_client and not slots._waiting
        assert await slots.acquire("d", True, 0)

    run(main())
