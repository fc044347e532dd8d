"""When to send a request again: on 503 (any call: the service did not act on it), and on a
connection failure for calls that are safe to repeat; after exponential backoff, or after
the service's Retry-After when it gives one."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Retry:
    """`attempts` tries in all (1: never retry). The n-th retry waits the answer's
    Retry-After when there is one (a longer wait than `max_retry_after_s` is not waited for:
    the error is raised), else `backoff_s * 2**(n-1)`, at most `max_backoff_s`, of which a
    random half (jitter: clients refused together do not come back together)."""

    attempts: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 60.0

    def delay_s(self, retry: int, retry_after_s: float | None = None) -> float | None:
        """Seconds to wait before retry number `retry` (1, 2, ...), or None: do not retry."""
        if retry >= self.attempts:
            return None
        if retry_after_s is not None:
            return retry_after_s if retry_after_s <= self.max_retry_after_s else None
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** (retry - 1))
        return ceiling * (0.5 + 0.5 * random.random())


@dataclass(frozen=True)
class RetryEvent:
    """Given to a client's `on_retry` before it waits: what failed and how long it waits."""

    method: str
    path: str
    retry: int  # 1 for the first retry
    delay_s: float
    status: int | None = None  # 503, or None for a connection failure
    code: str | None = None  # the answer's error code
    error: str | None = None  # the connection failure, e.g. "ConnectError"
