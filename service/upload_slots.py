"""Fair upload slots: how many request bodies are received at once, and by whom.

A body takes a slot once it has sent `SLOT_AFTER_BYTES`: smaller bodies (and the first
bytes of any) cost little memory and need none, so connections that trickle a multipart
header and then a byte at a time never hold one (the body rate floor closes them). Of
`total` slots, slow bodies (those that did not reach `SLOT_AFTER_BYTES` within the grace
period) hold at most `total - reserve`, so uploads that are slow but above the rate floor
cannot take every slot: the `reserve` is left to fast ones. One client address holds at
most `per_client`. A body that finds no slot it may take waits for one (the server stops
reading it: TCP pushes back on the client), first come first served.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass, field

SLOT_AFTER_BYTES = 64 * 1024


def _future() -> asyncio.Future:
    return asyncio.get_running_loop().create_future()


@dataclass(eq=False)  # compared by identity: two waiters of one client are distinct
class _Waiter:
    client: str
    fast: bool
    granted: asyncio.Future = field(default_factory=_future)


class UploadSlots:
    """Slot accounting of one server (event loop thread only)."""

    def __init__(self, total: int, reserve: int, per_client: int):
        self.total = total
        self.reserve = min(reserve, total - 1)  # at least one slot anyone may take
        self.per_client = per_client
        self.held = 0
        self.held_slow = 0  # of them, by slow bodies
        self.by_client: Counter[str] = Counter()
        self._waiting: deque[_Waiter] = deque()

    def may_take(self, client: str, fast: bool) -> bool:
        if self.by_client[client] >= self.per_client or self.held >= self.total:
            return False
        return fast or self.held_slow < self.total - self.reserve

    def _take(self, client: str, fast: bool) -> None:
        self.held += 1
        self.held_slow += not fast
        self.by_client[client] += 1

    async def acquire(self, client: str, fast: bool, timeout_s: float) -> bool:
        """Take a slot for `client`, waiting up to `timeout_s` behind earlier waiters that
        could use the same one; False when none came in time."""
        waiter = _Waiter(client, fast)
        self._waiting.append(waiter)
        self._grant()  # at once, unless an earlier waiter could use the same slot
        granted = waiter.granted
        if granted.done():
            return True
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(granted)  # the timeout cancels the wait, not the grant
        except TimeoutError:
            pass
        except BaseException:  # the request was cancelled (the client went away)
            if granted.done() and not granted.cancelled():
                self.release(client, fast)
            raise
        finally:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
        if granted.done() and not granted.cancelled():
            return True  # (granted in the same tick as the timeout: still ours)
        granted.cancel()
        return False

    def release(self, client: str, fast: bool) -> None:
        """Give back a slot `acquire(client, fast, ...)` took."""
        self.held -= 1
        self.held_slow -= not fast
        self.by_client[client] -= 1
        if self.by_client[client] <= 0:
            del self.by_client[client]
        self._grant()

    def _grant(self) -> None:
        """Hand freed slots to waiters in arrival order, skipping those that may not take
        one now (a client at its limit, a slow body with only the reserve free)."""
        for waiter in list(self._waiting):
            if waiter.granted.done():
                self._waiting.remove(waiter)
            elif self.may_take(waiter.client, waiter.fast):
                self._take(waiter.client, waiter.fast)
                waiter.granted.set_result(True)
                self._waiting.remove(waiter)
