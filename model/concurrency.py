"""Threads: a pool with bounded look-ahead (memory stays flat however long the input is), and
one recording's work split over idle cores (`Split`)."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import pairwise
from typing import Any, NamedTuple, TypeVar

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


class Split(NamedTuple):
    """One recording's work in at most `parts` pieces, the later ones run at once by
    `executor` (None: one after another in the calling thread). The service's lone uploads
    on idle cores: decoding, features, the voice detector and the encoders, each giving
    what it gives in one piece; the pieces, not where they run, decide the arithmetic, so a
    service that always cuts the same pieces answers the same bits under any load."""

    parts: int
    executor: cf.Executor | None

    def run(self, fn: Callable[..., R], calls: Sequence[tuple[Any, ...]]) -> list[R]:
        """`fn(*args)` for each args of `calls`, in order: the first in this thread, the
        others at once on the executor (without one, here, in turn)."""
        if self.executor is None:
            return [fn(*args) for args in calls]
        later = [self.executor.submit(fn, *args) for args in calls[1:]]
        return [fn(*calls[0]), *(f.result() for f in later)]


def in_pieces(
    fn: Callable[..., R], calls: Sequence[tuple[Any, ...]], split: Split | None
) -> list[R]:
    """`fn(*args)` for each args of `calls`, in order: by `split.run`, else here in turn."""
    return split.run(fn, calls) if split is not None else [fn(*args) for args in calls]


def pieces(n: int, split: Split | None) -> list[tuple[int, int]]:
    """[start, stop) bounds of `n` items in `split.parts` near-equal runs (one run without a
    split, or for fewer than 2 items)."""
    k = 1 if split is None else max(1, min(split.parts, n))
    edges = [round(i * n / k) for i in range(k + 1)]
    return list(pairwise(edges))
