"""Following a migration: the service swaps its model and catalogue for the live generation's.

`python -m indexer migrate` builds a new generation of the catalogue with checkpoint B and
makes it live atomically (`CatalogBackend.switch_to`). A running service notices
(`GenerationFollower` reads `live_generation()` every `catalog_poll_s`), loads the
checkpoint the generation records and opens it in a worker thread while it keeps answering
from the old pair, then installs the new `Serving` in one assignment (`ServingSlot`).

Each request is pinned at its start to the `Serving` then current (a context variable set by
the route dependency), so no request embeds with A and searches B's catalogue; an old
`Serving` is closed once the last request pinned to it has ended. A write that reaches the
old generation after it was retired (CatalogRetiredError) waits for the swap and runs again
with the new pair (`retry_after_swap`): no 409 and no 5xx in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from catalog import CatalogBackend
from catalog.errors import CatalogRetiredError
from model.calibration import Calibration
from model.embedding import Embedder

if TYPE_CHECKING:
    from service.checkpoint_check import CheckpointCheck
    from service.upload_embedder import UploadEmbedder

log = logging.getLogger(__name__)
T = TypeVar("T")
SWAP_WAIT_S = 300.0  # longest a write on a retired generation waits for the swap
MAX_BACKOFF_S = 60.0  # longest wait between two attempts to follow after failures


@dataclass(eq=False)
class Serving:
    """What answers a request: a model and the catalogue generation it built, with what
    derives from them. `owns_model`: closing it closes the inference pool too (False when
    the next generation was built by the same checkpoint and shares it)."""

    embedder: Embedder
    catalog: CatalogBackend
    inference: UploadEmbedder
    checkpoints: CheckpointCheck
    calibration: Calibration | None
    calibration_status: str
    generation: str
    owns_model: bool = True
    users: int = field(default=0, repr=False)
    retired: bool = field(default=False, repr=False)

    def close(self) -> None:
        if self.owns_model:
            self.inference.close()
        self.catalog.close()


class ServingSlot:
    """The `Serving` installed now, and the one each request is pinned to."""

    def __init__(self) -> None:
        self._now: Serving | None = None
        self._pinned: ContextVar[Serving | None] = ContextVar("serving", default=None)
        self._lock = threading.Lock()

    @property
    def now(self) -> Serving | None:
        return self._now

    @property
    def current(self) -> Serving | None:
        """This request's `Serving` (outside a request: the one installed now)."""
        return self._pinned.get() or self._now

    @contextlib.contextmanager
    def pinned(self) -> Iterator[Serving | None]:
        """Pin the running request (its context) to the `Serving` installed now."""
        token = self._pinned.set(self._acquire())
        try:
            yield self._pinned.get()
        finally:
            serving = self._pinned.get()  # `repin` may have moved it
            self._pinned.reset(token)
            if serving is not None:
                self._release(serving)

    def repin(self) -> None:
        """Move the running request to the `Serving` installed now (after a swap)."""
        old = self._pinned.get()
        self._pinned.set(self._acquire())
        if old is not None:
            self._release(old)

    def _acquire(self) -> Serving | None:
        with self._lock:
            serving = self._now
            if serving is not None:
                serving.users += 1
            return serving

    def _release(self, serving: Serving) -> None:
        with self._lock:
            serving.users -= 1
            done = serving.retired and serving.users <= 0
        if done:
            _close_later(serving)

    def install(self, serving: Serving) -> None:
        """Serve `serving` from now on; the old one closes when its last request ends."""
        with self._lock:
            old, self._now = self._now, serving
            if old is not None:
                old.retired = True
            done = old is not None and old.users <= 0
        if done and old is not None:
            _close_later(old)

    def close(self) -> None:
        with self._lock:
            now, self._now = self._now, None
        if now is not None:
            now.close()


def _close_later(serving: Serving) -> None:
    """Close a replaced `Serving` in a thread (pools shut down, files are saved)."""

    def close() -> None:
        try:
            serving.close()
        except Exception:
            log.exception("closing the replaced model and catalogue failed")

    threading.Thread(target=close, name="close-serving", daemon=True).start()


class GenerationFollower:
    """Polls the live generation; on a switch, builds the new `Serving` off the event loop
    with `build(generation name, current)` and installs it in `slot`."""

    def __init__(
        self,
        slot: ServingSlot,
        build: Callable[[str, Serving], Serving],
        poll_s: float,
    ):
        self.slot, self.build, self.poll_s = slot, build, poll_s
        self._wake = asyncio.Event()
        self._swapped = asyncio.Condition()
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        """Follow until cancelled. A failed attempt (the new checkpoint file unreadable, the
        catalogue server away) is logged and tried again, less often each time (at most
        every `MAX_BACKOFF_S`), while the old pair keeps serving."""
        failures = 0
        while True:
            wait = min(MAX_BACKOFF_S, self.poll_s * 2**failures) if failures else self.poll_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            try:
                await self.check()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as err:
                failures += 1
                log.error("following the catalogue's live generation failed (%s); retrying", err)

    async def check(self) -> bool:
        """Swap if another generation is live now. Returns whether it swapped."""
        async with self._lock:
            now = self.slot.now
            if now is None:
                return False
            live = await asyncio.to_thread(now.catalog.live_generation)
            if live == now.generation:
                return False
            log.info(
                "generation %r is live: loading it (serving %r meanwhile)", live, now.generation
            )
            new = await asyncio.to_thread(self.build, live, now)
            self.slot.install(new)
            log.info(
                "now serving generation %r with checkpoint %s", live, new.embedder.checkpoint_id
            )
        async with self._swapped:
            self._swapped.notify_all()
        return True

    async def wait_for_swap(self, old: Serving, timeout_s: float | None = None) -> None:
        """Return once `old` is no longer the installed `Serving` (checking at once rather
        than at the next poll); at most `timeout_s` (default SWAP_WAIT_S). Raises
        TimeoutError."""
        async with asyncio.timeout(SWAP_WAIT_S if timeout_s is None else timeout_s), self._swapped:
            self._wake.set()
            await self._swapped.wait_for(lambda: self.slot.now is not old)


async def retry_after_swap(
    slot: ServingSlot, follower: GenerationFollower | None, attempt: Callable[[], Awaitable[T]]
) -> T:
    """Run `attempt`; when it wrote to a generation that a migration retired meanwhile, wait
    for this service to serve the new one and run it once more with the new pair."""
    try:
        return await attempt()
    except CatalogRetiredError as retired:
        pinned = slot.current
        if follower is None or pinned is None:
            raise
        try:
            await follower.wait_for_swap(pinned)
        except TimeoutError:
            raise retired from None  # not followed in time: 503 catalog_switching
        slot.repin()
        return await attempt()
