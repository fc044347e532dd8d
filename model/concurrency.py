"""A thread pool with bounded look-ahead: memory stays flat however long the input is."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def completed_in_threads(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    lookahead: int | None = None,
    name: str = "worker",
) -> Iterator[tuple[int, cf.Future[R]]]:
    """Run `fn(item)` in `workers` threads; yield (position of the item, finished future).

    Results come in completion order. At most `lookahead` items (default 2 * workers) are
    submitted and not yet yielded, so decoded audio of a huge catalogue is never all in memory
    at once. The caller reads each future's result or exception: one bad item stops nothing.
    """
    workers = max(1, workers)
    lookahead = max(1, lookahead or 2 * workers)
    with cf.ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        todo = enumerate(items)
        running: dict[cf.Future[R], int] = {}
        while True:
            for i, item in todo:
                running[pool.submit(fn, item)] = i
                if len(running) >= lookahead:
                    break
            if not running:
                return
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                yield running.pop(fut), fut
